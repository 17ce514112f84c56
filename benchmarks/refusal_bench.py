"""How fast a call refused at ``max_inflight`` fails, next to an admitted call.

One process, one trio run, loopback TCP: a server with ``max_inflight=1`` whose one slot
is held by a call that never ends, and a server without a limit; the same channel options
(``retry=None``, so a refusal is not retried). Calls one at a time, interleaved in blocks
of 500 between the refused and the admitted kind, so load from elsewhere hits both alike.
The figure is the time the caller waits, client and server work together (both run in
this process, as both ends of any loopback call do)::

    .venv/bin/python benchmarks/refusal_bench.py             # 3 x 4,000 calls of each
    .venv/bin/python benchmarks/refusal_bench.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Sequence

import msgspec
import trio

from trio_micro import observe, rpc


class Empty(msgspec.Struct):
    pass


class Bench(rpc.Service, name="bench"):
    def __init__(self) -> None:
        self.held = trio.Event()

    @rpc.unary
    async def ping(self, req: Empty) -> Empty:
        return req

    @rpc.unary
    async def hold(self, req: Empty) -> Empty:
        self.held.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(calls: int, block: int) -> tuple[list[float], list[float]]:
    refused: list[float] = []
    admitted: list[float] = []
    limited, free = Bench(), Bench()
    async with (
        rpc.open_server([limited], host="127.0.0.1", port=0, max_inflight=1) as full,
        rpc.open_server([free], host="127.0.0.1", port=0) as open_,
        rpc.open_channel(f"127.0.0.1:{full.address[1]}", retry=None) as to_full,
        rpc.open_channel(f"127.0.0.1:{open_.address[1]}", retry=None) as to_open,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(to_full.stub(Bench).hold, Empty())
        await limited.held.wait()
        busy, idle = to_full.stub(Bench), to_open.stub(Bench)
        for _ in range(100):  # warm up both
            await idle.ping(Empty())
            with contextlib.suppress(rpc.RpcError):
                await busy.ping(Empty())
        while len(refused) < calls:
            for _ in range(block):
                start = time.perf_counter()
                try:
                    await busy.ping(Empty())
                except rpc.RpcError as exc:
                    if exc.code is not rpc.Status.RESOURCE_EXHAUSTED:
                        raise
                    refused.append(time.perf_counter() - start)
                else:
                    raise AssertionError("admitted beyond max_inflight")
            for _ in range(block):
                start = time.perf_counter()
                await idle.ping(Empty())
                admitted.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return refused, admitted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    # The refusals are logged (rpc.call.refused, rate-limited): keep them off stdout.
    observe.configure_logging(format="console", file=sys.stderr, level="error")
    if args.quick:
        args.runs, args.calls = 1, 500
    shown = " ".join([".venv/bin/python", "benchmarks/refusal_bench.py", *(argv or sys.argv[1:])])
    print(f"# refusal_bench: `{shown}`\n")
    print(
        f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.1f}; "
        f"medians of {args.runs} run(s) of {args.calls:,} calls of each kind\n"
    )
    rows: dict[str, list[tuple[float, float]]] = {"refused": [], "admitted": []}
    for _ in range(args.runs):
        refused, admitted = trio.run(measure, args.calls, 500)
        for name, values in (("refused", refused), ("admitted", admitted)):
            rows[name].append((_percentile(values, 0.5), _percentile(values, 0.99)))
    print("| call | p50 us | p99 us |")
    print("|---|---|---|")
    for name, label in (
        ("refused", "refused at max_inflight (RESOURCE_EXHAUSTED)"),
        ("admitted", "admitted, empty handler"),
    ):
        p50 = statistics.median(r[0] for r in rows[name]) * 1e6
        p99 = statistics.median(r[1] for r in rows[name]) * 1e6
        print(f"| {label} | {p50:,.0f} | {p99:,.0f} |")
    p99 = statistics.median(r[1] for r in rows["refused"]) * 1e3
    print(
        f"\n- refused calls fail in under 1 ms (p99): {'PASS' if p99 < 1 else 'FAIL'}: {p99:.3f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
