"""Benchmarks behind the toolkit's rate limiter and buffer pool claims.

Run as a script (``.venv/bin/python benchmarks/bench_limits.py``) or import the
``bench_*`` functions, which return lists of dict rows:

* `bench_acquire_nowait`: ns per ``RateLimiter.acquire_nowait()`` call (admitted and
  refused), beside ``aiolimiter.AsyncLimiter`` on asyncio for reference.
* `bench_rate_accuracy`: admitted vs configured rate over real time for a client
  hammering ``await acquire()``; the error must stay under 1 %.
* `bench_throttle_accuracy`: the same for ``open_throttle``: items out of a throttled
  channel over real time vs ``floor(rate * seconds) + burst``.
* `bench_buffer_pool`: ``BufferPool.acquire/release`` vs ``bytearray(size)``, with and
  without touching every page, so it is visible where pooling helps and where not.

Every figure is the median of several runs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections.abc import Callable

import trio

from trio_micro.toolkit import BufferPool, RateLimiter, open_throttle

try:
    from aiolimiter import AsyncLimiter
except ImportError:  # the `bench` extra is optional
    AsyncLimiter = None  # type: ignore[assignment,misc]

Row = dict[str, object]

_PAGE = 4096


def bench_acquire_nowait(iterations: int = 200_000, runs: int = 3) -> list[Row]:
    """Cost of one non-blocking acquire, in ns (median of ``runs``).

    Rows: ``acquire_nowait`` admitted (a rate so high the bucket never runs dry),
    ``acquire_nowait`` refused (``trio.WouldBlock`` raised and caught), the
    ``await acquire()`` fast path (which always checkpoints, i.e. yields to trio's
    scheduler), and aiolimiter's ``has_capacity()`` + ``await acquire()`` on asyncio
    (which does not yield when capacity is available).
    """
    rows: list[Row] = []

    def trio_loop(*, refused: bool, awaited: bool) -> float:
        async def main() -> float:
            # rate 1e12/s: a token every picosecond, so the admitted path never blocks.
            limiter = RateLimiter(1e-3 if refused else 1e12, burst=1)
            if refused:
                limiter.acquire_nowait()
            acquire_nowait, acquire = limiter.acquire_nowait, limiter.acquire
            start = time.perf_counter_ns()
            if awaited:
                for _ in range(iterations):
                    await acquire()
            elif refused:
                for _ in range(iterations):
                    try:  # noqa: SIM105 (contextlib.suppress would add its own cost)
                        acquire_nowait()
                    except trio.WouldBlock:
                        pass
            else:
                for _ in range(iterations):
                    acquire_nowait()
            return (time.perf_counter_ns() - start) / iterations

        return trio.run(main)

    for name, refused, awaited in [
        ("trio_micro RateLimiter.acquire_nowait() admitted", False, False),
        ("trio_micro RateLimiter.acquire_nowait() refused (WouldBlock)", True, False),
        ("trio_micro await RateLimiter.acquire() fast path (checkpoint)", False, True),
    ]:
        samples = [trio_loop(refused=refused, awaited=awaited) for _ in range(runs)]
        rows.append({"case": name, "ns_per_call": round(statistics.median(samples), 1)})

    if AsyncLimiter is None:
        rows.append({"case": "aiolimiter (not installed)", "ns_per_call": math.nan})
        return rows

    def asyncio_loop() -> float:
        async def main() -> float:
            limiter = AsyncLimiter(1e12, 1)
            has_capacity, acquire = limiter.has_capacity, limiter.acquire
            start = time.perf_counter_ns()
            for _ in range(iterations):
                if has_capacity():
                    await acquire()
            return (time.perf_counter_ns() - start) / iterations

        return asyncio.run(main())

    samples = [asyncio_loop() for _ in range(runs)]
    name = "aiolimiter has_capacity() + await acquire() (asyncio)"
    rows.append({"case": name, "ns_per_call": round(statistics.median(samples), 1)})
    return rows


def bench_rate_accuracy(
    seconds: float = 5.0, rate: float = 1000.0, *, bursts: tuple[int, ...] = (1, 2, 10)
) -> list[Row]:
    """Admitted vs configured rate over ``seconds`` of real time, per burst.

    A client hammers ``await limiter.acquire()``; the admissions inside the window
    ``[start, start + seconds]`` are counted and compared with the ideal
    ``floor(rate * seconds) + burst``. ``error_pct`` must stay under 1.

    The limiter itself is exact (see the autojump test); what this measures is the
    real client: trio sleeps in ``epoll`` with millisecond granularity, so a waiter
    can wake about 1 ms late, more when the machine is busy. Lateness below
    ``burst / rate`` is absorbed by the bucket; beyond it the bucket was full and the
    surplus tokens overflowed, as in any token bucket. So at 1000/s ``burst=1`` (1 ms of
    slack) shows that loss, ``burst=2`` mostly not, ``burst=10`` (10 ms) not at all.
    """
    rows: list[Row] = []
    for burst in bursts:

        async def main(burst: int = burst) -> tuple[int, float]:
            limiter = RateLimiter(rate, burst)
            admitted = 0
            start = trio.current_time()
            with trio.move_on_at(start + seconds):
                while True:
                    await limiter.acquire()
                    admitted += 1
            return admitted, trio.current_time() - start

        rows.append(_accuracy_row(rate, burst, seconds, *trio.run(main)))
    return rows


def _accuracy_row(rate: float, burst: int, seconds: float, admitted: int, elapsed: float) -> Row:
    expected = math.floor(rate * seconds) + burst
    error = abs(admitted - expected) / expected
    return {
        "rate": rate,
        "burst": burst,
        "seconds": round(elapsed, 3),
        "admitted": admitted,
        "expected": expected,
        "measured_rate": round((admitted - burst) / seconds, 1),
        "error_pct": round(100 * error, 3),
        "ok": error < 0.01,
    }


def bench_throttle_accuracy(
    seconds: float = 5.0,
    cases: tuple[tuple[float, int], ...] = ((1000.0, 1), (1000.0, 10), (10_000.0, 100)),
) -> list[Row]:
    """Items out of ``open_throttle(source, rate, burst=burst)`` over ``seconds`` of
    real time vs ``floor(rate * seconds) + burst``, per ``(rate, burst)``.

    The source never runs dry (a channel pre-filled with more items than can pass) and
    the consumer is an ``async for``; the error must stay under 1 % once
    ``burst >= rate / 100``, for the reason `bench_rate_accuracy` gives.
    """
    rows: list[Row] = []
    for rate, burst in cases:

        async def main(rate: float = rate, burst: int = burst) -> tuple[int, float]:
            send_channel, receive_channel = trio.open_memory_channel[int](math.inf)
            with send_channel:
                for i in range(int(rate * seconds) + burst + 1000):
                    send_channel.send_nowait(i)
            passed = 0
            start = trio.current_time()
            async with open_throttle(receive_channel, rate, burst=burst) as paced:
                with trio.move_on_at(start + seconds):
                    async for _ in paced:
                        passed += 1
            return passed, trio.current_time() - start

        rows.append(_accuracy_row(rate, burst, seconds, *trio.run(main)))
    return rows


def bench_buffer_pool(
    sizes: tuple[int, ...] = (1024, 64 * 1024, 1024 * 1024),
    *,
    seconds_per_case: float = 0.2,
    runs: int = 5,
) -> list[Row]:
    """Allocations per second: ``BufferPool.acquire/release`` vs ``bytearray(size)``.

    Two workloads per size: ``alloc`` (get a buffer, give it back) and ``touch`` (also
    write one byte per 4 KiB page, as any real use does; a fresh large ``bytearray``
    comes from ``calloc``/``mmap`` and pays its page faults on first touch).
    """
    rows: list[Row] = []
    pool = BufferPool()

    def rate_of(op: Callable[[], None]) -> float:
        def once() -> float:
            count = 0
            deadline = time.perf_counter() + seconds_per_case
            start = time.perf_counter()
            while time.perf_counter() < deadline:
                for _ in range(100):
                    op()
                count += 100
            return count / (time.perf_counter() - start)

        return statistics.median(once() for _ in range(runs))

    for size in sizes:
        pages = range(0, size, _PAGE)

        def pool_alloc(size: int = size) -> None:
            pool.release(pool.acquire(size))

        def plain_alloc(size: int = size) -> None:
            bytearray(size)

        def pool_touch(size: int = size, pages: range = pages) -> None:
            buf = pool.acquire(size)
            for offset in pages:
                buf[offset] = 1
            pool.release(buf)

        def plain_touch(size: int = size, pages: range = pages) -> None:
            buf = bytearray(size)
            for offset in pages:
                buf[offset] = 1

        for workload, pooled, plain in [
            ("alloc", pool_alloc, plain_alloc),
            ("touch", pool_touch, plain_touch),
        ]:
            pooled_rate, plain_rate = rate_of(pooled), rate_of(plain)
            rows.append(
                {
                    "size": size,
                    "workload": workload,
                    "pool_ops_per_s": round(pooled_rate),
                    "bytearray_ops_per_s": round(plain_rate),
                    "pool_speedup": round(pooled_rate / plain_rate, 2),
                }
            )
    return rows


def _print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n## {title}")
    if not rows:
        return
    columns = list(rows[0])
    widths = [max(len(str(c)), *(len(str(row[c])) for row in rows)) for c in columns]
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


def main() -> None:
    """Run every benchmark and print one table each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="rate accuracy window")
    parser.add_argument("--rate", type=float, default=1000.0, help="rate for accuracy run")
    args = parser.parse_args()
    _print_rows("acquire_nowait cost (median of 3 runs)", bench_acquire_nowait())
    _print_rows(
        f"rate accuracy over {args.seconds} s of real time",
        bench_rate_accuracy(args.seconds, args.rate),
    )
    _print_rows(
        f"open_throttle accuracy over {args.seconds} s of real time",
        bench_throttle_accuracy(args.seconds),
    )
    _print_rows("BufferPool vs bytearray (median of 5 runs)", bench_buffer_pool())


if __name__ == "__main__":
    main()
