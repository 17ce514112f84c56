"""``amap``: map an async function over a stream of items, with bounded concurrency.

Theory of operation
===================

Like ``run_all`` (``_tasks.py``), ``amap`` runs at most ``limit`` worker tasks that pull
items from one shared iterator, instead of a task per item. Results go into a dict keyed
by input index (ordered mode) or a deque (unordered); nothing travels through a memory
channel.

``amap`` keeps a *window*: a worker may pull the next item only while fewer than
``limit + buffer`` items are in flight or finished but not yet consumed. In ordered
mode a slow head item therefore stalls new starts once the window is full instead of
buffering results without bound. Pulls from an async iterable are serialized by a flag
(a pull in progress makes the other workers park), because ``__anext__`` must not run
concurrently. Workers are spawned lazily, one per pulled item, up to ``limit``, so a
short input never costs ``limit`` tasks.

Speed. The consumer takes finished results without a scheduler trip each (a
cancellation check per result, a schedule point when it must wait or after
``CONSUMER_BUDGET`` results in a row), and a worker that never blocks checkpoints every
``CONSUMER_BUDGET`` items, so neither side can starve the loop. The ``buffer`` beyond
``limit`` is what lets both sides run for many items per scheduler round: with a window
of exactly ``limit`` every result costs the workers a park and a wake-up.

Errors follow errgroup semantics, as in ``run_all``: an exception in one job escapes
its worker, the nursery cancels every other worker and the body, and the ``async with``
raises the nursery's ``ExceptionGroup``.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, Generic, TypeVar, final

import trio

from .._validate import check_callable, check_int
from ._ratelimit import pacer
from ._receive import CONSUMER_BUDGET

__all__ = ["amap"]

T = TypeVar("T")
R = TypeVar("R")

_EMPTY: Any = object()  # marks "no result yet"; never a job's return value

#: Default number of finished results ``amap`` may hold beyond ``limit``.
_AMAP_BUFFER: Final = 256


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
        window: int,
        ordered: bool,
        pace: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self._nursery = nursery
        self._fn = fn
        self._iterator = iterator
        self._aiterator = aiterator
        self._limit = limit
        self._window = window
        self._ordered = ordered
        self._pace = pace
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
        self._budget = CONSUMER_BUDGET  # results left before a forced schedule point

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
        window = self._window
        pace = self._pace
        budget = CONSUMER_BUDGET
        while True:
            while self._outstanding >= window or self._pulling:
                if self._exhausted:
                    return
                await self._pull_lot.park()
                budget = CONSUMER_BUDGET
            budget -= 1
            if not budget:  # never blocked for a while: let the others run
                budget = CONSUMER_BUDGET
                await trio.lowlevel.checkpoint()
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
            if pace is not None:
                await pace()
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
        wait or after ``CONSUMER_BUDGET`` results taken without waiting, so a
        consumer that never waits cannot starve the other tasks whatever ``limit``.
        """
        if self._closed:
            raise trio.ClosedResourceError("amap results used after their `async with` exited")
        if self._busy:
            raise trio.BusyResourceError("another task is already iterating over these results")
        self._budget -= 1
        if self._budget:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            self._budget = CONSUMER_BUDGET
            await trio.lowlevel.checkpoint()
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
            self._budget = CONSUMER_BUDGET
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
    buffer: int = _AMAP_BUFFER,
    max_per_second: float | None = None,
) -> AbstractAsyncContextManager[AsyncIterator[R]]:
    """Map ``fn`` over ``items`` with at most ``limit`` calls at once; iterate the results.

    ::

        async with amap(fetch, urls, limit=10) as results:
            async for page in results:
                ...

    A context manager rather than an async generator, because it owns tasks and an
    async generator must not own a nursery in Trio.

    ``items`` may be a sync or async iterable of any length, even infinite; it is read
    lazily, one item per free slot. Memory is bounded by ``limit + buffer``: at most
    that many items are in flight or finished but not yet yielded, in both modes.
    With ``ordered=True`` (the default) results come in input order, so a slow item
    stalls new starts once the window is full; with ``ordered=False`` they come in
    completion order. ``amap`` does not close ``items``; wrap an async generator in
    ``contextlib.aclosing`` if it must be closed promptly after an early exit.

    Leaving the block early (``break``, an exception) or cancelling it cancels the
    pending calls; no task outlives the block. The results iterator is single-consumer
    (a second concurrent ``__anext__`` raises :class:`trio.BusyResourceError`) and
    raises :class:`trio.ClosedResourceError` once the block has exited. Each step of it
    is a cancellation point, and a schedule point whenever it has to wait or after
    ``CONSUMER_BUDGET`` (64) results taken without waiting: ``async for`` over it does
    not pay a scheduler trip per result.

    Errors: an exception in ``fn`` (or in iterating ``items``) cancels the other calls
    and the body of the block, so iteration stops; the ``async with`` then raises an
    :class:`ExceptionGroup` holding it (several if calls fail concurrently), as
    :func:`open_task_group` does. An exception raised by the body is wrapped in the
    group too.

    Args:
        fn: An async function of one argument.
        items: The arguments, a sync or async iterable.
        limit: The most calls that may run at once.
        ordered: Yield results in input order (``True``) or as they complete.
        buffer: How many finished results may wait for the consumer beyond ``limit``
            (>= 0); ``limit + buffer`` is the window. ``buffer=0`` keeps at most
            ``limit`` items pulled and not yet yielded, at the cost of a scheduler
            round per result.
        max_per_second: Start at most this many calls per second (aiometer's
            ``max_per_second``), paced by one shared ``RateLimiter(max_per_second,
            burst=1)``. ``None``: no pacing.

    Returns:
        An async context manager yielding an async iterator of results.

    Raises:
        TypeError: ``fn`` is not callable, ``items`` is not iterable, ``limit`` or
            ``buffer`` is not an int, or ``max_per_second`` is not a number or None.
        ValueError: ``limit`` is less than 1, ``buffer`` less than 0, or
            ``max_per_second`` not finite and > 0.
    """
    check_callable("fn", fn, expected="an async callable")
    check_int("limit", limit, minimum=1)
    window = limit + check_int("buffer", buffer, minimum=0)
    pace = pacer(max_per_second)
    iterator: Iterator[T] | None = None
    aiterator: AsyncIterator[T] | None = None
    if isinstance(items, AsyncIterable):
        aiterator = aiter(items)
    else:
        try:
            iterator = iter(items)
        except TypeError:
            raise TypeError(f"items must be an iterable or async iterable, got {items!r}") from None
    return _amap(fn, iterator, aiterator, limit, window, ordered, pace)


@asynccontextmanager
async def _amap(
    fn: Callable[[T], Awaitable[R]],
    iterator: Iterator[T] | None,
    aiterator: AsyncIterator[T] | None,
    limit: int,
    window: int,
    ordered: bool,
    pace: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[AsyncIterator[R]]:
    async with trio.open_nursery(strict_exception_groups=True) as nursery:
        results = _AmapResults(nursery, fn, iterator, aiterator, limit, window, ordered, pace)
        results._start_worker()
        try:
            yield results
        finally:
            results._closed = True
            nursery.cancel_scope.cancel()
