"""The article's first two ``main()`` functions, the Trio way.

Run it with ``make demo`` (or ``.venv/bin/python examples/concurrency_demo.py``).

1. ConcurrentProcessor: 1,000 jobs of 10 ms with 100 workers -> about 0.1 s in total,
   with a task monitor watching for leaks and for steps that block the event loop.
2. Fan-out to 3 workers and fan-in of their results; merge of independent channels.
3. ``WithTimeout`` -> ``trio.move_on_after`` / ``trio.fail_after`` (no wrapper needed).
4. The ticker rate limiter -> a token bucket: 5 of 10 immediate requests are admitted.
5. ``sync.Pool`` -> ``BufferPool``; ``runtime.MemStats`` -> ``memory_snapshot()``;
   ``debug.SetGCPercent`` -> ``tune_gc``.
"""

from __future__ import annotations

import functools
import gc
import time

import trio
import trio.testing

import trio_micro
from trio_micro import observe


def heading(title: str) -> None:
    print(f"\n== {title} ==")


async def ten_ms_job(task_id: int) -> int:
    """The article's task: sleep 10 ms, then report completion."""
    await trio.sleep(0.010)
    return task_id


async def concurrent_processor(monitor: observe.TaskMonitor) -> None:
    heading("1. ConcurrentProcessor: 1,000 jobs of 10 ms, 100 workers")
    start = time.perf_counter()
    async with trio_micro.open_task_group(limit=100) as group:
        for i in range(1_000):
            await group.start_soon(ten_ms_job, i)  # waits for a free slot: backpressure
    stats = group.statistics()
    elapsed = time.perf_counter() - start
    print(f"open_task_group: {stats.completed} jobs done, {stats.failed} failed, {elapsed:.3f} s")

    start = time.perf_counter()
    results = await trio_micro.run_all(
        [functools.partial(ten_ms_job, i) for i in range(1_000)], limit=100
    )
    elapsed = time.perf_counter() - start
    in_order = results == list(range(1_000))
    print(f"run_all: {len(results)} results in input order={in_order}, {elapsed:.3f} s")

    mstats = monitor.statistics()
    print(
        f"task monitor: live={mstats.live_tasks} high-water={mstats.high_water} "
        f"spawned={mstats.spawned} exited={mstats.exited} leak warnings={mstats.leak_warnings}"
    )

    # The article's version: one goroutine per task, all alive at once. The task monitor
    # (leak threshold 500 in this demo) warns, as the article's 1000-goroutine check does.
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(1_000):
            nursery.start_soon(ten_ms_job, i)
    elapsed = time.perf_counter() - start
    mstats = monitor.statistics()
    print(
        f"unbounded nursery: {elapsed:.3f} s, high-water={mstats.high_water} tasks, "
        f"leak warnings={mstats.leak_warnings}"
    )


async def double(item: int) -> int:
    return item * 2


async def channel_patterns() -> None:
    heading("2. Fan-out to 3 workers, fan-in of their results")
    async with trio_micro.open_fan_out(range(10), double, workers=3) as results:
        collected = [result async for result in results]
    print(f"fan-out results (completion order): {collected}")
    print(f"sorted: {sorted(collected)}")

    # The Go version's shape: independent producers, merged into one stream.
    async def produce(send: trio.MemorySendChannel[str], name: str) -> None:
        async with send:
            for i in range(3):
                await send.send(f"{name}{i}")

    sends, receives = zip(*(trio.open_memory_channel[str](0) for _ in range(3)), strict=True)
    async with trio.open_nursery() as nursery:
        for send, name in zip(sends, "abc", strict=True):
            nursery.start_soon(produce, send, name)
        async with trio_micro.open_merge(*receives) as merged:
            items = [item async for item in merged]
    print(f"merge of 3 channels: {sorted(items)} (ends when all inputs end)")


async def with_timeout() -> None:
    heading("3. WithTimeout -> trio.move_on_after / trio.fail_after")

    async def slow_operation() -> str:
        await trio.sleep(1)
        return "done"

    with trio.move_on_after(0.05) as scope:
        await slow_operation()
    print(f"move_on_after(0.05): cancelled_caught={scope.cancelled_caught}")
    try:
        with trio.fail_after(0.05):
            await slow_operation()
    except trio.TooSlowError:
        print("fail_after(0.05): raised trio.TooSlowError (the article's '操作超时')")


def rate_limiting() -> None:
    heading("4. Token-bucket rate limiter: 5 per second, burst 5")
    limiter = trio_micro.RateLimiter(5, burst=5)
    for i in range(10):
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            print(f"request {i} limited")
        else:
            print(f"request {i} allowed")


def memory() -> None:
    heading("5. Buffer pool, memory snapshot, GC tuning")
    pool = trio_micro.BufferPool()
    for i in range(1_000):
        data = f"data_{i}".encode()
        with pool.buffer(1024) as buf:
            prefix = b"Processed: "
            buf[: len(prefix)] = prefix
            buf[len(prefix) : len(prefix) + len(data)] = data
            result = bytes(buf[: len(prefix) + len(data)])
    print(f"last result: {result!r}")
    print(f"buffer pool: {pool.statistics()}")
    previous = observe.tune_gc(threshold0=50_000, freeze=True)
    print(f"tune_gc: gen0 threshold {gc.get_threshold()[0]} (was {previous.threshold[0]})")
    snap = observe.memory_snapshot()
    rss = "n/a" if snap.rss_bytes is None else f"{snap.rss_bytes / 2**20:.1f} MiB"
    print(f"memory: rss={rss} gc counts={snap.gc_counts}")


async def blocked_loop_and_tree() -> None:
    heading("6. Task monitor: a step that blocks the event loop, and the task tree")

    async def careless() -> None:
        time.sleep(0.15)  # noqa: ASYNC251 -- deliberate: the monitor must report this step
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(careless, name="careless-blocking-task")
        nursery.start_soon(trio.sleep_forever, name="idle-waiter")
        await trio.testing.wait_all_tasks_blocked(cushion=0.2)
        print(observe.format_task_tree())
        nursery.cancel_scope.cancel()


async def main() -> None:
    observe.configure_logging(format="console")
    async with observe.open_task_monitor(leak_threshold=500, block_threshold=0.1) as monitor:
        await concurrent_processor(monitor)
        await channel_patterns()
        await with_timeout()
        rate_limiting()
        memory()
        await blocked_loop_and_tree()
        print(f"\ntask monitor totals: {monitor.statistics()}")


if __name__ == "__main__":
    trio.run(main)
