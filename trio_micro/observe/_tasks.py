"""Task monitor: live-task counts, leak and long-lived-task warnings, blocked event loop.

Theory of operation
-------------------
:class:`TaskMonitor` is a :class:`trio.abc.Instrument`, so the scheduler calls it
synchronously, on the trio thread, at four points: when a task is spawned, when it exits,
and just before and just after each *step* (the stretch of a task's code between two
checkpoints). Everything it knows comes from those calls; it never polls the scheduler.

* **Counting.** Live tasks are kept in a dict from task to spawn time (trio time), in spawn
  order. ``live_tasks`` is the size of that dict, so an exit of a task the monitor never saw
  spawn (one that predates a bare ``add_instrument``) cannot make the count drift.
  :func:`open_task_monitor` walks the task tree once when it installs the monitor, so tasks
  that already exist are counted too; their spawn time is unknown, so they are never aged.

* **Leaks** (the Go article's ``runtime.NumGoroutine() > 1000`` check, done on every spawn
  instead of every five seconds). When the live count rises above ``leak_threshold`` the
  monitor logs ``observe.tasks.leak_suspected`` once, with the most common task names (a
  leak is usually thousands of copies of one function). It then stays quiet until the count
  falls to ``leak_rearm`` or below (``observe.tasks.leak_cleared``); that gap is the
  hysteresis that keeps a count hovering at the threshold from flooding the log.

* **Long-lived tasks.** :meth:`TaskMonitor.check_task_ages` reports, once per task, each task
  older than ``max_task_age`` seconds of trio time (``observe.tasks.long_lived``). Since the
  dict is in spawn order, the check stops at the first task young enough, so it costs
  O(old tasks), not O(all tasks). :func:`open_task_monitor` runs it every
  ``check_interval`` seconds in a task of its own.

* **Blocked event loop.** Trio is cooperative: while one step runs, nothing else does, so a
  step that takes 300 ms (a CPU-bound loop, a blocking ``open()``, ``time.sleep``) stalls
  every other task for 300 ms. The monitor reads ``clock`` before and after each step and
  logs ``observe.loop.blocked`` when a step took longer than ``block_threshold``. It names
  the task and where the task *next* waits, i.e. the ``await`` that ended the slow step; the
  blocking code ran between the task's previous checkpoint and that line. The two clock
  reads per step are the monitor's only per-step cost (measured: no more than trio's own
  dispatch to any instrument, about 1 us per step); stacks are only walked for a step
  already found slow.

Hooks never raise (trio would remove an instrument that does) and never checkpoint.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Final, final

import structlog
import trio

from .._background import open_background_nursery
from .._validate import check_callable, check_int, check_seconds

__all__ = [
    "TaskMonitor",
    "TaskMonitorStatistics",
    "format_task_tree",
    "open_task_monitor",
]

_log = structlog.get_logger("trio_micro.observe")

# Frames in trio's own source are "how" a task waits, not "where" in the caller's code.
_TRIO_DIR: Final = os.path.dirname(trio.__file__) + os.sep
# How many of the most common task names a leak warning lists.
_TOP_NAMES: Final = 5


@final
@dataclass(frozen=True, slots=True)
class TaskMonitorStatistics:
    """A snapshot of a :class:`TaskMonitor`'s counters.

    Attributes:
        live_tasks: Tasks alive now: those that existed when the monitor was installed by
            :func:`open_task_monitor`, plus ``spawned``, minus ``exited``.
        high_water: The largest ``live_tasks`` seen.
        spawned: Tasks spawned while the monitor was installed.
        exited: Counted tasks that exited while the monitor was installed.
        leak_warnings: ``observe.tasks.leak_suspected`` records logged.
        long_lived_warnings: ``observe.tasks.long_lived`` records logged.
        blocked_steps: Steps longer than ``block_threshold`` (``observe.loop.blocked``).
        longest_step: The longest step seen, in seconds of the monitor's ``clock``.
    """

    live_tasks: int
    high_water: int
    spawned: int
    exited: int
    leak_warnings: int
    long_lived_warnings: int
    blocked_steps: int
    longest_step: float


@final
class TaskMonitor(trio.abc.Instrument):
    """An instrument that counts tasks and reports leaks, old tasks and blocking steps.

    Install it with :func:`open_task_monitor` (which also counts the tasks that already
    exist and runs the long-lived-task check), or pass it to ``trio.run(...,
    instruments=[monitor])`` / :func:`trio.lowlevel.add_instrument`, in which case only tasks
    spawned afterwards are counted and :meth:`check_task_ages` is yours to call.

    See the module docstring for how each check works and what it logs.

    Args:
        leak_threshold: Warn (``observe.tasks.leak_suspected``) when more than this many
            tasks are alive. The Go article's figure, 1000, is the default.
        leak_rearm: Warn again only after the live count has fallen to this many or fewer.
            Defaults to 90% of ``leak_threshold``.
        block_threshold: Report steps longer than this many seconds
            (``observe.loop.blocked``); ``None`` turns the check off.
        max_task_age: :meth:`check_task_ages` reports tasks that have lived longer than this
            many seconds of trio time; ``None`` turns the check off.
        clock: Returns seconds; times steps. Injectable so tests can make a step "take" a
            given time without really blocking.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: A threshold is not positive, or ``leak_rearm`` is not below
            ``leak_threshold``.
    """

    def __init__(
        self,
        *,
        leak_threshold: int = 1000,
        leak_rearm: int | None = None,
        block_threshold: float | None = 0.1,
        max_task_age: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        check_int("leak_threshold", leak_threshold, minimum=1)
        if leak_rearm is None:
            leak_rearm = leak_threshold * 9 // 10
        else:
            check_int("leak_rearm", leak_rearm, minimum=0)
            if leak_rearm >= leak_threshold:
                raise ValueError(
                    f"leak_rearm must be below leak_threshold ({leak_threshold!r}), "
                    f"got {leak_rearm!r}"
                )
        if block_threshold is not None:
            check_seconds("block_threshold", block_threshold)
        if max_task_age is not None:
            check_seconds("max_task_age", max_task_age)
        check_callable("clock", clock, expected="a callable returning seconds")

        self._leak_threshold = leak_threshold
        self._leak_rearm = leak_rearm
        self._block_threshold = math.inf if block_threshold is None else block_threshold
        self._max_task_age = max_task_age
        self._clock = clock

        # task -> spawn time in trio time, or None when unknown or exempt from aging.
        self._tasks: dict[trio.lowlevel.Task, float | None] = {}
        self._reported_old: set[trio.lowlevel.Task] = set()
        self._leak_armed = True
        # +inf makes the first after_task_step after installation (which had no matching
        # before_task_step) measure a negative duration, i.e. nothing.
        self._step_start = math.inf

        self._high_water = 0
        self._spawned = 0
        self._exited = 0
        self._leak_warnings = 0
        self._long_lived_warnings = 0
        self._blocked_steps = 0
        self._longest_step = 0.0

    def statistics(self) -> TaskMonitorStatistics:
        """Return the current counters. Not a checkpoint."""
        return TaskMonitorStatistics(
            live_tasks=len(self._tasks),
            high_water=self._high_water,
            spawned=self._spawned,
            exited=self._exited,
            leak_warnings=self._leak_warnings,
            long_lived_warnings=self._long_lived_warnings,
            blocked_steps=self._blocked_steps,
            longest_step=self._longest_step,
        )

    # -- Instrument hooks: called by trio's scheduler; must be cheap and never raise. --

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        """Count ``task``; warn if the live count just passed ``leak_threshold``."""
        self._spawned += 1
        self._track(task, _trio_now())
        live = len(self._tasks)
        if live > self._leak_threshold and self._leak_armed:
            self._leak_armed = False
            self._leak_warnings += 1
            names = collections.Counter(t.name for t in self._tasks)
            _log.warning(
                "observe.tasks.leak_suspected",
                live_tasks=live,
                threshold=self._leak_threshold,
                spawned=self._spawned,
                exited=self._exited,
                top_names=names.most_common(_TOP_NAMES),
            )

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        """Uncount ``task``; re-arm the leak warning once the count is low enough."""
        if self._tasks.pop(task, _UNKNOWN) is _UNKNOWN:
            return
        self._exited += 1
        self._reported_old.discard(task)
        live = len(self._tasks)
        if not self._leak_armed and live <= self._leak_rearm:
            self._leak_armed = True
            _log.info(
                "observe.tasks.leak_cleared",
                live_tasks=live,
                rearm_at=self._leak_rearm,
                threshold=self._leak_threshold,
            )

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        """Note when the step starts."""
        self._step_start = self._clock()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        """Report the step if it held the event loop longer than ``block_threshold``."""
        elapsed = self._clock() - self._step_start
        self._step_start = math.inf
        if elapsed > self._longest_step:
            self._longest_step = elapsed
        if elapsed > self._block_threshold:
            self._blocked_steps += 1
            where = _where(task)
            _log.warning(
                "observe.loop.blocked",
                task=task.name,
                duration_ms=round(elapsed * 1000, 3),
                threshold_ms=round(self._block_threshold * 1000, 3),
                function=where.function if where else None,
                where=where.location if where else None,
            )

    # -- Long-lived tasks --

    def check_task_ages(self) -> list[trio.lowlevel.Task]:
        """Report each task older than ``max_task_age`` that was not reported before.

        Logs one ``observe.tasks.long_lived`` record per newly found task. Tasks that
        existed before :func:`open_task_monitor` installed the monitor are not aged. Must
        be called from trio; not a checkpoint.

        Returns:
            The tasks reported by this call (empty when ``max_task_age`` is ``None``).
        """
        if self._max_task_age is None:
            return []
        now = trio.current_time()
        found: list[tuple[trio.lowlevel.Task, float]] = []
        # Spawn order is age order: stop at the first task that is young enough.
        for task, spawned_at in self._tasks.items():
            if spawned_at is None or task in self._reported_old:
                continue
            age = now - spawned_at
            if age <= self._max_task_age:
                break
            found.append((task, age))
        for task, age in found:
            self._reported_old.add(task)
            self._long_lived_warnings += 1
            where = _where(task)
            _log.warning(
                "observe.tasks.long_lived",
                task=task.name,
                age_s=round(age, 3),
                max_age_s=self._max_task_age,
                function=where.function if where else None,
                where=where.location if where else None,
            )
        return [task for task, _age in found]

    # -- Used by open_task_monitor --

    def _track(self, task: trio.lowlevel.Task, spawned_at: float | None) -> None:
        self._tasks[task] = spawned_at
        if len(self._tasks) > self._high_water:
            self._high_water = len(self._tasks)

    def _track_existing(self, root: trio.lowlevel.Task) -> None:
        for task, _depth in _walk(root):
            if task not in self._tasks:
                self._track(task, None)

    def _exempt_from_aging(self, task: trio.lowlevel.Task) -> None:
        if task in self._tasks:
            self._tasks[task] = None


_UNKNOWN: Final = object()


def _trio_now() -> float | None:
    try:
        return trio.current_time()
    except RuntimeError:  # pragma: no cover - hooks only run inside trio.run
        return None


@asynccontextmanager
async def open_task_monitor(
    *,
    leak_threshold: int = 1000,
    leak_rearm: int | None = None,
    block_threshold: float | None = 0.1,
    max_task_age: float | None = None,
    check_interval: float = 5.0,
    clock: Callable[[], float] = time.perf_counter,
) -> AsyncIterator[TaskMonitor]:
    """Install a :class:`TaskMonitor` on the running trio loop for the ``async with`` body.

    On entry the monitor is added with :func:`trio.lowlevel.add_instrument` and every task
    that already exists (found by walking the tree from
    :func:`trio.lowlevel.current_root_task`) is counted. If ``max_task_age`` is given, a
    task named ``trio_micro.observe.task_monitor`` runs
    :meth:`TaskMonitor.check_task_ages` every ``check_interval`` seconds of trio time in
    a nursery owned by this context manager; it shows in :func:`format_task_tree` and
    never outlives the ``async with``. On exit that task is cancelled and the instrument
    removed.

    Entering is not a checkpoint; exiting is one (it waits for the checker to finish).
    Cancellation of the body cancels the checker too. An exception raised by the body comes
    out unwrapped (:func:`trio_micro.open_background_nursery`); only if the checker task
    failed too (it only logs and normally raises nothing) do both come out in a
    :class:`BaseExceptionGroup`.

    Args:
        leak_threshold: See :class:`TaskMonitor`.
        leak_rearm: See :class:`TaskMonitor`.
        block_threshold: See :class:`TaskMonitor`.
        max_task_age: See :class:`TaskMonitor`. ``None`` (the default) runs no checker task.
        check_interval: Seconds of trio time between long-lived-task checks.
        clock: See :class:`TaskMonitor`.

    Yields:
        The installed monitor, for :meth:`TaskMonitor.statistics`.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: A threshold or ``check_interval`` is not positive.
    """
    check_seconds("check_interval", check_interval)
    monitor = TaskMonitor(
        leak_threshold=leak_threshold,
        leak_rearm=leak_rearm,
        block_threshold=block_threshold,
        max_task_age=max_task_age,
        clock=clock,
    )
    # Both synchronous, with no checkpoint between them: no spawn can slip through.
    monitor._track_existing(trio.lowlevel.current_root_task())  # type: ignore[arg-type]
    trio.lowlevel.add_instrument(monitor)
    try:
        async with open_background_nursery() as nursery:
            if max_task_age is not None:
                nursery.start_soon(
                    _check_ages_forever,
                    monitor,
                    check_interval,
                    name="trio_micro.observe.task_monitor",
                )
            try:
                yield monitor
            finally:
                nursery.cancel_scope.cancel()
    finally:
        # KeyError: trio already removed it, after one of its hooks failed.
        with contextlib.suppress(KeyError):
            trio.lowlevel.remove_instrument(monitor)


async def _check_ages_forever(monitor: TaskMonitor, interval: float) -> None:
    # This task lives as long as the monitor by design; don't report it as long-lived.
    monitor._exempt_from_aging(trio.lowlevel.current_task())
    deadline = trio.current_time()
    while True:
        # Absolute deadlines: a slow check does not make the schedule drift.
        deadline += interval
        await trio.sleep_until(deadline)
        monitor.check_task_ages()


# -- Where a task is waiting --


@final
@dataclass(frozen=True, slots=True)
class _Where:
    function: str  # qualified name of the innermost frame outside trio
    location: str  # "path:line" of that frame
    awaiting: str | None  # the trio function it is waiting in, if any


def _where(task: trio.lowlevel.Task) -> _Where | None:
    """Find where ``task`` is suspended: the innermost frame outside trio's own code."""
    frames: list[tuple[FrameType, int]] = list(task.iter_await_frames())
    if not frames:
        return None  # finished (or not started)
    index = 0
    for i, (frame, _lineno) in enumerate(frames):
        if not frame.f_code.co_filename.startswith(_TRIO_DIR):
            index = i
    frame, lineno = frames[index]
    awaiting = None
    if index + 1 < len(frames):
        inner = frames[index + 1][0]
        awaiting = f"{inner.f_globals.get('__name__', '?')}.{inner.f_code.co_qualname}"
    return _Where(
        function=frame.f_code.co_qualname,
        location=f"{_short_path(frame.f_code.co_filename)}:{lineno}",
        awaiting=awaiting,
    )


