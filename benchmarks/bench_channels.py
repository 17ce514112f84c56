"""Fan-out, merge and amap throughput against the naive channel pipelines.

Runs side by side in one process, on the same input and the same trivial async
``fn``, and reports the median items/s of several runs and the ratio to the naive
pattern measured in the same run::

    .venv/bin/python benchmarks/bench_channels.py              # 1,000,000 items
    .venv/bin/python benchmarks/bench_channels.py -n 100000    # a quicker run

The naive pattern is the textbook one: a producer task doing one ``await send``
per item into a memory channel, ``workers`` tasks doing
``async for item in rx: await results_tx.send(await fn(item))``, and one
``async for`` over the results. Every channel of the three pipelines has the same
buffer size (``BUFFER``), so they differ only in how items move.

Rows, and the consumer each one uses:

* ``naive pipeline`` - consumer: ``async for`` over the results channel;
* ``open_fan_out (consumer: async for)`` - ``async for`` over the results channel;
* ``open_fan_out (consumer: receive_batch)`` - ``receive_batch(results, BUFFER)``;
* ``reference: async for over a pre-filled channel`` - not a pipeline: ``async for``
  over a channel that already holds every item. Trio's ``receive()`` costs one
  scheduler trip per item, so no producer can feed an ``async for`` consumer
  faster than this row; it was the ceiling of the second row until ``open_fan_out``
  returned a :class:`~trio_micro.toolkit.FastReceiveChannel` (issue #18), whose
  ``async for`` takes buffered items without that trip.
* ``amap (consumer: async for)`` - ``amap(double, range(n), limit=workers)``, ordered.

``bench_merge`` does the same for fan-in: ``workers`` input channels, pre-filled with
``n / workers`` items each (filling is not timed), merged by the textbook forwarders
(``async for item in rx: await out.send(item)``, one task per input) or by
``open_merge``, consumed with ``async for``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

try:
    from trio_micro.toolkit import amap, open_fan_out, open_merge, receive_batch
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trio_micro.toolkit import amap, open_fan_out, open_merge, receive_batch

Row = dict[str, Any]

BUFFER = 256


async def double(x: int) -> int:
    return 2 * x


# Each case returns (results consumed, seconds spent), timing only the data flow.
Case = Callable[[int, int, int], Awaitable[tuple[int, float]]]


async def naive(n: int, workers: int, buffer: int) -> tuple[int, float]:
    """The textbook pipeline."""
    started = time.perf_counter()
    items_tx, items_rx = trio.open_memory_channel[int](buffer)
    results_tx, results_rx = trio.open_memory_channel[int](buffer)

    async def producer() -> None:
        async with items_tx:
            for i in range(n):
                await items_tx.send(i)

    async def worker(rx: trio.MemoryReceiveChannel[int], tx: trio.MemorySendChannel[int]) -> None:
        async with rx, tx:
            async for item in rx:
                await tx.send(await double(item))

    count = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        async with items_rx, results_tx:
            for _ in range(workers):
                nursery.start_soon(worker, items_rx.clone(), results_tx.clone())
        async for _ in results_rx:
            count += 1
    return count, time.perf_counter() - started


async def fan_out_async_for(n: int, workers: int, buffer: int) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    async with open_fan_out(range(n), double, workers=workers, buffer=buffer) as results:
        async for _ in results:
            count += 1
    return count, time.perf_counter() - started


async def fan_out_receive_batch(n: int, workers: int, buffer: int) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    async with open_fan_out(range(n), double, workers=workers, buffer=buffer) as results:
        while True:
            try:
                batch = await receive_batch(results, buffer)
            except trio.EndOfChannel:
                break
            count += len(batch)
    return count, time.perf_counter() - started


async def drain_prefilled(n: int, workers: int, buffer: int) -> tuple[int, float]:
    """Reference, not a fan-out: ``async for`` over a channel that already holds every
    item (filling it is not timed)."""
    send_channel, receive_channel = trio.open_memory_channel[int](n)
    with send_channel:
        for i in range(n):
            send_channel.send_nowait(i)
    started = time.perf_counter()
    count = 0
    async for _ in receive_channel:
        count += 1
    return count, time.perf_counter() - started


async def amap_async_for(n: int, workers: int, buffer: int) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    async with amap(double, range(n), limit=workers) as results:
        async for _ in results:
            count += 1
    return count, time.perf_counter() - started


def _prefilled(n: int, inputs: int) -> list[trio.MemoryReceiveChannel[int]]:
    channels = []
    for k in range(inputs):
        share = range(k, n, inputs)
        send_channel, receive_channel = trio.open_memory_channel[int](len(share))
        with send_channel:
            for i in share:
                send_channel.send_nowait(i)
        channels.append(receive_channel)
    return channels


async def naive_merge(n: int, inputs: int, buffer: int) -> tuple[int, float]:
    """The textbook fan-in: one forwarder task per input."""
    channels = _prefilled(n, inputs)
    started = time.perf_counter()
    out_tx, out_rx = trio.open_memory_channel[int](buffer)

    async def forward(rx: trio.MemoryReceiveChannel[int], tx: trio.MemorySendChannel[int]) -> None:
        async with rx, tx:
            async for item in rx:
                await tx.send(item)

    count = 0
    async with trio.open_nursery() as nursery:
        async with out_tx:
            for channel in channels:
                nursery.start_soon(forward, channel, out_tx.clone())
        async for _ in out_rx:
            count += 1
    return count, time.perf_counter() - started


async def merge_async_for(n: int, inputs: int, buffer: int) -> tuple[int, float]:
    channels = _prefilled(n, inputs)
    started = time.perf_counter()
    count = 0
    async with open_merge(*channels, buffer=buffer) as merged:
        async for _ in merged:
            count += 1
    return count, time.perf_counter() - started


# Rows in this order; the first is the baseline of the ratios.
CASES: dict[str, Case] = {
    "naive pipeline (consumer: async for)": naive,
    "open_fan_out (consumer: async for)": fan_out_async_for,
    "open_fan_out (consumer: receive_batch)": fan_out_receive_batch,
    "amap, ordered (consumer: async for)": amap_async_for,
    "reference: async for over a pre-filled channel (no workers)": drain_prefilled,
}

MERGE_CASES: dict[str, Case] = {
    "naive merge: a forwarder task per input (consumer: async for)": naive_merge,
    "open_merge (consumer: async for)": merge_async_for,
}


def _rate(case: Case, n: int, workers: int) -> float:
    count, seconds = trio.run(case, n, workers, BUFFER)
    if count != n:
        raise AssertionError(f"expected {n} results, got {count}")
    return n / seconds


def _bench(cases: dict[str, Case], n: int, workers: int, runs: int) -> list[Row]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            samples[name].append(_rate(case, n, workers))
    base = statistics.median(samples[next(iter(cases))])
    rows: list[Row] = []
    for name, values in samples.items():
        rate = statistics.median(values)
        rows.append({"name": name, "items/s (median)": rate, "ratio vs naive": rate / base})
    return rows


def bench_fanout(n: int = 1_000_000, workers: int = 4, runs: int = 3) -> list[Row]:
    """Median items/s of each case over ``runs`` interleaved runs, with the ratio to
    the naive pipeline."""
    return _bench(CASES, n, workers, runs)


def bench_merge(n: int = 1_000_000, inputs: int = 4, runs: int = 3) -> list[Row]:
    """Median items/s of the naive fan-in and ``open_merge`` over ``runs`` interleaved
    runs, with the ratio to the naive one."""
    return _bench(MERGE_CASES, n, inputs, runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="items per run")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    rows = bench_fanout(n=args.n, workers=args.workers, runs=args.runs)
    rows += bench_merge(n=args.n, inputs=args.workers, runs=args.runs)
    print(
        f"fan-out / merge of {args.n:,} items, {args.workers} workers or inputs, "
        f"buffer {BUFFER}, median of {args.runs} runs\n"
    )
    print("| name | items/s (median) | ratio vs naive |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['items/s (median)']:,.0f} | {row['ratio vs naive']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
