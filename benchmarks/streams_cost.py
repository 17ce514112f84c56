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

Needs valgrind; about half a minute per tree, workload and round. ``--profile`` runs one
workload of ``--items`` items in-process under cProfile and prints the top functions by
total time instead (what the counts do not say: where the instructions go).
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

WORKLOADS = ("upload", "download", "pingpong")
SIZES = {"upload": (4_000, 20_000), "download": (4_000, 20_000), "pingpong": (500, 2_500)}

CHILD = """
import sys
from collections.abc import AsyncIterator
import msgspec, trio
from trio_micro import observe, rpc

workload, items = sys.argv[1], int(sys.argv[2])


class Num(msgspec.Struct):
    n: int


class Total(msgspec.Struct):
    total: int
    count: int


class Bench(rpc.Service, name="bench"):
    @rpc.client_stream
    async def upload(self, requests: rpc.RequestStream[Num]) -> Total:
        total = count = 0
        async for item in requests:
            total += item.n
            count += 1
        return Total(total, count)

    @rpc.server_stream
    async def download(self, req: Num) -> AsyncIterator[Num]:
        for n in range(req.n):
            yield Num(n)

    @rpc.bidi_stream
    async def echo(
        self, requests: rpc.RequestStream[Num], responses: rpc.ResponseSender[Num]
    ) -> None:
        async for item in requests:
            await responses.send(item)


async def main():
    async with rpc.open_server([Bench()], host="127.0.0.1", port=0) as server:
        async with rpc.open_channel(f"127.0.0.1:{server.address[1]}") as channel:
            bench = channel.stub(Bench)
            if workload == "upload":
                async with bench.upload() as (send, receive):
                    for n in range(items):
                        await send.send(Num(n))
                    await send.aclose()
                    assert (await receive.receive()).count == items
            elif workload == "download":
                count = 0
                async for _ in bench.download(Num(items)):
                    count += 1
                assert count == items
            else:
                async with bench.echo() as (send, receive):
                    for n in range(items):
                        await send.send(Num(n))
                        await receive.receive()
                    await send.aclose()


observe.configure_logging(format="json", level="warning")
if len(sys.argv) > 3:
    import cProfile, pstats
    profile = cProfile.Profile()
    profile.runcall(trio.run, main)
    pstats.Stats(profile).sort_stats("tottime").print_stats(int(sys.argv[3]))
else:
    trio.run(main)
"""


def instructions(tree: Path, workload: str, items: int, child: Path) -> int:
    """Instructions valgrind counted for one run of the child."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(child),
            workload,
            str(items),
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
        "--only", action="append", choices=WORKLOADS, help="measure only these workloads"
    )
    parser.add_argument("--profile", choices=WORKLOADS, help="cProfile one workload instead")
    parser.add_argument("--items", type=int, default=20_000, help="items for --profile")
    args = parser.parse_args()
    workloads = args.only or list(WORKLOADS)
    per_item: dict[tuple[str, Path], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        child = Path(tmp) / "streams.py"
        child.write_text(CHILD)
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
