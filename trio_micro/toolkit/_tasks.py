"""Bounded concurrency: a task group with a limit, ``run_all`` and ``amap``.

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

``run_all`` and ``amap`` do not spawn a task per job: spawning a task and waiting on
a limiter costs several scheduling rounds per job. Instead they run at most ``limit``
worker tasks that pull jobs from one shared iterator. Pulling from a synchronous
iterator never awaits, so no lock is needed: Trio only switches tasks at checkpoints.
Results go straight into a preallocated list (``run_all``) or a dict keyed by input
index (``amap``); nothing travels through a memory channel, so the only scheduling
cost per job is the job's own checkpoints.

``amap`` keeps a *window*: a worker may pull the next item only while fewer than
``limit`` items are in flight or finished but not yet consumed. In ordered mode a slow
head item therefore stalls new starts instead of buffering results without bound.
Pulls from an async iterable are serialized by a flag (a pull in progress makes the
other workers park), because ``__anext__`` must not run concurrently. Workers are
spawned lazily, one per pulled item, up to ``limit``, so a short input never costs
``limit`` tasks.

Errors follow errgroup semantics: an exception in one job escapes its worker, the
nursery cancels every other worker, and the ``async with`` (or ``run_all``) raises
the nursery's ``ExceptionGroup``. Nurseries here are always opened with
``strict_exception_groups=True``, so the group is raised even for a single error, and
it may hold several exceptions when jobs fail concurrently.
"""

from __future__ import annotations

import collections
import math
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, TypeVarTuple, Unpack, final, overload

import trio

from .._validate import check_callable, check_int, check_optional_int

__all__ = [
    "TaskGroup",
    "TaskGroupStatistics",
    "amap",
    "open_task_group",
    "run_all",
]

T = TypeVar("T")
R = TypeVar("R")
PosArgsT = TypeVarTuple("PosArgsT")

_EMPTY: Any = object()  # marks "no result yet"; never a job's return value


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
    jobs: Iterator[tuple[int, Callable[[], Awaitable[Any]]]], results: list[Any]
) -> None:
    # Workers share one iterator; next() never awaits, so pulls cannot interleave.
    for index, fn in jobs:
        results[index] = await fn()


async def _run_all_collect(
    jobs: Iterator[tuple[int, Callable[[], Awaitable[Any]]]], results: list[Any]
) -> None:
    for index, fn in jobs:
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
) -> list[T]: ...


@overload
async def run_all(
    fns: Iterable[Callable[[], Awaitable[T]]],
    *,
    limit: int,
    return_exceptions: Literal[True],
) -> list[T | Exception]: ...


@overload
async def run_all(
    fns: Iterable[Callable[[], Awaitable[T]]],
    *,
    limit: int,
    return_exceptions: bool,
) -> list[T | Exception]: ...


