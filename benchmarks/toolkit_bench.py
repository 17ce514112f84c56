"""Benchmarks behind the toolkit's performance claims (issue #2).

Runs every toolkit benchmark side by side with its peer in one process and prints
Markdown tables (the format of benchmarks/RESULTS.md)::

    .venv/bin/python benchmarks/toolkit_bench.py            # everything, full size
    .venv/bin/python benchmarks/toolkit_bench.py --quick    # small sizes, a smoke run
    .venv/bin/python benchmarks/toolkit_bench.py bounded fanout

Each figure is the median of several runs; ratios are against the peer measured in
the same run, so a slower or busier machine moves both sides together.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_channels
import bench_limits
import bench_tasks

Row = dict[str, Any]


def _benchmarks(quick: bool) -> dict[str, tuple[str, Callable[[], list[Row]]]]:
    scale = 10 if quick else 1
    return {
        "bounded": (
            f"Bounded execution: {100_000 // scale:,} trivial jobs, limit 100",
            lambda: bench_tasks.bench_bounded(n=100_000 // scale, limit=100, runs=3),
        ),
        "fanout": (
            f"Fan-out/fan-in: {1_000_000 // scale:,} items from an iterable through 4 workers",
            lambda: bench_channels.bench_fanout(n=1_000_000 // scale, workers=4, runs=3),
        ),
        "merge": (
            f"Fan-in: {1_000_000 // scale:,} items from 4 pre-filled channels, consumed "
            "with async for",
            lambda: bench_channels.bench_merge(n=1_000_000 // scale, inputs=4, runs=3),
        ),
        "race": (
            "first_completed: one race of 3 functions vs a hand-written nursery",
            lambda: bench_tasks.bench_first_completed(races=20_000 // scale, runs=3),
        ),
        "acquire": (
            "Rate limiter: cost of one non-blocking acquire",
            lambda: bench_limits.bench_acquire_nowait(),
        ),
        "accuracy": (
            "Rate limiter: admitted rate vs configured (real time)",
            lambda: bench_limits.bench_rate_accuracy(seconds=1.0 if quick else 5.0),
        ),
        "throttle": (
            "open_throttle: items out vs configured (real time)",
            lambda: bench_limits.bench_throttle_accuracy(seconds=1.0 if quick else 5.0),
        ),
        "buffers": (
            "BufferPool acquire/release vs a fresh bytearray",
            lambda: bench_limits.bench_buffer_pool(),
        ),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: Sequence[Row]) -> str:
    """Render rows (dicts with the same keys) as a Markdown table."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    for row in rows[1:]:
        columns.extend(key for key in row if key not in columns)
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines.extend(
        "| " + " | ".join(_fmt(row.get(col, "")) for col in columns) + " |" for row in rows
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    benches = _benchmarks(quick=False)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"which benchmarks: {', '.join(benches)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    args = parser.parse_args(argv)
    benches = _benchmarks(quick=args.quick)
    names = args.names or list(benches)
    unknown = [name for name in names if name not in benches]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown!r}; choose from {list(benches)!r}")
    print(
        f"# toolkit_bench on Python {platform.python_version()}, {platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}{' (quick)' if args.quick else ''}\n"
    )
    for name in names:
        title, run = benches[name]
        started = time.perf_counter()
        rows = run()
        print(f"## {title}\n\n{markdown_table(rows)}\n")
        print(f"({name}: {time.perf_counter() - started:.1f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
