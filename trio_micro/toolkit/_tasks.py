"""Bounded concurrency: a task group with a limit, and ``run_all``.

The article's ``ConcurrentProcessor`` and Go's ``errgroup`` with ``SetLimit``, the
Trio way: every task lives in a nursery the caller can see, producers wait for a free
slot instead of piling up tasks, and the first failure cancels the rest.

Theory of operation
===================

``open_task_group`` wraps one nursery. A slot counter and a
:class:`trio.lowlevel.ParkingLot` stand in for a semaphore: ``start_soon`` takes a slot
or parks, and a finishing task hands its slot *directly* to the longest waiter
(``unpark`` without decrementing), so waiters are served in FIFO order and a fast
producer cannot barge past them. Each task runs inside a small wrapper that counts
the outcome and releases the slot.

``run_all`` (and ``amap``, in ``_amap.py``) do not spawn a task per job: spawning a
task and waiting on a limiter costs several scheduling rounds per job. Instead they
run at most ``limit`` worker tasks that pull jobs from one shared iterator. Pulling
from a synchronous iterator never awaits, so no lock is needed: Trio only switches
tasks at checkpoints. Results go straight into a preallocated list; nothing travels
through a memory channel, so the only scheduling cost per job is the job's own
checkpoints. With ``max_per_second`` every worker takes a token from one shared
:class:`~trio_micro.toolkit.RateLimiter` (``burst=1``) before starting a job.

Errors follow errgroup semantics: an exception in one job escapes its worker, the
nursery cancels every other worker, and ``run_all`` raises the nursery's
``ExceptionGroup``. Nurseries here are always opened with
``strict_exception_groups=True``, so the group is raised even for a single error, and
it may hold several exceptions when jobs fail concurrently.
"""

from __future__ import annotations

import math
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, TypeVarTuple, Unpack, final, overload

import trio

from .._validate import check_callable, check_int, check_optional_int
from ._ratelimit import pacer

__all__ = [
    "TaskGroup",
    "TaskGroupStatistics",
    "open_task_group",
    "run_all",
]

T = TypeVar("T")
R = TypeVar("R")
PosArgsT = TypeVarTuple("PosArgsT")


# --------------------------------------------------------------------------- TaskGroup


@final
@dataclass(frozen=True, slots=True)
class TaskGroupStatistics:
    """A snapshot of a :class:`TaskGroup`, returned by :meth:`TaskGroup.statistics`.

    Attributes:
        limit: The most tasks that may run at once, or ``None`` for no limit.
        running: Slots in use: tasks running, plus tasks being started.
        waiting: Calls to ``start_soon`` / ``start`` parked for a free slot.
        completed: Tasks that returned normally.
        failed: Tasks that raised an exception. Tasks that ended with
            :class:`trio.Cancelled` count as neither completed nor failed.
    """

    limit: int | None
    running: int
    waiting: int
    completed: int
    failed: int