@functools.lru_cache(maxsize=1024)
def _short_path(filename: str) -> str:
    """Shorten ``filename`` relative to the working directory or an import root."""
    best = filename
    try:
        bases = [os.getcwd(), *sys.path]
    except OSError:  # pragma: no cover - the working directory was removed
        bases = list(sys.path)
    for base in bases:
        if not base:
            continue
        try:
            rel = os.path.relpath(filename, base)
        except ValueError:  # pragma: no cover - another drive on Windows
            continue
        if not rel.startswith(os.pardir) and len(rel) < len(best):
            best = rel
    return best


def _walk(root: trio.lowlevel.Task) -> Iterator[tuple[trio.lowlevel.Task, int]]:
    """Yield ``(task, depth)`` for ``root`` and all its descendants, depth first."""
    stack = [(root, 0)]
    while stack:
        task, depth = stack.pop()
        yield task, depth
        children = [child for nursery in task.child_nurseries for child in nursery.child_tasks]
        stack.extend((child, depth + 1) for child in reversed(_sorted_tasks(children)))


def _sorted_tasks(tasks: list[trio.lowlevel.Task]) -> list[trio.lowlevel.Task]:
    # child_tasks is a frozenset; sort so that dumps are stable from call to call.
    return sorted(tasks, key=lambda t: (t.name, id(t)))


