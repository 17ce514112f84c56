"""Instructions per stream item, counted by valgrind: upload, download and bidi ping-pong.

The stream twin of ``rpc_cost.py`` (read its docstring): server and client in one process
over loopback, one stream of tiny msgspec items (``Num(n)``), run under
``valgrind --tool=callgrind`` for two item counts; the difference per item is reported, so
start-up, imports and the call's set-up cancel out. Workloads:

* ``upload``: one client-stream of N items, one summary back;
* ``download``: one server-stream of N items;
* ``pingpong``: N request/answer round trips on one bidi stream (cost per round trip).

Each source tree is measured in turn, in the order given, ``--rounds`` times (interleaved)::

    .venv/bin/python benchmarks/streams_cost.py BEFORE_TREE AFTER_TREE [--rounds 2]
    .venv/bin/python benchmarks/streams_cost.py . --profile pingpong   # cProfile, no valgrind

Needs valgrind; one to two minutes per tree, workload and round. ``--profile`` runs one
workload of ``--items`` items in-process under cProfile and prints the top functions by
total time instead (what the counts do not say: where the instructions go).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rpc_cost import instructions  # noqa: E402  (after the path fix-up)

WORKLOADS = ("upload", "download", "pingpong")
SIZES = {"upload": (4_000, 20_000), "download": (4_000, 20_000), "pingpong": (500, 2_500)}

CHILD = """
import os, sys
os.environ.setdefault("STREAMS_BENCH_TREE", os.environ["PYTHONPATH"])
sys.path.insert(0, "@HERE@")
import trio
from streams_bench import Bench, run_workload
from trio_micro import observe, rpc

workload, items = sys.argv[1], int(sys.argv[2])


async def main():
    async with rpc.open_server([Bench()], host="127.0.0.1", port=0) as server:
        async with rpc.open_channel(f"127.0.0.1:{server.address[1]}") as channel:
            await run_workload(channel.stub(Bench), workload, items, items)


observe.configure_logging(format="json", level="warning")
if len(sys.argv) > 3:
    import cProfile, pstats
    profile = cProfile.Profile()
    profile.runcall(trio.run, main)
    pstats.Stats(profile).sort_stats("tottime").print_stats(int(sys.argv[3]))
else:
    trio.run(main)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="trio_micro checkouts to compare")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument(
        "--only", action="append", choices=WORKLOADS, help="measure only these workloads"
    )
    parser.add_argument("--profile", choices=WORKLOADS, help="cProfile one workload instead")
    parser.add_argument("--items", type=int, default=20_000, help="items for --profile")
    args = parser.parse_args()
    workloads = args.only or list(WORKLOADS)
    per_item: dict[tuple[str, Path], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        child = Path(tmp) / "streams.py"
        child.write_text(CHILD.replace("@HERE@", str(HERE)))
        if args.profile:
            env = {**os.environ, "PYTHONPATH": str(args.trees[0])}
            cmd = [sys.executable, str(child), args.profile, str(args.items), "30"]
            return subprocess.run(cmd, env=env, check=False).returncode
        for _ in range(args.rounds):
            for workload in workloads:
                small, large = SIZES[workload]
                for tree in args.trees:
                    low = instructions(tree, workload, small, child)
                    high = instructions(tree, workload, large, child)
                    cost = (high - low) / (large - small)
                    per_item.setdefault((workload, tree), []).append(cost)
                    print(f"# {workload} {tree}: {cost:,.0f} instructions per item", flush=True)
    print("\n| tree | workload | instructions per item (median) | runs |")
    print("|---|---|---|---|")
    for (workload, tree), costs in per_item.items():
        print(f"| {tree} | {workload} | {statistics.median(costs):,.0f} | {len(costs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
