"""Tests for ``open_task_group``, ``run_all`` (toolkit._tasks) and ``amap`` (toolkit._amap)."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import wait_all_tasks_blocked

from trio_micro import toolkit
from trio_micro.toolkit import _amap, _tasks
from trio_micro.toolkit._amap import amap
from trio_micro.toolkit._tasks import (
    TaskGroupStatistics,
    open_task_group,
    run_all,
)

BAD_LIMIT_TYPES = ["3", 2.0, True, object()]
BAD_LIMIT_VALUES = [0, -1]


def run_with_mock_clock(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``fn`` in a fresh trio run whose clock jumps when every task is blocked."""
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


class Tracker:
    """Counts jobs running at once and jobs that entered, finished or were cancelled."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.entered = 0
        self.exited = 0
        self.cancelled = 0

    async def run(self, seconds: float, value: Any = None) -> Any:
        self.entered += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
            self.exited += 1
        return value

    async def forever(self) -> None:
        await self.run(float("inf"))


async def fail_with(exc: BaseException, seconds: float | None = None) -> None:
    if seconds is not None:
        await trio.sleep(seconds)
    raise exc


# ----------------------------------------------------------------------- public names


def test_toolkit_reexports_every_public_name() -> None:
    for module in (_tasks, _amap):
        for name in module.__all__:
            assert getattr(toolkit, name) is getattr(module, name)


# ------------------------------------------------------------------- open_task_group


async def test_task_group_runs_every_task_before_leaving_the_block() -> None:
    tracker = Tracker()
    async with open_task_group(limit=3) as group:
        for _ in range(10):
            await group.start_soon(tracker.run, 0)
    assert tracker.exited == 10


async def test_start_soon_never_holds_more_than_limit_tasks(autojump_clock: Any) -> None:
    tracker = Tracker()
    async with open_task_group(limit=7) as group:
        nursery = trio.lowlevel.current_task().child_nurseries[-1]
        for i in range(1000):
            await group.start_soon(tracker.run, i % 3)
            assert len(nursery.child_tasks) <= 7
    assert tracker.peak == 7
    assert tracker.exited == 1000


async def test_start_soon_waits_while_the_group_is_full() -> None:
    release = trio.Event()
    tracker = Tracker()
    async with open_task_group(limit=2) as group, trio.open_nursery() as spawner:
        await group.start_soon(release.wait)
        await group.start_soon(release.wait)
        spawner.start_soon(functools.partial(group.start_soon, tracker.run, 0))
        await wait_all_tasks_blocked()
        assert tracker.entered == 0
        assert group.statistics().waiting == 1
        release.set()
    assert tracker.exited == 1


async def test_waiting_start_soon_calls_get_slots_in_fifo_order() -> None:
    order: list[int] = []
    release = trio.Event()

    async def record(i: int) -> None:
        order.append(i)

    async with open_task_group(limit=1) as group, trio.open_nursery() as spawner:
        await group.start_soon(release.wait)
        for i in range(5):
            spawner.start_soon(group.start_soon, record, i)
            await wait_all_tasks_blocked()
        release.set()
    assert order == [0, 1, 2, 3, 4]


async def test_start_soon_nowait_raises_would_block_when_full() -> None:
    release = trio.Event()
    async with open_task_group(limit=1) as group:
        group.start_soon_nowait(release.wait)
        with pytest.raises(trio.WouldBlock):
            group.start_soon_nowait(release.wait)
        release.set()


async def test_start_soon_nowait_starts_a_task_when_a_slot_is_free() -> None:
    tracker = Tracker()
    async with open_task_group(limit=1) as group:
        group.start_soon_nowait(tracker.run, 0)
    assert tracker.exited == 1


async def test_cancelled_start_soon_starts_nothing(autojump_clock: Any) -> None:
    tracker = Tracker()
    async with open_task_group(limit=1) as group:
        await group.start_soon(trio.sleep_forever)
        with trio.move_on_after(1):
            await group.start_soon(tracker.run, 0)
        assert tracker.entered == 0
        assert group.statistics().waiting == 0
        assert group.statistics().running == 1
        group.cancel_scope.cancel()


async def test_start_returns_the_started_value_and_holds_a_slot() -> None:
    async def server(*, task_status: trio.TaskStatus[int]) -> None:
        task_status.started(42)
        await trio.sleep_forever()

    async with open_task_group(limit=1) as group:
        assert await group.start(server) == 42
        assert group.statistics().running == 1
        with pytest.raises(trio.WouldBlock):
            group.start_soon_nowait(trio.sleep, 0)
        group.cancel_scope.cancel()


async def test_start_waits_for_a_free_slot() -> None:
    release = trio.Event()

    async def server(*, task_status: trio.TaskStatus[str]) -> None:
        task_status.started("up")

    async with open_task_group(limit=1) as group:
        await group.start_soon(release.wait)
        with trio.move_on_after(0) as scope:
            await group.start(server)
        assert scope.cancelled_caught
        release.set()
        assert await group.start(server) == "up"


async def test_start_reports_an_error_before_started_to_the_caller() -> None:
    async def broken(*, task_status: trio.TaskStatus[None]) -> None:
        raise ValueError("no port")

    async with open_task_group(limit=1) as group:
        with pytest.raises(ValueError, match="no port"):
            await group.start(broken)
        stats = group.statistics()
        assert (stats.running, stats.failed) == (0, 1)


async def test_statistics_report_running_waiting_completed_and_failed() -> None:
    release = trio.Event()
    group_ref = None
    with pytest.RaisesGroup(ValueError):
        async with open_task_group(limit=2) as group, trio.open_nursery() as spawner:
            group_ref = group
            await group.start_soon(trio.lowlevel.checkpoint)
            await wait_all_tasks_blocked()
            await group.start_soon(release.wait)
            await group.start_soon(release.wait)
            spawner.start_soon(functools.partial(group.start_soon, fail_with, ValueError("x")))
            await wait_all_tasks_blocked()
            assert group.statistics() == TaskGroupStatistics(
                limit=2, running=2, waiting=1, completed=1, failed=0
            )
            release.set()
    assert group_ref is not None
    assert group_ref.statistics() == TaskGroupStatistics(
        limit=2, running=0, waiting=0, completed=3, failed=1
    )


async def test_unlimited_group_reports_no_limit() -> None:
    async with open_task_group() as group:
        for _ in range(100):
            group.start_soon_nowait(trio.sleep, 0)
        assert group.statistics().limit is None
        assert group.statistics().running == 100


async def test_first_error_cancels_the_other_tasks(autojump_clock: Any) -> None:
    tracker = Tracker()
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="boom")):
        async with open_task_group(limit=10) as group:
            for _ in range(3):
                await group.start_soon(tracker.forever)
            await group.start_soon(fail_with, ValueError("boom"), 1)
    assert tracker.cancelled == 3


async def test_first_error_cancels_the_body(autojump_clock: Any) -> None:
    reached = False
    with pytest.RaisesGroup(ValueError):
        async with open_task_group(limit=1) as group:
            await group.start_soon(fail_with, ValueError())
            await trio.sleep(1)
            reached = True
    assert not reached


async def test_concurrent_failures_are_all_in_the_group() -> None:
    with pytest.RaisesGroup(KeyError, ValueError):
        async with open_task_group(limit=2) as group:
            group.start_soon_nowait(fail_with, ValueError())
            group.start_soon_nowait(fail_with, KeyError())


async def test_cancel_scope_cancels_every_task() -> None:
    tracker = Tracker()
    async with open_task_group(limit=3) as group:
        for _ in range(3):
            await group.start_soon(tracker.forever)
        await wait_all_tasks_blocked()
        group.cancel_scope.cancel()
    assert tracker.cancelled == 3


async def test_cancelling_the_enclosing_scope_leaves_no_task_behind() -> None:
    tracker = Tracker()
    with trio.CancelScope() as scope:
        async with open_task_group(limit=3) as group:
            for _ in range(3):
                await group.start_soon(tracker.forever)
            await wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught
    assert tracker.exited == tracker.entered == 3


async def test_tasks_may_start_tasks_after_the_body_has_exited(autojump_clock: Any) -> None:
    tracker = Tracker()
    async with open_task_group(limit=2) as group:

        async def parent() -> None:
            await trio.sleep(1)
            await group.start_soon(tracker.run, 1)

        await group.start_soon(parent)
    assert tracker.exited == 1


async def test_group_is_closed_after_the_block() -> None:
    async def server(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    async with open_task_group(limit=1) as group:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await group.start_soon(trio.sleep, 0)
    with pytest.raises(RuntimeError, match="closed"):
        group.start_soon_nowait(trio.sleep, 0)
    with pytest.raises(RuntimeError, match="closed"):
        await group.start(server)


async def test_waiting_outside_the_group_fails_once_the_group_closes(nursery: trio.Nursery) -> None:
    tracker = Tracker()
    errors: list[BaseException] = []

    async def server(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    async def start_late(starter: Callable[[], Awaitable[object]]) -> None:
        try:
            await starter()
        except RuntimeError as exc:
            errors.append(exc)

    release = trio.Event()
    async with open_task_group(limit=1) as group:
        await group.start_soon(release.wait)
        nursery.start_soon(start_late, functools.partial(group.start_soon, tracker.run, 0))
        nursery.start_soon(start_late, functools.partial(group.start, server))
        await wait_all_tasks_blocked()
        assert group.statistics().waiting == 2
        release.set()
    await wait_all_tasks_blocked()
    assert [str(exc) for exc in errors] == ["Nursery is closed to new arrivals"] * 2
    assert tracker.entered == 0
    assert group.statistics().running == 0


async def test_start_soon_rejects_a_sync_function_and_frees_the_slot() -> None:
    async with open_task_group(limit=1) as group:
        with pytest.raises(TypeError, match="async function"):
            await group.start_soon(len, "abc")  # type: ignore[arg-type]
        assert group.statistics().running == 0


async def test_start_soon_rejects_a_non_callable() -> None:
    async with open_task_group(limit=1) as group:
        with pytest.raises(TypeError, match="42"):
            await group.start_soon(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="42"):
            group.start_soon_nowait(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="42"):
            await group.start(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", BAD_LIMIT_TYPES)
def test_open_task_group_rejects_a_non_int_limit(limit: Any) -> None:
    with pytest.raises(TypeError, match=f"an int or None, got {re.escape(repr(limit))}"):
        open_task_group(limit=limit)


@pytest.mark.parametrize("limit", BAD_LIMIT_VALUES)
def test_open_task_group_rejects_a_limit_below_one(limit: int) -> None:
    with pytest.raises(ValueError, match=str(limit)):
        open_task_group(limit=limit)


@given(durations=st.lists(st.integers(0, 3), max_size=30), limit=st.integers(1, 6))
def test_task_group_never_runs_more_than_limit_tasks(durations: list[int], limit: int) -> None:
    tracker = Tracker()

    async def main() -> None:
        async with open_task_group(limit=limit) as group:
            for seconds in durations:
                await group.start_soon(tracker.run, seconds)

    run_with_mock_clock(main)
    assert tracker.peak <= limit
    assert tracker.exited == len(durations)


# ---------------------------------------------------------------------------- run_all


@given(durations=st.lists(st.integers(0, 3), max_size=30), limit=st.integers(1, 8))
def test_run_all_returns_results_in_input_order(durations: list[int], limit: int) -> None:
    tracker = Tracker()
    fns = [functools.partial(tracker.run, s, i) for i, s in enumerate(durations)]
    results = run_with_mock_clock(functools.partial(run_all, fns, limit=limit))
    assert results == list(range(len(durations)))
    assert tracker.peak == min(limit, len(durations))


async def test_run_all_accepts_a_generator() -> None:
    async def square(i: int) -> int:
        await trio.lowlevel.checkpoint()
        return i * i

    results = await run_all((functools.partial(square, i) for i in range(5)), limit=2)
    assert results == [0, 1, 4, 9, 16]


async def test_run_all_of_nothing_is_an_empty_list() -> None:
    assert await run_all([], limit=3) == []


async def test_run_all_first_error_cancels_the_rest(autojump_clock: Any) -> None:
    tracker = Tracker()
    fns = [functools.partial(tracker.run, 5) for _ in range(10)]
    fns.insert(1, functools.partial(fail_with, ValueError("bad"), 1))
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="bad")):
        await run_all(fns, limit=3)
    assert (tracker.entered, tracker.cancelled) == (2, 2)
    assert trio.current_time() == 1


async def test_run_all_collects_exceptions_in_input_order() -> None:
    async def job(i: int) -> int:
        await trio.lowlevel.checkpoint()
        if i % 2:
            raise ValueError(i)
        return i

    results = await run_all(
        [functools.partial(job, i) for i in range(6)], limit=2, return_exceptions=True
    )
    assert [r if isinstance(r, int) else (type(r), r.args) for r in results] == [
        0,
        (ValueError, (1,)),
        2,
        (ValueError, (3,)),
        4,
        (ValueError, (5,)),
    ]


async def test_run_all_collecting_exceptions_still_propagates_cancellation(
    autojump_clock: Any,
) -> None:
    tracker = Tracker()
    with trio.move_on_after(1) as scope:
        await run_all([tracker.forever] * 4, limit=2, return_exceptions=True)
    assert scope.cancelled_caught
    assert tracker.exited == tracker.entered == 2


async def test_cancelling_run_all_cancels_every_job(autojump_clock: Any) -> None:
    tracker = Tracker()
    with trio.move_on_after(1) as scope:
        await run_all([tracker.forever] * 5, limit=3)
    assert scope.cancelled_caught
    assert tracker.cancelled == tracker.exited == 3


async def test_run_all_rejects_a_non_iterable() -> None:
    with pytest.raises(TypeError, match="42"):
        await run_all(42, limit=1)  # type: ignore[call-overload]


async def test_run_all_rejects_a_non_callable_element_before_starting_anything() -> None:
    tracker = Tracker()
    with pytest.raises(TypeError, match=r"fns\[1\].*'nope'"):
        await run_all([tracker.forever, "nope"], limit=1)  # type: ignore[arg-type]
    assert tracker.entered == 0


@pytest.mark.parametrize("limit", [*BAD_LIMIT_TYPES, None])
async def test_run_all_rejects_a_non_int_limit(limit: Any) -> None:
    with pytest.raises(TypeError, match=f"limit must be an int, got {re.escape(repr(limit))}"):
        await run_all([], limit=limit)


@pytest.mark.parametrize("limit", BAD_LIMIT_VALUES)
async def test_run_all_rejects_a_limit_below_one(limit: int) -> None:
    with pytest.raises(ValueError, match=str(limit)):
        await run_all([], limit=limit)


# ------------------------------------------------------------------------------- amap


async def double(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return 2 * x


@given(
    durations=st.lists(st.integers(0, 3), max_size=25),
    pauses=st.lists(st.integers(0, 2), max_size=25),
    limit=st.integers(1, 6),
    ordered=st.booleans(),
    buffer=st.integers(0, 4),
)
def test_amap_never_has_more_than_limit_in_flight_nor_limit_plus_buffer_pulled(
    durations: list[int], pauses: list[int], limit: int, ordered: bool, buffer: int
) -> None:
    tracker = Tracker()
    yielded = 0
    window_peak = 0

    def source() -> Iterator[int]:
        nonlocal window_peak
        for pulled, seconds in enumerate(durations, 1):
            window_peak = max(window_peak, pulled - yielded)
            yield seconds

    async def main() -> list[int]:
        nonlocal yielded
        got = []
        async with amap(
            tracker.run, source(), limit=limit, ordered=ordered, buffer=buffer
        ) as results:
            async for _ in results:
                yielded += 1
                got.append(yielded)
                await trio.sleep(pauses[yielded % len(pauses)] if pauses else 0)
        return got

    assert len(run_with_mock_clock(main)) == len(durations)
    assert tracker.peak <= limit
    assert window_peak <= limit + buffer


@given(durations=st.lists(st.integers(0, 3), max_size=25), limit=st.integers(1, 6))
def test_ordered_amap_yields_results_in_input_order(durations: list[int], limit: int) -> None:
    tracker = Tracker()

    async def main() -> list[int]:
        items = list(enumerate(durations))
        async with amap(lambda it: tracker.run(it[1], it[0]), items, limit=limit) as results:
            return [r async for r in results]

    assert run_with_mock_clock(main) == list(range(len(durations)))


async def test_unordered_amap_yields_results_as_they_complete(autojump_clock: Any) -> None:
    tracker = Tracker()
    async with amap(lambda s: tracker.run(s, s), [3, 1, 2], limit=3, ordered=False) as results:
        assert [r async for r in results] == [1, 2, 3]


async def test_amap_reads_an_async_iterable() -> None:
    async def source() -> AsyncIterator[int]:
        for i in range(20):
            await trio.lowlevel.checkpoint()
            yield i

    async with amap(double, source(), limit=4) as results:
        assert [r async for r in results] == [2 * i for i in range(20)]


async def test_amap_never_runs_anext_of_an_async_source_concurrently(
    autojump_clock: Any,
) -> None:
    class SlowSource:
        def __init__(self) -> None:
            self.inside = False
            self.count = 0

        def __aiter__(self) -> SlowSource:
            return self

        async def __anext__(self) -> int:
            assert not self.inside
            self.inside = True
            try:
                await trio.sleep(self.count % 3)
            finally:
                self.inside = False
            self.count += 1
            if self.count > 12:
                raise StopAsyncIteration
            return self.count

    async with amap(double, SlowSource(), limit=5) as results:
        assert [r async for r in results] == [2 * i for i in range(1, 13)]


async def test_amap_of_nothing_yields_nothing() -> None:
    async with amap(double, [], limit=2) as results:
        assert [r async for r in results] == []


async def test_ordered_amap_stalls_new_starts_behind_a_slow_head() -> None:
    pulled: list[int] = []
    head_done = trio.Event()

    def source() -> Iterator[int]:
        for i in itertools.count():
            pulled.append(i)
            yield i

    async def fn(i: int) -> int:
        if i == 0:
            await head_done.wait()
        return i

    async with amap(fn, source(), limit=4, buffer=2) as results:
        await wait_all_tasks_blocked()
        assert pulled == [0, 1, 2, 3, 4, 5]
        head_done.set()
        assert [await anext(results) for _ in range(8)] == list(range(8))


async def test_leaving_amap_early_cancels_the_workers() -> None:
    tracker = Tracker()

    async def fn(i: int) -> int:
        if i:
            await tracker.forever()
        return i

    async with amap(fn, itertools.count(), limit=3) as results:
        async for _ in results:
            await wait_all_tasks_blocked()
            break
    assert tracker.entered == 3
    assert tracker.cancelled == tracker.exited == 3


async def test_cancelling_the_amap_consumer_cancels_the_workers(autojump_clock: Any) -> None:
    tracker = Tracker()
    with trio.move_on_after(5) as scope:
        async with amap(lambda _: tracker.forever(), range(10), limit=3) as results:
            async for _ in results:
                pass
    assert scope.cancelled_caught
    assert tracker.cancelled == tracker.exited == 3


async def test_amap_error_stops_iteration_and_raises_from_the_block(autojump_clock: Any) -> None:
    async def fn(i: int) -> int:
        await trio.sleep(i)
        if i == 2:
            raise ValueError(i)
        return i

    got = []
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="2")):
        async with amap(fn, range(10), limit=3) as results:
            async for r in results:
                got.append(r)  # noqa: PERF401 - the point is to see what arrived
    assert got == [0, 1]


async def test_amap_error_from_the_source_raises_from_the_block() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise OSError("disk")

    with pytest.RaisesGroup(pytest.RaisesExc(OSError, match="disk")):
        async with amap(double, source(), limit=2) as results:
            async for _ in results:
                pass


async def test_amap_wraps_an_error_from_the_body_in_the_group() -> None:
    with pytest.RaisesGroup(KeyError):
        async with amap(double, range(10), limit=2) as results:
            async for _ in results:
                raise KeyError


async def test_amap_results_are_closed_after_the_block() -> None:
    async with amap(double, range(3), limit=2) as results:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await anext(results)


async def test_amap_results_allow_one_consumer_at_a_time() -> None:
    async def forever(_: int) -> None:
        await trio.sleep_forever()

    async with amap(forever, range(3), limit=1) as results, trio.open_nursery() as nursery:
        nursery.start_soon(anext, results)
        await wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await anext(results)
        nursery.cancel_scope.cancel()


def test_amap_rejects_a_non_callable() -> None:
    with pytest.raises(TypeError, match="42"):
        amap(42, [], limit=1)  # type: ignore[arg-type]


def test_amap_rejects_a_non_iterable() -> None:
    with pytest.raises(TypeError, match=r"items must be an iterable.*42"):
        amap(double, 42, limit=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [*BAD_LIMIT_TYPES, None])
def test_amap_rejects_a_non_int_limit(limit: Any) -> None:
    with pytest.raises(TypeError, match=f"limit must be an int, got {re.escape(repr(limit))}"):
        amap(double, [], limit=limit)


@pytest.mark.parametrize("limit", BAD_LIMIT_VALUES)
def test_amap_rejects_a_limit_below_one(limit: int) -> None:
    with pytest.raises(ValueError, match=str(limit)):
        amap(double, [], limit=limit)


# ----------------------------------------------------------------------- max_per_second


async def test_run_all_paces_starts_with_max_per_second(autojump_clock: Any) -> None:
    starts: list[float] = []

    async def job() -> None:
        starts.append(trio.current_time())

    await run_all([job] * 21, limit=5, max_per_second=10)
    origin = starts[0]
    assert [round(t - origin, 9) for t in starts] == [round(k / 10, 9) for k in range(21)]


async def test_amap_paces_starts_with_max_per_second(autojump_clock: Any) -> None:
    async def stamp(_: int) -> float:
        return trio.current_time()

    async with amap(stamp, range(11), limit=3, max_per_second=4) as results:
        starts = [t async for t in results]
    assert [round(t - starts[0], 9) for t in starts] == [round(k / 4, 9) for k in range(11)]


@pytest.mark.parametrize("bad", ["10", True, object(), [1]])
async def test_max_per_second_of_a_wrong_type_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="max_per_second"):
        await run_all([], limit=1, max_per_second=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_per_second"):
        amap(double, [], limit=1, max_per_second=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan")])
async def test_max_per_second_not_finite_and_positive_is_a_value_error(bad: float) -> None:
    with pytest.raises(ValueError, match="max_per_second"):
        await run_all([], limit=1, max_per_second=bad)
    with pytest.raises(ValueError, match="max_per_second"):
        amap(double, [], limit=1, max_per_second=bad)


@pytest.mark.parametrize("bad", [-1, "2", 1.5])
def test_amap_rejects_a_bad_buffer(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="buffer"):
        amap(double, [], limit=1, buffer=bad)  # type: ignore[arg-type]