def format_task_tree(root: trio.lowlevel.Task | None = None) -> str:
    """Render the live task tree, like a goroutine dump, one task per line.

    Each task line gives the task's name, the innermost frame outside trio's own code
    (function, then ``path:line`` of the ``await`` it is suspended at) and, when it is
    waiting inside trio, the trio function it waits in. Child nurseries are ``nursery``
    lines with their tasks beneath::

        <init>: init at trio/_core/_run.py:2050, awaiting trio._core._run.NurseryManager.__aexit__
        └─ nursery
           ├─ <TrioToken.run_sync_soon task>: ...
           └─ app.main: main at app.py:12, awaiting trio._timeouts.sleep_forever

    Must be called from inside trio (to find the root). Not a checkpoint.

    Args:
        root: The task to start from; defaults to :func:`trio.lowlevel.current_root_task`.

    Returns:
        The tree, lines joined with ``"\\n"``, no trailing newline.
    """
    if root is None:
        found = trio.lowlevel.current_root_task()
        if found is None:  # pragma: no cover - only while trio is shutting down
            return ""
        root = found
    lines: list[str] = []
    _format_task(root, prefix="", branch="", lines=lines)
    return "\n".join(lines)


def _format_task(task: trio.lowlevel.Task, *, prefix: str, branch: str, lines: list[str]) -> None:
    where = _where(task)
    if where is None:
        detail = "finished"
    else:
        detail = f"{where.function} at {where.location}"
        if where.awaiting:
            detail += f", awaiting {where.awaiting}"
    lines.append(f"{prefix}{branch}{task.name}: {detail}")
    child_prefix = prefix + _continuation(branch)
    # A nursery with no tasks left (one that is closing) adds nothing to the picture.
    nurseries = [nursery for nursery in task.child_nurseries if nursery.child_tasks]
    for n, nursery in enumerate(nurseries):
        last_nursery = n == len(nurseries) - 1
        nursery_branch = "└─ " if last_nursery else "├─ "
        lines.append(f"{child_prefix}{nursery_branch}nursery")
        task_prefix = child_prefix + _continuation(nursery_branch)
        children = _sorted_tasks(list(nursery.child_tasks))
        for c, child in enumerate(children):
            child_branch = "└─ " if c == len(children) - 1 else "├─ "
            _format_task(child, prefix=task_prefix, branch=child_branch, lines=lines)


def _continuation(branch: str) -> str:
    if not branch:
        return ""
    return "   " if branch.startswith("└") else "│  "