@final
class TaskGroup:
    """A nursery that runs at most ``limit`` tasks at once; see :func:`open_task_group`.

    Don't construct this yourself: :func:`open_task_group` creates it.
    """

    __slots__ = (
        "_closed",
        "_completed",
        "_failed",
        "_limit",
        "_lot",
        "_max",
        "_nursery",
        "_running",
    )

    def __init__(self, nursery: trio.Nursery, limit: int | None) -> None:
        self._nursery = nursery
        self._limit = limit
        self._max: float = math.inf if limit is None else limit
        self._running = 0
        self._completed = 0
        self._failed = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The cancel scope of the underlying nursery: ``cancel()`` stops every task."""
        return self._nursery.cancel_scope

    def statistics(self) -> TaskGroupStatistics:
        """Return a :class:`TaskGroupStatistics` snapshot. Not a checkpoint."""
        return TaskGroupStatistics(
            limit=self._limit,
            running=self._running,
            waiting=len(self._lot),
            completed=self._completed,
            failed=self._failed,
        )

    async def start_soon(
        self,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[object]],
        *args: *PosArgsT,
        name: object = None,
    ) -> None:
        """Start ``fn(*args)`` as a task in the group, waiting for a free slot first.

        This is the backpressure point: when ``limit`` tasks are running the caller
        waits, so a loop that starts a million jobs never holds more than ``limit``
        tasks. Waiters get slots in FIFO order.

        Always a checkpoint. If cancelled while waiting, no task is started and the
        call raises :class:`trio.Cancelled`; once a slot is taken the task is started
        and the call can no longer be cancelled.

        Args:
            fn: An async function; it is called as ``fn(*args)`` once a slot is free.
            *args: Positional arguments for ``fn``.
            name: The task's name for debugging, as in ``nursery.start_soon``.

        Raises:
            TypeError: ``fn`` is not callable, or did not return a coroutine.
            RuntimeError: The group has closed: its ``async with`` block has exited
                and all its tasks have finished. This is what ``nursery.start_soon``
                raises for a closed nursery ("Nursery is closed to new arrivals").
        """
        self._check_open(fn)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._running < self._max:
            self._running += 1
            self._spawn(fn, args, name)
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await self._lot.park()  # woken by _release, which hands us its slot
            self._spawn(fn, args, name)

    def start_soon_nowait(
        self,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[object]],
        *args: *PosArgsT,
        name: object = None,
    ) -> None:
        """Like :meth:`start_soon`, but raise instead of waiting when the group is full.

        Not a checkpoint.

        Raises:
            trio.WouldBlock: ``limit`` tasks are already running.
            TypeError: ``fn`` is not callable, or did not return a coroutine.
            RuntimeError: The group has closed (as ``nursery.start_soon`` does).
        """
        self._check_open(fn)
        if self._running >= self._max:
            raise trio.WouldBlock
        self._running += 1
        self._spawn(fn, args, name)

    async def start(
        self,
        fn: Callable[..., Awaitable[object]],
        *args: object,
        name: object = None,
    ) -> Any:
        """Wait for a free slot, then start ``fn`` like ``nursery.start`` does.

        ``fn`` must accept a ``task_status`` keyword argument and call
        ``task_status.started(value)``; this call returns ``value`` (``None`` if
        ``started()`` got no argument). The task holds its slot from before it starts
        until it ends. If ``fn`` raises before calling ``started()``, the exception
        propagates from this call (not from the group) and the task counts as failed.

        Always a checkpoint. Cancelling this call while it waits for a slot starts
        nothing; cancelling it while ``fn`` is starting up cancels ``fn``, as with
        ``nursery.start``.

        Raises:
            TypeError: ``fn`` is not callable.
            RuntimeError: The group has closed (as ``nursery.start`` does).
        """
        self._check_open(fn)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._running < self._max:
            self._running += 1
        else:
            await self._lot.park()
        entered = False

        async def run(*, task_status: trio.TaskStatus[Any]) -> None:
            nonlocal entered
            entered = True
            try:
                await fn(*args, task_status=task_status)
            except trio.Cancelled:
                raise
            except BaseException:
                self._failed += 1
                raise
            else:
                self._completed += 1
            finally:
                self._release()

        try:
            return await self._nursery.start(run, name=fn if name is None else name)
        except BaseException:
            if not entered:  # the task never ran, so its wrapper did not release
                self._release()
            raise

    def _check_open(self, fn: object) -> None:
        if self._closed:
            raise RuntimeError("Nursery is closed to new arrivals")
        check_callable("fn", fn, expected="an async callable")

    def _spawn(
        self, fn: Callable[..., Awaitable[object]], args: tuple[Any, ...], name: object
    ) -> None:
        # Called with a slot already held; gives it back if the task cannot start.
        coro: object = None
        try:
            # Call fn here, in the caller, as trio does: a sync function is reported
            # to the caller of start_soon, not as a failure inside the group.
            coro = fn(*args)
            if not isinstance(coro, Coroutine):
                raise TypeError(
                    f"start_soon expected an async function, but {fn!r} returned {coro!r}"
                )
            self._nursery.start_soon(self._run, coro, name=fn if name is None else name)
        except BaseException:
            if isinstance(coro, Coroutine):
                coro.close()  # avoid "coroutine was never awaited"
            self._release()
            raise

    async def _run(self, coro: Coroutine[Any, Any, object]) -> None:
        try:
            await coro
        except trio.Cancelled:
            raise
        except BaseException:
            self._failed += 1
            raise
        else:
            self._completed += 1
        finally:
            self._release()

    def _release(self) -> None:
        if self._lot:
            self._lot.unpark()  # hand the slot straight over: FIFO, no barging
        else:
            self._running -= 1


def open_task_group(*, limit: int | None = None) -> AbstractAsyncContextManager[TaskGroup]:
    """Open a :class:`TaskGroup`: a nursery whose ``start_soon`` waits for a free slot.

    Go's ``errgroup`` with ``SetLimit``::

        async with open_task_group(limit=10) as group:
            for url in urls:                        # may be millions
                await group.start_soon(fetch, url)  # waits while 10 are running

    Like a nursery, leaving the block waits for every task, and tasks may start more
    tasks in the group until the last one has finished. After that the group is
    closed and ``start_soon`` / ``start_soon_nowait`` / ``start`` raise
    ``RuntimeError``, exactly as a closed nursery does.

    Errors: the first exception raised by a task (or by the body) cancels every other
    task and the body, as a nursery does. When all have finished, the ``async with``
    raises an :class:`ExceptionGroup` (``BaseExceptionGroup`` for e.g.
    ``KeyboardInterrupt``) holding the exception; it may hold several when tasks fail
    concurrently. The group is raised even for a single exception
    (``strict_exception_groups=True``): catch with ``except*``.

    Entering is not a checkpoint; leaving is, as for a nursery. Cancelling the
    enclosing scope, or ``group.cancel_scope.cancel()``, cancels every task.

    Args:
        limit: The most tasks that may run at once; ``None`` for no limit.

    Raises:
        TypeError: ``limit`` is not an int or ``None``.
        ValueError: ``limit`` is less than 1.
    """
    check_optional_int("limit", limit, minimum=1)
    return _task_group(limit)


@asynccontextmanager
async def _task_group(limit: int | None) -> AsyncIterator[TaskGroup]:
    group: TaskGroup | None = None
    try:
        async with trio.open_nursery(strict_exception_groups=True) as nursery:
            group = TaskGroup(nursery, limit)
            yield group
    finally:
        if group is not None:
            group._closed = True


# ----------------------------------------------------------------------------- run_all


async def _run_all_fail_fast(
    jobs: Iterator[tuple[int, Callable[[], Awaitable[Any]]]],
    results: list[Any],
    pace: Callable[[], Awaitable[None]] | None,
) -> None:
    # Workers share one iterator; next() never awaits, so pulls cannot interleave.
    for index, fn in jobs:
        if pace is not None:
            await pace()
        results[index] = await fn()


async def _run_all_collect(
    jobs: Iterator[tuple[int, Callable[[], Awaitable[Any]]]],
    results: list[Any],
    pace: Callable[[], Awaitable[None]] | None,
) -> None:
    for index, fn in jobs:
        if pace is not None:
            await pace()
        try:
            results[index] = await fn()
        except Exception as exc:  # BaseException (Cancelled, KeyboardInterrupt) propagates
            results[index] = exc


@overload
async def run_all(
    fns: Iterable[Callable[[], Awaitable[T]]],
    *,
    limit: int,
    return_exceptions: Literal[False] = False,
    max_per_second: float | None = None,
) -> list[T]: ...


@overload
async def run_all(
    fns: Iterable[Callable[[], Awaitable[T]]],
    *,
    limit: int,
    return_exceptions: Literal[True],
    max_per_second: float | None = None,
) -> list[T | Exception]: ...


@overload
async def run_all(
    fns: Iterable[Callable[[], Awaitable[T]]],
    *,
    limit: int,
    return_exceptions: bool,
    max_per_second: float | None = None,
) -> list[T | Exception]: ...


async def run_all(
    fns: Iterable[Callable[[], Awaitable[Any]]],
    *,
    limit: int,
    return_exceptions: bool = False,
    max_per_second: float | None = None,
) -> list[Any]:
    """Run zero-argument async callables, at most ``limit`` at once; return results.

    ::

        pages = await run_all([functools.partial(fetch, url) for url in urls], limit=10)

    ``fns`` is read completely before any job starts (the result list is as long as
    the input anyway) and every element is checked to be callable. Jobs start in input
    order; at most ``limit`` run at once, on at most ``limit`` worker tasks.

    Errors: by default the first exception cancels the remaining jobs and, once they
    have stopped, is raised inside an :class:`ExceptionGroup`, exactly as from
    :func:`open_task_group` (several exceptions if jobs fail concurrently; catch with
    ``except*``). With ``return_exceptions=True`` every job runs: an :class:`Exception`
    raised by a job takes the place of its result, and nothing is raised.
    ``BaseException``s that are not ``Exception``s (``trio.Cancelled``,
    ``KeyboardInterrupt``) always propagate, as they would from a nursery: in a
    ``BaseExceptionGroup``, which the cancel scope that caused a ``Cancelled`` absorbs.

    Always a checkpoint. Cancellation cancels every job; no results are returned.

    Args:
        fns: Zero-argument async callables, e.g. ``functools.partial(fetch, i)``.
        limit: The most jobs that may run at once.
        return_exceptions: Collect exceptions as results instead of failing fast.
        max_per_second: Start at most this many jobs per second (aiometer's
            ``max_per_second``): starts are paced by one shared
            ``RateLimiter(max_per_second, burst=1)``, so they are at least
            ``1 / max_per_second`` seconds apart. ``None``: no pacing.

    Returns:
        The results, in the order of ``fns`` (with ``Exception``s in place of results
        when ``return_exceptions=True``).

    Raises:
        TypeError: ``fns`` is not iterable, an element is not callable, ``limit``
            is not an int, or ``max_per_second`` is not a number or ``None``.
        ValueError: ``limit`` is less than 1, or ``max_per_second`` is not finite
            and > 0.
        ExceptionGroup: A job raised (only when ``return_exceptions`` is false).
    """
    check_int("limit", limit, minimum=1)
    pace = pacer(max_per_second)
    try:
        iterator = iter(fns)
    except TypeError:
        raise TypeError(
            f"fns must be an iterable of zero-argument async callables, got {fns!r}"
        ) from None
    jobs = list(iterator)
    for index, fn in enumerate(jobs):
        check_callable(f"fns[{index}]", fn, expected="an async callable")
    await trio.lowlevel.checkpoint_if_cancelled()
    results: list[Any] = [None] * len(jobs)
    if not jobs:
        await trio.lowlevel.checkpoint()
        return results
    worker = _run_all_collect if return_exceptions else _run_all_fail_fast
    shared = enumerate(jobs)
    async with trio.open_nursery(strict_exception_groups=True) as nursery:
        for _ in range(min(limit, len(jobs))):
            nursery.start_soon(worker, shared, results, pace)
    return results
