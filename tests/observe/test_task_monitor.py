from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro.observe import TaskMonitor, format_task_tree, open_task_monitor


class FakeClock:
    """A step clock that only moves when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def installed(monitor: TaskMonitor) -> Iterator[TaskMonitor]:
    trio.lowlevel.add_instrument(monitor)
    try:
        yield monitor
    finally:
        trio.lowlevel.remove_instrument(monitor)


def next_line() -> int:
    """The line number after the caller's current line."""
    return sys._getframe(1).f_lineno + 1


def events(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [record for record in logs if record["event"] == event]


def count_live_tasks() -> int:
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        assert task is not None
        count += 1
        stack.extend(child for n in task.child_nurseries for child in n.child_tasks)
    return count


async def park(event: trio.Event) -> None:
    await event.wait()


async def test_blocking_step_is_reported_with_task_name_and_place(
    nursery: trio.Nursery,
) -> None:
    clock = FakeClock()
    line = 0

    async def hog() -> None:
        nonlocal line
        clock.advance(0.25)  # as if this step computed for 250 ms without yielding
        line = next_line()
        await trio.lowlevel.checkpoint()

    monitor = TaskMonitor(block_threshold=0.1, clock=clock)
    with capture_logs() as logs, installed(monitor):
        nursery.start_soon(hog, name="hog-task")
        await trio.testing.wait_all_tasks_blocked()

    [record] = events(logs, "observe.loop.blocked")
    assert record["task"] == "hog-task"
    assert record["duration_ms"] == 250.0
    assert record["threshold_ms"] == 100.0
    assert record["function"].endswith("hog")
    assert record["where"].endswith(f"test_task_monitor.py:{line}")
    assert record["log_level"] == "warning"
    stats = monitor.statistics()
    assert stats.blocked_steps == 1
    assert stats.longest_step == 0.25


async def test_steps_within_the_threshold_are_not_reported(nursery: trio.Nursery) -> None:
    clock = FakeClock()

    async def busy() -> None:
        clock.advance(0.1)  # exactly the threshold: not "longer than"
        await trio.lowlevel.checkpoint()

    monitor = TaskMonitor(block_threshold=0.1, clock=clock)
    with capture_logs() as logs, installed(monitor):
        nursery.start_soon(busy)
        await trio.testing.wait_all_tasks_blocked()

    assert events(logs, "observe.loop.blocked") == []
    assert monitor.statistics().blocked_steps == 0


async def test_blocking_check_can_be_turned_off(nursery: trio.Nursery) -> None:
    clock = FakeClock()

    async def hog() -> None:
        clock.advance(10.0)
        await trio.lowlevel.checkpoint()

    with capture_logs() as logs, installed(TaskMonitor(block_threshold=None, clock=clock)):
        nursery.start_soon(hog)
        await trio.testing.wait_all_tasks_blocked()

    assert events(logs, "observe.loop.blocked") == []


async def test_leak_is_reported_once_per_crossing(nursery: trio.Nursery) -> None:
    gates = [trio.Event() for _ in range(26)]
    monitor = TaskMonitor(leak_threshold=10, leak_rearm=5, block_threshold=None)

    async def spawn(first: int, last: int) -> None:
        for gate in gates[first:last]:
            nursery.start_soon(park, gate, name="parked")
        await trio.testing.wait_all_tasks_blocked()

    async def release(first: int, last: int) -> None:
        for gate in gates[first:last]:
            gate.set()
        await trio.testing.wait_all_tasks_blocked()

    with capture_logs() as logs, installed(monitor):
        await spawn(0, 15)  # 15 live: crossed 10 once
        assert len(events(logs, "observe.tasks.leak_suspected")) == 1
        await release(0, 9)  # 6 live: below the threshold, not yet at the re-arm mark
        await spawn(15, 20)  # 11 live: crossed again, but not re-armed
        assert len(events(logs, "observe.tasks.leak_suspected")) == 1
        assert events(logs, "observe.tasks.leak_cleared") == []
        await release(9, 15)  # 5 live: re-armed
        assert len(events(logs, "observe.tasks.leak_cleared")) == 1
        await spawn(20, 26)  # 11 live: crossed after re-arming
        await release(0, 26)

    first, second = events(logs, "observe.tasks.leak_suspected")
    assert first["live_tasks"] == 11
    assert first["threshold"] == 10
    assert first["top_names"] == [("parked", 11)]
    assert second["live_tasks"] == 11
    assert monitor.statistics().leak_warnings == 2


async def test_leak_rearm_defaults_to_ninety_percent(nursery: trio.Nursery) -> None:
    gates = [trio.Event() for _ in range(21)]
    monitor = TaskMonitor(leak_threshold=20, block_threshold=None)
    with capture_logs() as logs, installed(monitor):
        for gate in gates:
            nursery.start_soon(park, gate)
        await trio.testing.wait_all_tasks_blocked()
        for gate in gates[:2]:  # 19 live: above 18, still disarmed
            gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert events(logs, "observe.tasks.leak_cleared") == []
        gates[2].set()  # 18 live: re-armed
        await trio.testing.wait_all_tasks_blocked()
        assert len(events(logs, "observe.tasks.leak_cleared")) == 1
        for gate in gates:
            gate.set()


async def test_counters_are_exact() -> None:
    monitor = TaskMonitor(block_threshold=None)
    gate = trio.Event()
    with installed(monitor):
        async with trio.open_nursery() as inner:
            for _ in range(5):
                inner.start_soon(park, gate)
            await trio.testing.wait_all_tasks_blocked()
            during = monitor.statistics()
            gate.set()
        after = monitor.statistics()

    assert (during.live_tasks, during.spawned, during.exited) == (5, 5, 0)
    assert (after.live_tasks, after.spawned, after.exited) == (0, 5, 5)
    assert after.high_water == 5
    assert (after.leak_warnings, after.long_lived_warnings, after.blocked_steps) == (0, 0, 0)


async def test_long_lived_task_is_reported_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    line = 0

    async def sleepy() -> None:
        nonlocal line
        line = next_line()
        await trio.sleep_forever()

    with capture_logs() as logs:
        async with open_task_monitor(max_task_age=10, check_interval=1) as monitor:
            nursery.start_soon(sleepy, name="sleepy-task")
            await trio.sleep(9.5)
            assert events(logs, "observe.tasks.long_lived") == []
            await trio.sleep(30)

    [record] = events(logs, "observe.tasks.long_lived")
    assert record["task"] == "sleepy-task"
    assert 10 < record["age_s"] <= 11
    assert record["max_age_s"] == 10
    assert record["where"].endswith(f"test_task_monitor.py:{line}")
    assert monitor.statistics().long_lived_warnings == 1


async def test_check_task_ages_does_nothing_without_max_task_age(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    monitor = TaskMonitor()
    with installed(monitor):
        nursery.start_soon(trio.sleep_forever)
        await trio.sleep(1000)
        assert monitor.check_task_ages() == []


async def test_open_task_monitor_counts_existing_tasks(nursery: trio.Nursery) -> None:
    gate = trio.Event()
    for _ in range(3):
        nursery.start_soon(park, gate, name="pre-existing")
    await trio.testing.wait_all_tasks_blocked()
    existing = count_live_tasks()

    async with open_task_monitor() as monitor:
        assert monitor.statistics().live_tasks == existing
        assert monitor.statistics().spawned == 0
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        stats = monitor.statistics()

    assert stats.live_tasks == existing - 3
    assert stats.exited == 3
    assert stats.high_water == existing


async def test_open_task_monitor_removes_the_instrument_on_exit(nursery: trio.Nursery) -> None:
    async with open_task_monitor() as monitor:
        pass
    before = monitor.statistics()
    nursery.start_soon(trio.sleep, 0)
    await trio.testing.wait_all_tasks_blocked()

    assert monitor.statistics() == before


async def test_open_task_monitor_checker_is_visible_in_the_tree(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_task_monitor(max_task_age=60) as monitor:
        await trio.testing.wait_all_tasks_blocked()
        tree = format_task_tree()
        stats = monitor.statistics()

    assert "trio_micro.observe.task_monitor: _check_ages_forever" in tree
    assert stats.spawned == 1


async def test_open_task_monitor_raises_the_body_error_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with open_task_monitor(max_task_age=60):
            raise KeyError("body")


async def test_format_task_tree_shows_nested_task_and_where_it_waits(
    nursery: trio.Nursery,
) -> None:
    line = 0

    async def inner() -> None:
        nonlocal line
        line = next_line()
        await trio.sleep_forever()

    async def outer() -> None:
        async with trio.open_nursery() as children:
            children.start_soon(inner, name="inner-task")
            await trio.sleep_forever()

    nursery.start_soon(outer, name="outer-task")
    await trio.testing.wait_all_tasks_blocked()
    lines = format_task_tree().splitlines()

    [outer_at] = [i for i, text in enumerate(lines) if "outer-task:" in text]
    [inner_at] = [i for i, text in enumerate(lines) if "inner-task:" in text]
    assert outer_at < inner_at

    def indent(text: str) -> int:
        return len(text) - len(text.lstrip(" │├└─"))

    assert indent(lines[inner_at]) > indent(lines[outer_at])
    assert lines[inner_at - 1].endswith("nursery")
    inner_line = lines[inner_at]
    assert "<locals>.inner at " in inner_line
    assert f"test_task_monitor.py:{line}" in inner_line
    assert inner_line.endswith("awaiting trio._timeouts.sleep_forever")


async def test_format_task_tree_from_a_given_root(nursery: trio.Nursery) -> None:
    async def leaf() -> None:
        await trio.sleep_forever()

    async def branch() -> None:
        async with trio.open_nursery() as children:
            children.start_soon(leaf, name="leaf-task")
            await trio.sleep_forever()

    nursery.start_soon(branch, name="branch-task")
    await trio.testing.wait_all_tasks_blocked()
    [task] = [t for t in nursery.child_tasks if t.name == "branch-task"]
    lines = format_task_tree(task).splitlines()

    assert lines[0].startswith("branch-task: ")
    assert lines[1] == "└─ nursery"
    assert lines[2].startswith("   └─ leaf-task: ")
    assert len(lines) == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "shown"),
    [
        ({"leak_threshold": 0}, ValueError, "0"),
        ({"leak_threshold": "1000"}, TypeError, "'1000'"),
        ({"leak_threshold": True}, TypeError, "True"),
        ({"leak_threshold": 10, "leak_rearm": 10}, ValueError, "10"),
        ({"leak_rearm": -1}, ValueError, "-1"),
        ({"block_threshold": 0}, ValueError, "0"),
        ({"block_threshold": -0.5}, ValueError, "-0.5"),
        ({"block_threshold": float("nan")}, ValueError, "nan"),
        ({"block_threshold": "100ms"}, TypeError, "'100ms'"),
        ({"max_task_age": 0.0}, ValueError, "0.0"),
        ({"clock": 1.0}, TypeError, "1.0"),
    ],
)
def test_bad_arguments_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], shown: str
) -> None:
    with pytest.raises(error) as excinfo:
        TaskMonitor(**kwargs)
    assert shown in str(excinfo.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "shown"),
    [
        ({"check_interval": 0}, ValueError, "0"),
        ({"check_interval": None}, TypeError, "None"),
        ({"leak_threshold": -5}, ValueError, "-5"),
    ],
)
async def test_open_task_monitor_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], shown: str
) -> None:
    with pytest.raises(error) as excinfo:
        async with open_task_monitor(**kwargs):
            pass  # pragma: no cover
    assert shown in str(excinfo.value)
