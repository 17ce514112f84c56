"""The cluster test's client host: idempotent ``users/get_user`` calls found through etcd.

``python -m tests.cluster._load --etcd URL --progress FILE --stop FILE --result FILE``
keeps ``--concurrency`` calls in flight through one registry-driven channel until the
stop file appears, ``--duration`` seconds pass or ``--max-calls`` calls were made. Every
``TICK`` seconds it appends one JSON line to the progress file: the calls each server
answered in that tick and the failures so far; whenever its own watch of the service
changes it appends the endpoints it sees. At the end it writes the totals and the first
failures as JSON to the result file. Times are ``time.monotonic()`` (one clock for every
process on the machine, whatever their network namespace).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

import trio

from examples.user_service.service import GetUserRequest, UserService
from trio_micro import rpc
from trio_micro.registry import open_etcd_registry

TICK = 0.1  # seconds per progress line
CALL_TIMEOUT = 20.0  # deadline of one call, retries included
MAX_FAILURES_KEPT = 20


class Tally:
    """Counts answers per server and failures; an interceptor that learns each call's peer."""

    def __init__(self) -> None:
        self.tick: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.calls = 0
        self.failed = 0
        self.failures: list[str] = []

    async def intercept(self, call: rpc.ClientCall, proceed: Callable[[], Awaitable[None]]) -> None:
        await proceed()
        self.tick[call.peer] += 1  # the peer of the attempt that answered


async def run(args: argparse.Namespace, progress: IO[str]) -> dict[str, object]:
    tally = Tally()
    deadline = time.monotonic() + args.duration
    stop_file = trio.Path(args.stop)

    def emit(record: dict[str, object]) -> None:
        progress.write(json.dumps({"t": time.monotonic(), **record}) + "\n")
        progress.flush()

    async with (
        open_etcd_registry(args.etcd) as registry,
        rpc.open_channel(
            "users",
            registry=registry,
            interceptors=[tally],
            # A silent partition never closes a connection: PING it (the server allows one
            # every 5 s) and drop it, failing its calls with UNAVAILABLE, which retries.
            keepalive_interval=5.0,
            keepalive_timeout=2.0,
            # The load may start before the replicas have registered: its calls wait for
            # them (bounded by CALL_TIMEOUT) instead of failing fast with "no endpoints".
            wait_for_ready=True,
        ) as channel,
        trio.open_nursery() as nursery,
    ):
        users = channel.stub(UserService)
        rng = random.Random(0)

        async def caller() -> None:
            while tally.calls < args.max_calls and not done.is_set():
                tally.calls += 1
                try:
                    with trio.fail_after(CALL_TIMEOUT):
                        await users.get_user(GetUserRequest(user_id=rng.randint(1, args.users)))
                except (rpc.RpcError, trio.TooSlowError) as exc:
                    tally.failed += 1
                    if len(tally.failures) < MAX_FAILURES_KEPT:
                        tally.failures.append(f"{time.monotonic():.3f} {exc!r}")

        async def watcher() -> None:
            async for endpoints in registry.watch("users"):
                emit({"endpoints": sorted(e.address for e in endpoints)})

        done = trio.Event()
        nursery.start_soon(watcher)
        async with trio.open_nursery() as callers:
            for _ in range(args.concurrency):
                callers.start_soon(caller)
            while not done.is_set():
                await trio.sleep(TICK)
                emit({"served": dict(tally.tick), "calls": tally.calls, "failed": tally.failed})
                tally.total.update(tally.tick)
                tally.tick.clear()
                if (
                    await stop_file.exists()
                    or time.monotonic() > deadline
                    or tally.calls >= args.max_calls
                ):
                    done.set()
        tally.total.update(tally.tick)
        nursery.cancel_scope.cancel()
    return {
        "calls": tally.calls,
        "failed": tally.failed,
        "failures": tally.failures,
        "served": dict(tally.total),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--etcd", required=True)
    parser.add_argument("--progress", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=90.0)
    parser.add_argument("--max-calls", type=int, default=500_000)
    args = parser.parse_args()
    assert math.isfinite(args.duration)
    with open(args.progress, "w") as progress:
        result = trio.run(run, args, progress)
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
