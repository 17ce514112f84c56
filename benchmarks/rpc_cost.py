"""Instructions per unary call, counted by valgrind: a before/after check for a busy machine.

Wall-clock figures (``rpc_bench.py``) move by tens of percent when other processes share
the cores; instruction counts barely move. This runs N unary calls (64 in flight, server
and client in one process over loopback, a tiny msgspec request and response) under
``valgrind --tool=callgrind`` for two values of N and reports the difference per call, so
start-up and imports cancel out. Each source tree is measured in turn, in the order given,
``--rounds`` times (interleaved), without and with the access-log interceptor::

    .venv/bin/python benchmarks/rpc_cost.py BEFORE_TREE AFTER_TREE [--rounds 2]

(a tree is a checkout of trio_micro, e.g. one made with ``git worktree add``). Needs
valgrind; takes about a minute per tree, mode and round. The count still moves by a few
per cent from run to run: how many answers share a write depends on timing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SMALL, LARGE = 1_000, 5_000

CHILD = """
import sys, tempfile
import msgspec, trio
from trio_micro import observe, rpc

mode, calls = sys.argv[1], int(sys.argv[2])


class Request(msgspec.Struct):
    user_id: int


class User(msgspec.Struct):
    user_id: int
    name: str


class Users(rpc.Service, name="users"):
    @rpc.unary
    async def get_user(self, req: Request) -> User:
        return User(req.user_id, "Ada")


async def main(interceptors):
    async with rpc.open_server([Users()], host="127.0.0.1", interceptors=interceptors) as server:
        async with rpc.open_channel(f"127.0.0.1:{server.address[1]}") as channel:
            users = channel.stub(Users)
            left = [calls]

            async def worker():
                while left[0] > 0:
                    left[0] -= 1
                    await users.get_user(Request(1))

            async with trio.open_nursery() as nursery:
                for _ in range(64):
                    nursery.start_soon(worker)


with tempfile.NamedTemporaryFile(suffix=".jsonl") as log:
    if mode == "log":
        observe.configure_logging(format="json", file=log.name, cache_logger_on_first_use=True)
        trio.run(main, [rpc.AccessLogInterceptor()])
    else:
        observe.configure_logging(format="json", file=log.name, level="warning")
        trio.run(main, [])
"""


def instructions(tree: Path, mode: str, calls: int, child: Path) -> int:
    """Instructions valgrind counted for one run of the child."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(child),
            mode,
            str(calls),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="trio_micro checkouts to compare")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    args = parser.parse_args()
    per_call: dict[tuple[str, Path], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        child = Path(tmp) / "calls.py"
        child.write_text(CHILD)
        for _ in range(args.rounds):
            for mode in ("plain", "log"):
                for tree in args.trees:
                    small = instructions(tree, mode, SMALL, child)
                    large = instructions(tree, mode, LARGE, child)
                    cost = (large - small) / (LARGE - SMALL)
                    per_call.setdefault((mode, tree), []).append(cost)
                    print(f"# {mode} {tree}: {cost:,.0f} instructions per call", flush=True)
    print("\n| tree | access log | instructions per call (median) | runs |")
    print("|---|---|---|---|")
    for (mode, tree), costs in per_call.items():
        log = "yes" if mode == "log" else "no"
        print(f"| {tree} | {log} | {statistics.median(costs):,.0f} | {len(costs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
