"""Bounded execution: ``run_all`` / ``amap`` / ``open_task_group`` against their peers.

Every contender runs the same ``n`` trivial jobs (``await trio.sleep(0); return i``,
so each job yields once) with at most ``limit`` at once, on trio, in one process:

- ``trio_micro.run_all`` and ``trio_micro.amap`` (``limit`` workers, shared iterator);
- ``trio_micro.open_task_group(limit=...)`` (a task per job, ``await start_soon``);
- ``aiometer.run_all(max_at_once=...)``, which runs on trio through anyio;
- a plain nursery with a ``trio.CapacityLimiter``: the spawner acquires a token per
  job and the job's task releases it (bounded, like errgroup ``SetLimit``), and the
  naive form that spawns every task up front and lets each wait on the limiter.

:func:`bench_first_completed` times one race of three functions (one answers after a
checkpoint, two would wait forever): ``first_completed`` against the hand-written
nursery that cancels itself on the first result. (``aiometer.run_any`` is not a
contender: it waits for the other functions to finish instead of cancelling them,
so it never returns from this race.)

Run it as a script (``python benchmarks/bench_tasks.py [n] [limit] [runs]``) or call
:func:`bench_bounded`. Each figure is the median of ``runs`` runs; the ratio is against
aiometer measured in the same process.
"""

from __future__ import annotations

import functools
import statistics
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiometer
import trio

from trio_micro.toolkit import amap, first_completed, open_task_group, run_all

Row = dict[str, Any]


async def job(i: int) -> int:
    await trio.sleep(0)  # noqa: ASYNC115 - the job as specified: yields once
    return i


async def _ours_run_all(n: int, limit: int) -> list[int]:
    return await run_all([functools.partial(job, i) for i in range(n)], limit=limit)


async def _ours_amap(n: int, limit: int) -> list[int]:
    async with amap(job, range(n), limit=limit) as results:
        return [r async for r in results]


async def _ours_task_group(n: int, limit: int) -> list[int]:
    out = [0] * n

    async def one(i: int) -> None:
        out[i] = await job(i)

    async with open_task_group(limit=limit) as group:
        for i in range(n):
            await group.start_soon(one, i)
    return out


async def _aiometer_run_all(n: int, limit: int) -> list[int]:
    return await aiometer.run_all([functools.partial(job, i) for i in range(n)], max_at_once=limit)


async def _nursery_limiter_bounded(n: int, limit: int) -> list[int]:
    out = [0] * n
    limiter = trio.CapacityLimiter(limit)

    async def one(i: int) -> None:
        try:
            out[i] = await job(i)
        finally:
            limiter.release_on_behalf_of(i)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            await limiter.acquire_on_behalf_of(i)
            nursery.start_soon(one, i)
    return out


async def _nursery_limiter_naive(n: int, limit: int) -> list[int]:
    out = [0] * n
    limiter = trio.CapacityLimiter(limit)

    async def one(i: int) -> None:
        async with limiter:
            out[i] = await job(i)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return out


CONTENDERS: dict[str, Callable[[int, int], Awaitable[list[int]]]] = {
    "trio_micro.run_all": _ours_run_all,
    "trio_micro.amap": _ours_amap,
    "trio_micro.open_task_group": _ours_task_group,
    "aiometer.run_all (anyio on trio)": _aiometer_run_all,
    "nursery + CapacityLimiter (spawner acquires)": _nursery_limiter_bounded,
    "nursery + CapacityLimiter (n tasks up front)": _nursery_limiter_naive,
}
BASELINE = "aiometer.run_all (anyio on trio)"


def _time_once(contender: Callable[[int, int], Awaitable[list[int]]], n: int, limit: int) -> float:
    async def main() -> float:
        start = trio.current_time()
        results = await contender(n, limit)
        elapsed = trio.current_time() - start
        if results != list(range(n)):
            raise AssertionError("wrong results")
        return elapsed

    return trio.run(main)


def bench_bounded(n: int = 100_000, limit: int = 100, runs: int = 3) -> list[Row]:
    """Measure jobs/s of every contender; return one row per contender.

    Runs are interleaved (every contender once, then again) so drift in machine load
    hits all of them alike. Rows: ``name``, ``jobs/s`` (median), ``ratio vs aiometer``.
    """
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for _ in range(runs):
        for name, contender in CONTENDERS.items():
            times[name].append(_time_once(contender, n, limit))
    rates = {name: n / statistics.median(samples) for name, samples in times.items()}
    return [
        {"name": name, "jobs/s": rate, "ratio vs aiometer": rate / rates[BASELINE]}
        for name, rate in rates.items()
    ]


async def _answer() -> int:
    await trio.lowlevel.checkpoint()
    return 1


async def _never() -> int:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


_RACE = (_never, _answer, _never)


async def _hand_written_race() -> int:
    result = 0
    async with trio.open_nursery() as nursery:

        async def run(fn: Callable[[], Awaitable[int]]) -> None:
            nonlocal result
            result = await fn()
            nursery.cancel_scope.cancel()

        for fn in _RACE:
            nursery.start_soon(run, fn)
    return result


async def _first_completed_race() -> int:
    return await first_completed(*_RACE)


RACERS: dict[str, Callable[[], Awaitable[int]]] = {
    "hand-written nursery, cancelled by the first result": _hand_written_race,
    "trio_micro.first_completed": _first_completed_race,
}


def bench_first_completed(races: int = 20_000, runs: int = 3) -> list[Row]:
    """Microseconds per race of three functions, median of ``runs`` interleaved runs,
    with the ratio to the hand-written nursery (lower is better)."""
    times: dict[str, list[float]] = {name: [] for name in RACERS}

    async def main(race: Callable[[], Awaitable[int]]) -> float:
        start = trio.current_time()
        for _ in range(races):
            if await race() != 1:
                raise AssertionError("wrong winner")
        return trio.current_time() - start

    for _ in range(runs):
        for name, race in RACERS.items():
            times[name].append(trio.run(main, race))
    per_race = {name: statistics.median(t) / races * 1e6 for name, t in times.items()}
    base = per_race[next(iter(RACERS))]
    return [
        {"name": name, "µs per race": us, "cost vs hand-written": us / base}
        for name, us in per_race.items()
    ]


def main(argv: list[str]) -> int:
    defaults = [100_000, 100, 3]
    n, limit, runs = [int(arg) for arg in argv[:3]] + defaults[len(argv[:3]) :]
    print(f"bounded: {n:,} jobs, limit {limit}, median of {runs} runs, trio {trio.__version__}\n")
    print("| name | jobs/s | ratio vs aiometer |\n|---|---:|---:|")
    for row in bench_bounded(n=n, limit=limit, runs=runs):
        print(f"| {row['name']} | {row['jobs/s']:,.0f} | {row['ratio vs aiometer']:.2f} |")
    print("\n| race of 3 functions | µs per race | cost vs hand-written |\n|---|---:|---:|")
    for row in bench_first_completed(runs=runs):
        print(f"| {row['name']} | {row['µs per race']:.1f} | {row['cost vs hand-written']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
