"""Instructions per unary call, counted by valgrind: a before/after check for a busy machine.

Wall-clock figures (``rpc_bench.py``) move by tens of percent when other processes share
the cores; instruction counts barely move. This runs N unary calls (64 in flight, server
and client in one process over loopback, a tiny msgspec request and response) under
``valgrind --tool=callgrind`` for two values of N and reports the difference per call, so
start-up and imports cancel out. Each source tree is measured in turn, in the order given,
``--rounds`` times (interleaved), in each mode: ``plain`` (no interceptor), ``log`` (the
access-log interceptor), ``noop`` (one interceptor that only proceeds: the chain's own
cost), ``ratelimit`` (``rpc.RateLimitInterceptor`` keyed by peer, a rate never
reached) and ``maxinflight`` (``max_inflight`` set, never reached: admission's fast path)::

    .venv/bin/python benchmarks/rpc_cost.py BEFORE_TREE AFTER_TREE [--rounds 2]
    .venv/bin/python benchmarks/rpc_cost.py TREE --modes plain,noop,ratelimit --in-flight 1 \
        --calls 200,1200

(``--in-flight 1``: one call at a time, no batching of answers, so the count barely moves
from run to run.)

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

mode, calls, in_flight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


class Request(msgspec.Struct):
    user_id: int


class User(msgspec.Struct):
    user_id: int
    name: str


class Proceed:
    def intercept(self, call, proceed):
        return proceed()


class Users(rpc.Service, name="users"):
    @rpc.unary
    async def get_user(self, req: Request) -> User:
        return User(req.user_id, "Ada")


async def main(interceptors, max_inflight=None):
    async with rpc.open_server(
        [Users()], host="127.0.0.1", interceptors=interceptors, max_inflight=max_inflight
    ) as server:
        async with rpc.open_channel(f"127.0.0.1:{server.address[1]}") as channel:
            users = channel.stub(Users)
            left = [calls]

            async def worker():
                while left[0] > 0:
                    left[0] -= 1
                    await users.get_user(Request(1))

            async with trio.open_nursery() as nursery:
                for _ in range(in_flight):
                    nursery.start_soon(worker)


with tempfile.NamedTemporaryFile(suffix=".jsonl") as log:
    if mode == "log":
        observe.configure_logging(format="json", file=log.name, cache_logger_on_first_use=True)
        trio.run(main, [rpc.AccessLogInterceptor()])
    elif mode == "maxinflight":  # admission control on, its limit never reached
        observe.configure_logging(format="json", file=log.name, level="warning")
        trio.run(main, [], 1_000_000)
    else:
        observe.configure_logging(format="json", file=log.name, level="warning")
        interceptors = {
            "plain": [],
            "noop": [Proceed()],
            "ratelimit": [rpc.RateLimitInterceptor(1e9, burst=1_000_000)],
        }[mode]
        trio.run(main, interceptors)
"""


def instructions(tree: Path, mode: str, calls: int, in_flight: int, child: Path) -> int:
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
            str(in_flight),
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
    parser.add_argument(
        "--modes",
        default="plain,log",
        help="comma-separated: plain, log, noop, ratelimit, maxinflight",
    )
    parser.add_argument("--in-flight", type=int, default=64, help="calls at once (default 64)")
    parser.add_argument(
        "--calls", default=f"{SMALL},{LARGE}", help=f"the two run sizes (default {SMALL},{LARGE})"
    )
    args = parser.parse_args()
    small, large = (int(n) for n in args.calls.split(","))
    modes = args.modes.split(",")
    per_call: dict[tuple[str, Path], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        child = Path(tmp) / "calls.py"
        child.write_text(CHILD)
        for _ in range(args.rounds):
            for mode in modes:
                for tree in args.trees:
                    few = instructions(tree, mode, small, args.in_flight, child)
                    many = instructions(tree, mode, large, args.in_flight, child)
                    cost = (many - few) / (large - small)
                    per_call.setdefault((mode, tree), []).append(cost)
                    print(f"# {mode} {tree}: {cost:,.0f} instructions per call", flush=True)
    print(f"\n{args.in_flight} in flight\n")
    print("| tree | mode | instructions per call (median) | runs |")
    print("|---|---|---|---|")
    for (mode, tree), costs in per_call.items():
        print(f"| {tree} | {mode} | {statistics.median(costs):,.0f} | {len(costs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