async def run_all(
    fns: Iterable[Callable[[], Awaitable[Any]]],
    *,
    limit: int,
    return_exceptions: bool = False,
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

    Returns:
        The results, in the order of ``fns`` (with ``Exception``s in place of results
        when ``return_exceptions=True``).

    Raises:
        TypeError: ``fns`` is not iterable, an element is not callable, or ``limit``
            is not an int.
        ValueError: ``limit`` is less than 1.
        ExceptionGroup: A job raised (only when ``return_exceptions`` is false).
    """
    check_int("limit", limit, minimum=1)
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
            nursery.start_soon(worker, shared, results)
    return results


# -------------------------------------------------------------------------------- amap


@final
class _AmapResults(Generic[T, R]):
    """The async iterator that ``amap`` yields; also owns the worker logic."""

    def __init__(
        self,
        nursery: trio.Nursery,
        fn: Callable[[T], Awaitable[R]],
        iterator: Iterator[T] | None,
        aiterator: AsyncIterator[T] | None,
        limit: int,
        ordered: bool,
    ) -> None:
        self._nursery = nursery
        self._fn = fn
        self._iterator = iterator
        self._aiterator = aiterator
        self._limit = limit
        self._ordered = ordered
        self._workers = 0
        self._pulled = 0  # items taken from the source; the next item's index
        self._head = 0  # index of the next result to yield (ordered mode)
        self._outstanding = 0  # pulled (or being pulled) but not yet yielded
        self._pulling = False  # an async pull is in progress
        self._exhausted = False
        self._by_index: dict[int, R] = {}  # ordered mode: finished results
        self._queue: collections.deque[R] = collections.deque()  # unordered mode
        self._pull_lot = trio.lowlevel.ParkingLot()  # workers waiting to pull
        self._result_lot = trio.lowlevel.ParkingLot()  # the consumer, waiting
        self._busy = False
        self._closed = False

    def _start_worker(self) -> None:
        self._workers += 1
        self._nursery.start_soon(self._worker)

    def _exhaust(self) -> None:
        self._exhausted = True
        self._outstanding -= 1  # give back the reservation of the failed pull
        self._pull_lot.unpark_all()  # parked workers see the end and exit
        self._result_lot.unpark_all()  # the consumer may be waiting for the end

    async def _worker(self) -> None:
        fn = self._fn
        limit = self._limit
        while True:
            while self._outstanding >= limit or self._pulling:
                if self._exhausted:
                    return
                await self._pull_lot.park()
            if self._exhausted:
                return
            self._outstanding += 1  # reserve a place in the window before pulling
            if self._iterator is not None:
                try:
                    item = next(self._iterator)
                except StopIteration:
                    self._exhaust()
                    return
            else:
                assert self._aiterator is not None
                self._pulling = True
                try:
                    item = await self._aiterator.__anext__()
                except StopAsyncIteration:
                    self._exhaust()
                    return
                finally:
                    self._pulling = False
                    if self._pull_lot:
                        self._pull_lot.unpark()
            index = self._pulled
            self._pulled += 1
            if self._workers < limit:
                self._start_worker()
            value = await fn(item)
            if self._ordered:
                self._by_index[index] = value
                if index == self._head and self._result_lot:
                    self._result_lot.unpark()
            else:
                self._queue.append(value)
                if self._result_lot:
                    self._result_lot.unpark()

    def __aiter__(self) -> _AmapResults[T, R]:
        return self

    async def __anext__(self) -> R:
        """Return the next result, waiting for it if necessary.

        A cancellation point on every call, and a schedule point whenever it has to
        wait; a consumer that never waits still yields at least every ``limit``
        results, because the window then runs dry.
        """
        if self._closed:
            raise trio.ClosedResourceError("amap results used after their `async with` exited")
        if self._busy:
            raise trio.BusyResourceError("another task is already iterating over these results")
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._ordered:
                value = self._by_index.pop(self._head, _EMPTY)
            else:
                value = self._queue.popleft() if self._queue else _EMPTY
            if value is not _EMPTY:
                break
            if self._exhausted and self._outstanding == 0:
                raise StopAsyncIteration
            self._busy = True
            try:
                await self._result_lot.park()
            finally:
                self._busy = False
        self._head += 1
        self._outstanding -= 1
        if self._pull_lot:
            self._pull_lot.unpark()
        return value  # type: ignore[no-any-return]


def amap(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int,
    ordered: bool = True,
) -> AbstractAsyncContextManager[AsyncIterator[R]]:
    """Map ``fn`` over ``items`` with at most ``limit`` calls at once; iterate the results.

    ::

        async with amap(fetch, urls, limit=10) as results:
            async for page in results:
                ...

    A context manager rather than an async generator, because it owns tasks and an
    async generator must not own a nursery in Trio.

    ``items`` may be a sync or async iterable of any length, even infinite; it is read
    lazily, one item per free slot. Memory is bounded by ``limit``: at most ``limit``
    items are in flight or finished but not yet yielded, in both modes. With
    ``ordered=True`` (the default) results come in input order, so a slow item stalls
    new starts once the window is full; with ``ordered=False`` they come in
    completion order. ``amap`` does not close ``items``; wrap an async generator in
    ``contextlib.aclosing`` if it must be closed promptly after an early exit.

    Leaving the block early (``break``, an exception) or cancelling it cancels the
    pending calls; no task outlives the block. The results iterator is single-consumer
    (a second concurrent ``__anext__`` raises :class:`trio.BusyResourceError`) and
    raises :class:`trio.ClosedResourceError` once the block has exited. Each step of it
    is a cancellation point, and a schedule point whenever it has to wait.

    Errors: an exception in ``fn`` (or in iterating ``items``) cancels the other calls
    and the body of the block, so iteration stops; the ``async with`` then raises an
    :class:`ExceptionGroup` holding it (several if calls fail concurrently), as
    :func:`open_task_group` does. An exception raised by the body is wrapped in the
    group too.

    Args:
        fn: An async function of one argument.
        items: The arguments, a sync or async iterable.
        limit: The most calls that may run at once (and the window size).
        ordered: Yield results in input order (``True``) or as they complete.

    Returns:
        An async context manager yielding an async iterator of results.

    Raises:
        TypeError: ``fn`` is not callable, ``items`` is not iterable, or ``limit`` is
            not an int.
        ValueError: ``limit`` is less than 1.
    """
    check_callable("fn", fn, expected="an async callable")
    check_int("limit", limit, minimum=1)
    iterator: Iterator[T] | None = None
    aiterator: AsyncIterator[T] | None = None
    if isinstance(items, AsyncIterable):
        aiterator = aiter(items)
    else:
        try:
            iterator = iter(items)
        except TypeError:
            raise TypeError(f"items must be an iterable or async iterable, got {items!r}") from None
    return _amap(fn, iterator, aiterator, limit, ordered)


@asynccontextmanager
async def _amap(
    fn: Callable[[T], Awaitable[R]],
    iterator: Iterator[T] | None,
    aiterator: AsyncIterator[T] | None,
    limit: int,
    ordered: bool,
) -> AsyncIterator[AsyncIterator[R]]:
    async with trio.open_nursery(strict_exception_groups=True) as nursery:
        results = _AmapResults(nursery, fn, iterator, aiterator, limit, ordered)
        results._start_worker()
        try:
            yield results
        finally:
            results._closed = True
            nursery.cancel_scope.cancel()
