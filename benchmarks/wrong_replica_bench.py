"""A replica that answers but is wrong: one of 3 user-service replicas started on an empty
database (issue #15). Measures failed calls and time to ejection, with and without the
channel's success-rate check.

::

    .venv/bin/python benchmarks/wrong_replica_bench.py                  # about 2 minutes
    .venv/bin/python benchmarks/wrong_replica_bench.py --seconds 3 --rounds 1   # smoke

Two databases are seeded once (``python -m examples.user_service seed``): one with
``--users`` users, one empty. Each run starts three ``trio-micro serve
examples.user_service:UserService`` processes on 127.0.0.1 port 0 -- two on the full
database, one on the empty one -- and one channel in this process over the static address
list makes ``--rate`` ``get_user`` calls per second for existing ids, open loop (a task
per call), for ``--seconds``. Reported per contender: calls, failed calls (all
``NOT_FOUND``), the time from the first call to the first ejection (polled every 10 ms),
how many endpoints were out at that moment, and which replicas were ejected and why (``r1``
is the empty one; ``consecutive_failures`` on a full replica is failure accrual's
slow-call rule firing on a loaded machine, not this check).

Contenders, interleaved round by round on fresh replicas:

* ``without``: ``OutlierEjection(success_rate_ratio=0)``, the success-rate check off (the
  channel as before: a ``NOT_FOUND`` is an answer, so nothing is ever ejected).
* ``with``: ``rpc.open_channel``'s defaults (the check on: windows of 2 x 50 x 3 calls).
* ``control``: the defaults with three full replicas and 30% of the ids asked for missing
  everywhere: the ``NOT_FOUND`` s are real, and nobody may be ejected.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import trio
from structlog.testing import capture_logs

from examples.user_service.service import GetUserRequest, UserService
from trio_micro import rpc

ROOT = Path(__file__).resolve().parents[1]


def seed(path: Path, users: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "examples.user_service", "seed", "--db", str(path), "--users",
         str(users)],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def start_replicas(dbs: list[Path]) -> tuple[list[subprocess.Popen[str]], list[str]]:
    procs, targets = [], []
    for db in dbs:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trio_micro", "serve", "examples.user_service:UserService",
             "-o", f"db={db}", "--port", "0", "--no-access-log", "--log-level", "error"],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:2] == ["serving", "users"], line
        procs.append(proc)
        targets.append(line[-1])
    return procs, targets


async def run_load(
    dbs: list[Path], options: dict[str, Any], rate: float, seconds: float, ids: range
) -> dict[str, Any]:
    procs, targets = start_replicas(dbs)
    try:
        with capture_logs() as logs:  # quiet, and the ejections' reasons
            return await _load(logs, targets, options, rate, seconds, ids)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


async def _load(
    logs: list[MutableMapping[str, Any]],
    targets: list[str],
    options: dict[str, Any],
    rate: float,
    seconds: float,
    ids: range,
) -> dict[str, Any]:
    async with rpc.open_channel(targets, **options) as channel:
        stub = channel.stub(UserService)
        rng = random.Random(1)
        with trio.fail_after(10):
            while channel.statistics().ready < 3:  # noqa: ASYNC110 - no event to wait on
                await trio.sleep(0.01)
        failed = calls = 0
        ejected_after = math.nan
        ejections = 0

        async def one(user_id: int) -> None:
            nonlocal failed, calls
            try:
                await stub.get_user(GetUserRequest(user_id))
            except rpc.RpcError:
                failed += 1
            calls += 1

        async def watch(begin: float) -> None:
            nonlocal ejected_after, ejections
            while True:
                ejected = channel.statistics().ejected
                if ejected and math.isnan(ejected_after):
                    ejected_after = trio.current_time() - begin
                    ejections = len(ejected)
                await trio.sleep(0.01)

        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                begin = trio.current_time()
                nursery.start_soon(watch, begin)
                for i in range(int(rate * seconds)):
                    await trio.sleep_until(begin + i / rate)
                    nursery.start_soon(one, rng.choice(ids))
                await trio.sleep(0.5)  # the last calls
                scope.cancel()
        reasons = sorted(
            {
                f"r{targets.index(e['peer'])} {e['reason']}"
                for e in logs
                if e["event"] == "rpc.channel.endpoint_ejected"
            }
        )
        return {
            "calls": calls,
            "failed": failed,
            "eject_s": ejected_after,
            "ejected": ejections,
            "reasons": reasons,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="calls per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per run")
    parser.add_argument("--users", type=int, default=1000, help="users in the full database")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        full, empty = Path(tmp) / "full.db", Path(tmp) / "empty.db"
        seed(full, args.users)
        seed(empty, 0)
        existing = range(1, args.users + 1)
        with_missing = range(1, int(args.users / 0.7) + 1)  # 30% of these ids are missing
        contenders: dict[str, tuple[list[Path], dict[str, Any], range]] = {
            "without": (
                [full, empty, full],
                {"outlier_ejection": rpc.OutlierEjection(success_rate_ratio=0)},
                existing,
            ),
            "with": ([full, empty, full], {}, existing),
            "control": ([full, full, full], {}, with_missing),
        }
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, (dbs, options, ids) in contenders.items():
                results[name].append(trio.run(run_load, dbs, options, args.rate, args.seconds, ids))
    load = os.getloadavg()
    print(
        f"{args.rate:g} get_user calls/s for {args.seconds:g} s, 3 replicas (with/without: "
        f"one on an empty database); {args.rounds} rounds; load average {load[0]:.1f} "
        f"{load[1]:.1f} {load[2]:.1f}"
    )
    header = ("contender", "calls", "failed", "failed %", "ejected after", "ejected", "why")
    print("{:<10} {:>7} {:>7} {:>9} {:>14} {:>8}  {}".format(*header))
    for name, runs in results.items():
        calls = sum(run["calls"] for run in runs)
        failed = sum(run["failed"] for run in runs)
        ejects = [run["eject_s"] for run in runs if not math.isnan(run["eject_s"])]
        eject = (
            f"{statistics.median(ejects):.2f} s ({len(ejects)}/{len(runs)})" if ejects else "never"
        )
        ejected = max(run["ejected"] for run in runs)
        why = ",".join(sorted({r for run in runs for r in run["reasons"]})) or "-"
        print(
            f"{name:<10} {calls:>7.0f} {failed:>7.0f} {100 * failed / calls:>8.1f}% "
            f"{eject:>14} {ejected:>8.0f}  {why}"
        )


if __name__ == "__main__":
    main()
