"""Gray failure: one of 3 replica processes SIGSTOPped under load (issue #15, defect 6).

::

    .venv/bin/python benchmarks/gray_failure_bench.py                  # about 1 minute
    .venv/bin/python benchmarks/gray_failure_bench.py --stop 3 --rate 200 --rounds 1  # smoke

Three replica processes (this file with ``--replica``: a server on 127.0.0.1 port 0
answering an idempotent ``whoami`` from memory) behind a static address list; in this
process one channel makes ``--rate`` calls per second, open loop (a task per call, so a
hung call does not slow the load), each under a ``--deadline`` (1 s). After 2 s replica 1
gets SIGSTOP, ``--stop`` seconds later SIGCONT, then the load runs 2 s more. Reported per
contender: calls, failed calls, p50/p99 latency of all calls (a failed call counts at its
deadline), and the time from SIGSTOP to the replica's ejection (polled every 10 ms).

Contenders, interleaved round by round on fresh replicas:

* ``accrual off``: the channel as before issue #15 -- ``OutlierEjection`` without slow-call
  accrual (``slow_call_factor=inf``) and client keepalive off. (Counting
  ``DEADLINE_EXCEEDED`` and passed deadlines is not optional, so this is a little better
  than the old code, never worse.)
* ``defaults``: ``rpc.open_channel`` defaults: slow calls (10 x the median, at least
  100 ms) count and idempotent calls are cut there and retried elsewhere; keepalive 30 s.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
from typing import Any

import msgspec
import structlog
import trio

from trio_micro import rpc


class Empty(msgspec.Struct):
    pass


class Name(msgspec.Struct):
    name: str


class Replica(rpc.Service, name="replica"):
    def __init__(self, name: str) -> None:
        self.name = name

    @rpc.unary(idempotent=True)
    async def whoami(self, req: Empty) -> Name:
        return Name(self.name)


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))


async def serve_replica(name: str) -> None:
    async with rpc.open_server([Replica(name)], host="127.0.0.1", port=0) as server:
        print(f"READY {server.address[1]}", flush=True)
        await trio.sleep_forever()


def start_replicas() -> tuple[list[subprocess.Popen[str]], list[str]]:
    procs, targets = [], []
    for i in range(3):
        proc = subprocess.Popen(
            [sys.executable, __file__, "--replica", f"r{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[0] == "READY", line
        procs.append(proc)
        targets.append(f"127.0.0.1:{line[1]}")
    return procs, targets


async def run_load(
    options: dict[str, Any], rate: float, stop: float, deadline: float
) -> dict[str, float]:
    procs, targets = start_replicas()
    try:
        async with rpc.open_channel(targets, **options) as channel:
            stub = channel.stub(Replica)
            for _ in range(200):  # connect and warm up
                await stub.whoami(Empty())
            latencies: list[float] = []
            failed = 0
            ejected_after = math.nan

            async def one() -> None:
                nonlocal failed
                start = trio.current_time()
                try:
                    with trio.fail_after(deadline):
                        await stub.whoami(Empty())
                except (trio.TooSlowError, rpc.RpcError):
                    failed += 1
                    latencies.append(deadline)
                else:
                    latencies.append(trio.current_time() - start)

            async def chaos() -> None:
                nonlocal ejected_after
                await trio.sleep(2)
                os.kill(procs[1].pid, signal.SIGSTOP)
                stopped = trio.current_time()
                with trio.move_on_after(stop):
                    while targets[1] not in channel.statistics().ejected:  # noqa: ASYNC110 - no event to wait on
                        await trio.sleep(0.01)
                    ejected_after = trio.current_time() - stopped
                await trio.sleep_until(stopped + stop)
                os.kill(procs[1].pid, signal.SIGCONT)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(chaos)
                begin = trio.current_time()
                total = int(rate * (stop + 4))
                for i in range(total):
                    await trio.sleep_until(begin + i / rate)
                    nursery.start_soon(one)
            latencies.sort()
            return {
                "calls": len(latencies),
                "failed": failed,
                "p50_ms": statistics.median(latencies) * 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
                "eject_s": ejected_after,
            }
    finally:
        for proc in procs:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


CONTENDERS: dict[str, dict[str, Any]] = {
    "accrual off": {
        "outlier_ejection": rpc.OutlierEjection(slow_call_factor=math.inf),
        "keepalive_interval": math.inf,
    },
    "defaults": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="calls per second")
    parser.add_argument("--stop", type=float, default=10.0, help="seconds of SIGSTOP")
    parser.add_argument("--deadline", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--replica", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet()
    if args.replica:
        trio.run(serve_replica, args.replica)
        return
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    for _ in range(args.rounds):
        for name, options in CONTENDERS.items():
            results[name].append(trio.run(run_load, options, args.rate, args.stop, args.deadline))
    print(
        f"{args.rate:g} calls/s, {args.deadline:g} s deadline, 1 of 3 replicas SIGSTOPped "
        f"for {args.stop:g} s; {args.rounds} rounds (sums of calls/failures, medians of the rest)"
    )
    header = ("contender", "calls", "failed", "p50", "p99", "ejected after")
    print("{:<12} {:>7} {:>7} {:>9} {:>9} {:>14}".format(*header))
    for name, runs in results.items():
        calls = sum(run["calls"] for run in runs)
        failed = sum(run["failed"] for run in runs)
        p50 = statistics.median(run["p50_ms"] for run in runs)
        p99 = statistics.median(run["p99_ms"] for run in runs)
        ejects = [run["eject_s"] for run in runs]
        seen = [e for e in ejects if not math.isnan(e)]
        eject = f"{statistics.median(seen):.2f} s" if len(seen) == len(ejects) else "not always"
        print(f"{name:<12} {calls:>7.0f} {failed:>7.0f} {p50:>6.2f} ms {p99:>6.1f} ms {eject:>14}")


if __name__ == "__main__":
    main()
