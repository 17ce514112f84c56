"""Fan-out, fan-in, broadcast and batching on trio memory channels.

Theory of operation
-------------------
Every pattern here is an async context manager that opens one nursery and runs its
helper tasks in it, so no task outlives the ``async with`` (DESIGN.md section 3).
The caller receives :class:`FastReceiveChannel` objects (trio memory channels with an
``async for`` that drains the buffer); all buffers are bounded, so a slow consumer
slows the producers down instead of growing memory.

Ownership. A pattern takes ownership of the receive channels (and async iterators)
it reads from: it closes them when it stops for any reason. That is what turns
"the consumer went away" into :class:`trio.BrokenResourceError` for the producer
upstream instead of a producer blocked forever in ``send``.

Closing paths, in every pattern:

* input ends -> the output channels end (``EndOfChannel``; ``async for`` stops);
* the consumer closes an output channel -> noticed the next time a helper task
  delivers an item to it (trio has no "receiver closed" notification for a task
  that is not sending); the helpers then stop and close their inputs;
* the ``async with`` body is left -> the helpers are cancelled, outputs and inputs
  are closed;
* a helper raises (``fn`` in :func:`open_fan_out`, or an input channel) -> the
  nursery cancels everything, including the body, and the error surfaces from
  the ``async with`` in an :class:`ExceptionGroup`; an error of the body alone comes
  out unwrapped (:func:`open_background_nursery`).

Speed. ``await send()`` / ``await receive()`` cost one trip through the scheduler
per item even when they need not block. The helpers here move items with
``receive_nowait`` / ``send_nowait`` and only ``await`` when they must block. A
task that never blocks still executes a checkpoint every ``_CHECKPOINT_EVERY``
items, so cancellation is honoured promptly and other tasks get to run. Fan-out
workers pull straight from a sync iterable or a memory channel (both are safe to
share between tasks without a lock); pulls from any other channel or async
iterator are serialized with a :class:`trio.Lock`. On the consuming side,
``async for`` over the :class:`FastReceiveChannel` takes buffered items without a
scheduler trip each (a schedule point every ``CONSUMER_BUDGET`` items), and
:func:`receive_batch` drains everything buffered with one checkpoint.

Why one module past 600 lines: the three patterns are one mechanism -- the ownership and
closing paths above, the nowait movers and their checkpoint budget, the input checks --
and reading them side by side is how a change to one is kept true for the others. What
has its own rules lives apart: :mod:`._receive` (the consumer's fast ``async for``),
:mod:`._throttle` (pacing) and :mod:`._amap`. The next seam, if it grows, is broadcast.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, TypeVar

import trio

from .._background import open_background_nursery
from .._validate import check_callable, check_int
from ._ratelimit import RateLimiter
from ._receive import FastReceiveChannel

__all__ = [
    "open_broadcast",
    "open_fan_out",
    "open_merge",
    "receive_batch",
]

T = TypeVar("T")
R = TypeVar("R")

#: Items a helper task moves without blocking before it forces a checkpoint.
_CHECKPOINT_EVERY: Final = 64

#: Default size of the results buffer of :func:`open_fan_out`.
_FAN_OUT_BUFFER: Final = 256


# --- argument checks -----------------------------------------------------------------


def _check_buffer(value: object) -> int:
    # trio accepts math.inf; we do not: buffers are bounded by design.
    return check_int("buffer", value, minimum=0)


def _check_channel(name: str, value: object) -> trio.abc.ReceiveChannel[Any]:
    if not isinstance(value, trio.abc.ReceiveChannel):
        raise TypeError(f"{name} must be a trio receive channel, got {value!r}")
    return value


# --- shared helpers --------------------------------------------------------------------


async def _aclose_input(source: object) -> None:
    """Close a channel or async iterator we own, without blocking.

    Not a checkpoint for memory channels; otherwise ``aclose()`` in a cancelled scope
    (like ``trio.aclose_forcefully``) that is also shielded, so that an outer
    cancellation does not escape and skip the other inputs a caller closes next.
    """
    if isinstance(source, trio.MemoryReceiveChannel | FastReceiveChannel):
        source.close()
        return
    aclose = getattr(source, "aclose", None)
    if aclose is None:
        return
    with trio.CancelScope(shield=True) as scope:
        scope.cancel()
        await aclose()


def _is_memory(source: object) -> bool:
    """Whether ``source`` is a memory channel (one with ``receive_nowait``)."""
    return isinstance(source, trio.MemoryReceiveChannel | FastReceiveChannel)


def _receive_nowait_of(source: trio.abc.ReceiveChannel[T]) -> Callable[[], T] | None:
    """The fast path of a memory channel, or None for a channel without one."""
    if isinstance(source, trio.MemoryReceiveChannel | FastReceiveChannel):
        return source.receive_nowait
    return None


class _Crew:
    """Cancel scopes of sibling helper tasks that must stop together.

    Helpers run directly in the pattern's nursery (so errors surface in one flat
    ``ExceptionGroup``); stopping them must not cancel the caller's body, hence one
    scope per helper instead of cancelling the nursery.
    """

    __slots__ = ("_scopes", "running", "stopped")

    def __init__(self, size: int = 0) -> None:
        self._scopes: list[trio.CancelScope] = []
        self.running = size
        self.stopped = False

    def scope(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        if self.stopped:
            scope.cancel()
        self._scopes.append(scope)
        return scope

    def stop(self) -> None:
        self.stopped = True
        for scope in self._scopes:
            scope.cancel()


# --- fan-out ---------------------------------------------------------------------------


def open_fan_out(
    source: trio.abc.ReceiveChannel[T] | Iterable[T] | AsyncIterable[T],
    fn: Callable[[T], Awaitable[R]],
    *,
    workers: int,
    buffer: int = _FAN_OUT_BUFFER,
) -> AbstractAsyncContextManager[FastReceiveChannel[R]]:
    """Apply ``fn`` to every item of ``source`` in ``workers`` concurrent tasks.

    Usage::

        async with open_fan_out(urls, fetch, workers=8) as results:
            async for page in results:
                ...

    The results come in completion order, not input order. When ``source`` is
    exhausted and every worker is done, the results channel ends. Arguments are
    checked when this function is called, before any ``async with``.

    Args:
        source: A trio receive channel, a sync iterable or an async iterable. A
            memory channel or a sync iterable is shared by the workers directly
            (``next()`` runs in the event loop, so it must not block); any other
            channel or async iterator is read by one worker at a time.
            Channels and async iterators become owned by the fan-out and are
            closed when it stops, so an upstream producer gets
            ``trio.BrokenResourceError`` instead of hanging.
        fn: Async callable applied to each item; its result is sent to the results
            channel.
        workers: Number of worker tasks (>= 1).
        buffer: Size of the results buffer (>= 0). When it is full the workers wait.

    Returns:
        An async context manager yielding the results channel, a
        :class:`FastReceiveChannel` (a memory channel with a fast ``async for``).

    Raises:
        TypeError: ``source`` is not a channel or (async) iterable, ``fn`` is not
            callable, or ``workers`` / ``buffer`` is not an int.
        ValueError: ``workers`` < 1 or ``buffer`` < 0.
        ExceptionGroup: Raised by ``async with``: an exception from ``fn`` or from
            ``source`` cancels the workers and the body and is raised inside an
            ``ExceptionGroup`` (with the body's exception, if it raised too). An
            exception from the body alone comes out unwrapped.

    Checkpoints and cancellation: entering the block is not a checkpoint; leaving it is.
    Leaving the block (normally or not) cancels the work in progress and closes the
    source. If the consumer closes the results channel, the workers notice when they
    next deliver a result; they then stop and the source is closed, and the block
    exits normally. Workers that never block still checkpoint every few dozen items.
    """
    if isinstance(source, trio.abc.ReceiveChannel):
        kind = "memory" if _is_memory(source) else "locked"
    elif isinstance(source, AsyncIterable):
        kind = "locked"
    elif isinstance(source, Iterable):
        kind = "iter"
    else:
        raise TypeError(
            f"source must be a trio receive channel, an iterable or an async iterable, "
            f"got {source!r}"
        )
    check_callable("fn", fn, expected="an async callable")
    return _fan_out(
        source, kind, fn, check_int("workers", workers, minimum=1), _check_buffer(buffer)
    )


@asynccontextmanager
async def _fan_out(
    source: trio.abc.ReceiveChannel[T] | Iterable[T] | AsyncIterable[T],
    kind: str,
    fn: Callable[[T], Awaitable[R]],
    workers: int,
    buffer: int,
) -> AsyncIterator[FastReceiveChannel[R]]:
    send_channel, receive_channel = trio.open_memory_channel[R](buffer)
    crew = _Crew(workers)
    owned: object = source

    if kind == "iter":
        assert isinstance(source, Iterable)
        iterator = iter(source)

        async def work() -> bool:
            return await _work_iter(iterator, fn, send_channel)

    elif kind == "memory":
        assert isinstance(source, trio.MemoryReceiveChannel | FastReceiveChannel)
        channel = source

        async def work() -> bool:
            return await _work_memory(channel, fn, send_channel)

    else:
        lock = trio.Lock()
        ended: list[bool] = []  # one shared flag: pulling again after the end is not safe
        if isinstance(source, trio.abc.ReceiveChannel):
            pull: Callable[[], Awaitable[T]] = source.receive
            end: type[BaseException] = trio.EndOfChannel
        else:
            assert isinstance(source, AsyncIterable)
            iterator_ = aiter(source)
            owned = iterator_
            pull = iterator_.__anext__
            end = StopAsyncIteration

        async def work() -> bool:
            return await _work_locked(pull, end, lock, ended, fn, send_channel)

    async def worker() -> None:
        with crew.scope():
            if not await work():
                crew.stop()  # the consumer went away: stop the siblings too
        crew.running -= 1
        if crew.running == 0:  # every worker stopped without an error
            send_channel.close()
            await _aclose_input(owned)

    try:
        async with open_background_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(worker)
            try:
                yield FastReceiveChannel(receive_channel)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        receive_channel.close()
        send_channel.close()
        await _aclose_input(owned)


# The three worker loops below differ only in how they pull an item; they are
# written out because a shared "pull" callback costs a call per item. The delivery
# step they share with _forward (send_nowait, else await send, then the checkpoint
# budget) is written out for the same reason: as an async helper it cost 5-20% of
# fan-out and merge throughput when measured. Each returns True when the input ended
# and False when the consumer went away.


async def _work_iter(
    iterator: Iterable[T],
    fn: Callable[[T], Awaitable[R]],
    out: trio.MemorySendChannel[R],
) -> bool:
    send_nowait = out.send_nowait
    budget = _CHECKPOINT_EVERY
    # Sharing one iterator between tasks is safe: next() never yields to trio.
    for item in iterator:
        result = await fn(item)
        try:
            send_nowait(result)
        except trio.WouldBlock:
            try:
                await out.send(result)
            except trio.BrokenResourceError:
                return False
            budget = _CHECKPOINT_EVERY
            continue
        except trio.BrokenResourceError:
            return False
        budget -= 1
        if not budget:
            budget = _CHECKPOINT_EVERY
            await trio.lowlevel.checkpoint()
    return True


async def _work_memory(
    source: trio.MemoryReceiveChannel[T] | FastReceiveChannel[T],
    fn: Callable[[T], Awaitable[R]],
    out: trio.MemorySendChannel[R],
) -> bool:
    send_nowait = out.send_nowait
    receive_nowait = source.receive_nowait
    budget = _CHECKPOINT_EVERY
    while True:
        try:
            item = receive_nowait()
        except trio.WouldBlock:
            try:
                item = await source.receive()
            except trio.EndOfChannel:
                return True
            budget = _CHECKPOINT_EVERY
        except trio.EndOfChannel:
            return True
        result = await fn(item)
        try:
            send_nowait(result)
        except trio.WouldBlock:
            try:
                await out.send(result)
            except trio.BrokenResourceError:
                return False
            budget = _CHECKPOINT_EVERY
            continue
        except trio.BrokenResourceError:
            return False
        budget -= 1
        if not budget:
            budget = _CHECKPOINT_EVERY
            await trio.lowlevel.checkpoint()


async def _work_locked(
    pull: Callable[[], Awaitable[T]],
    end: type[BaseException],
    lock: trio.Lock,
    ended: list[bool],
    fn: Callable[[T], Awaitable[R]],
    out: trio.MemorySendChannel[R],
) -> bool:
    send_nowait = out.send_nowait
    budget = _CHECKPOINT_EVERY
    while True:
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
            budget = _CHECKPOINT_EVERY
        try:
            if ended:
                return True
            try:
                item = await pull()
            except end:
                ended.append(True)
                return True
        finally:
            lock.release()
        result = await fn(item)
        try:
            send_nowait(result)
        except trio.WouldBlock:
            try:
                await out.send(result)
            except trio.BrokenResourceError:
                return False
            budget = _CHECKPOINT_EVERY
            continue
        except trio.BrokenResourceError:
            return False
        budget -= 1
        if not budget:
            budget = _CHECKPOINT_EVERY
            await trio.lowlevel.checkpoint()


# --- merge (fan-in) --------------------------------------------------------------------


def open_merge(
    *receive_channels: trio.abc.ReceiveChannel[T],
    buffer: int = 0,
) -> AbstractAsyncContextManager[FastReceiveChannel[T]]:
    """Merge independent channels into one (fan-in).

    Usage::

        async with open_merge(rx_a, rx_b, rx_c) as merged:
            async for item in merged:
                ...

    One task per input forwards its items, so each input's own order is kept; the
    interleaving between inputs is whatever arrives first. The merged channel ends
    when *all* inputs have ended (at once when there are no inputs).

    Args:
        *receive_channels: The inputs; they become owned by the merge and are
            closed when it stops. Each may appear only once.
        buffer: Size of the merged channel's buffer (>= 0).

    Returns:
        An async context manager yielding the merged channel, a
        :class:`FastReceiveChannel`.

    Raises:
        TypeError: An input is not a trio receive channel, or ``buffer`` is not an int.
        ValueError: ``buffer`` < 0, or the same channel object is passed twice.
        ExceptionGroup: Raised by ``async with``: an exception from an input channel
            cancels everything and is raised in a group (with the body's, if any). An
            exception from the body alone comes out unwrapped.

    Checkpoints and cancellation: entering the block is not a checkpoint; leaving it is.
    Leaving the block cancels the forwarders and closes every input. If the consumer
    closes the merged channel, this is noticed at the next item forwarded; then all
    forwarders stop and all inputs are closed, so their producers get
    ``trio.BrokenResourceError``.
    """
    for index, channel in enumerate(receive_channels):
        _check_channel(f"receive_channels[{index}]", channel)
    if len({id(channel) for channel in receive_channels}) != len(receive_channels):
        raise ValueError(f"each channel may be merged only once, got {receive_channels!r}")
    return _merge(receive_channels, _check_buffer(buffer))


@asynccontextmanager
async def _merge(
    inputs: tuple[trio.abc.ReceiveChannel[T], ...],
    buffer: int,
) -> AsyncIterator[FastReceiveChannel[T]]:
    send_channel, receive_channel = trio.open_memory_channel[T](buffer)
    crew = _Crew(len(inputs))

    async def forwarder(source: trio.abc.ReceiveChannel[T], out: trio.MemorySendChannel[T]) -> None:
        with out:
            with crew.scope():
                if not await _forward(source, out):
                    crew.stop()  # the consumer went away: stop the siblings too
            crew.running -= 1
            # The last one out closes the inputs (not earlier: a sibling may still be
            # about to read one), so that their producers get BrokenResourceError.
            if crew.stopped and crew.running == 0:
                for channel in inputs:
                    await _aclose_input(channel)

    try:
        async with open_background_nursery() as nursery:
            with send_channel:
                for source in inputs:
                    nursery.start_soon(forwarder, source, send_channel.clone())
            try:
                yield FastReceiveChannel(receive_channel)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        receive_channel.close()
        for source in inputs:
            await _aclose_input(source)


async def _forward(
    source: trio.abc.ReceiveChannel[T],
    out: trio.MemorySendChannel[T],
    limiter: RateLimiter | None = None,
) -> bool:
    """Copy ``source`` to ``out``; True when the input ended, False when ``out`` broke.

    The loop of :func:`_work_memory` without ``fn``, also for channels that are not
    memory channels; written out like it (see the comment above :func:`_work_iter`).
    With a ``limiter`` (`open_throttle`), each item takes a token before it is sent:
    without waiting when one is available, so the budget still bounds the steps.
    """
    receive_nowait = _receive_nowait_of(source)
    send_nowait = out.send_nowait
    budget = _CHECKPOINT_EVERY
    while True:
        try:
            if receive_nowait is None:
                raise trio.WouldBlock
            item = receive_nowait()
        except trio.WouldBlock:
            try:
                item = await source.receive()
            except trio.EndOfChannel:
                return True
            budget = _CHECKPOINT_EVERY
        except trio.EndOfChannel:
            return True
        if limiter is not None:
            try:
                limiter.acquire_nowait()
            except trio.WouldBlock:
                await limiter.acquire()
                budget = _CHECKPOINT_EVERY
        try:
            send_nowait(item)
        except trio.WouldBlock:
            try:
                await out.send(item)
            except trio.BrokenResourceError:
                return False
            budget = _CHECKPOINT_EVERY
            continue
        except trio.BrokenResourceError:
            return False
        budget -= 1
        if not budget:
            budget = _CHECKPOINT_EVERY
            await trio.lowlevel.checkpoint()


# --- broadcast -------------------------------------------------------------------------


def open_broadcast(
    receive_channel: trio.abc.ReceiveChannel[T],
    *,
    consumers: int,
    buffer: int = 0,
) -> AbstractAsyncContextManager[tuple[FastReceiveChannel[T], ...]]:
    """Copy every item of ``receive_channel`` to ``consumers`` output channels.

    Usage::

        async with open_broadcast(events, consumers=2) as (audit, metrics):
            nursery.start_soon(write_audit, audit)
            nursery.start_soon(count, metrics)

    Each output receives every item, in input order. One task delivers each item to
    every output before taking the next, so the slowest consumer sets the pace; no
    buffer grows beyond ``buffer`` items. With ``buffer=0`` the consumers must run in
    separate tasks (one task reading two outputs in turn would wait on itself).

    Args:
        receive_channel: The input; it becomes owned by the broadcast and is closed
            when the broadcast stops.
        consumers: Number of output channels (>= 1).
        buffer: Size of each output's buffer (>= 0).

    Returns:
        An async context manager yielding a tuple of ``consumers`` receive channels
        (:class:`FastReceiveChannel`).

    Raises:
        TypeError: ``receive_channel`` is not a trio receive channel, or
            ``consumers`` / ``buffer`` is not an int.
        ValueError: ``consumers`` < 1 or ``buffer`` < 0.
        ExceptionGroup: Raised by ``async with``: an exception from the input channel
            cancels everything and is raised in a group (with the body's, if any). An
            exception from the body alone comes out unwrapped.

    Checkpoints and cancellation: entering the block is not a checkpoint; leaving it is.
    When the input ends, every output ends. A consumer that closes its output is
    dropped at the next item sent to it and the others continue; once every
    consumer is gone the input is closed, so its producer gets
    ``trio.BrokenResourceError``. Leaving the block cancels the distribution and
    closes the input and all outputs.
    """
    source = _check_channel("receive_channel", receive_channel)
    count = check_int("consumers", consumers, minimum=1)
    size = _check_buffer(buffer)
    return _broadcast(source, count, size)


@asynccontextmanager
async def _broadcast(
    source: trio.abc.ReceiveChannel[T],
    consumers: int,
    buffer: int,
) -> AsyncIterator[tuple[FastReceiveChannel[T], ...]]:
    pairs = [trio.open_memory_channel[T](buffer) for _ in range(consumers)]
    senders = [send for send, _ in pairs]
    outputs = tuple(receive for _, receive in pairs)

    async def distributor() -> None:
        try:
            await _distribute(source, senders)
        finally:
            for send in senders:
                send.close()
            await _aclose_input(source)

    try:
        async with open_background_nursery() as nursery:
            nursery.start_soon(distributor)
            try:
                yield tuple(FastReceiveChannel(output) for output in outputs)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        for output in outputs:
            output.close()
        for send in senders:
            send.close()
        await _aclose_input(source)


async def _distribute(
    source: trio.abc.ReceiveChannel[T], senders: list[trio.MemorySendChannel[T]]
) -> None:
    receive_nowait = _receive_nowait_of(source)
    live = list(senders)
    budget = _CHECKPOINT_EVERY
    while live:
        try:
            if receive_nowait is None:
                raise trio.WouldBlock
            item = receive_nowait()
        except trio.WouldBlock:
            try:
                item = await source.receive()
            except trio.EndOfChannel:
                return
            budget = _CHECKPOINT_EVERY
        except trio.EndOfChannel:
            return
        gone: list[trio.MemorySendChannel[T]] = []
        for send in live:
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                try:
                    await send.send(item)
                except trio.BrokenResourceError:
                    gone.append(send)
                budget = _CHECKPOINT_EVERY
            except trio.BrokenResourceError:
                gone.append(send)
        if gone:
            for send in gone:
                send.close()
            live = [send for send in live if send not in gone]
        budget -= 1
        if not budget:
            budget = _CHECKPOINT_EVERY
            await trio.lowlevel.checkpoint()


# --- batching --------------------------------------------------------------------------


async def receive_batch(
    channel: trio.MemoryReceiveChannel[T] | FastReceiveChannel[T], max_items: int
) -> list[T]:
    """Receive at least one item, plus whatever else is already buffered.

    Waits for the first item with ``await channel.receive()``, then takes more with
    ``receive_nowait`` until ``max_items`` are taken or nothing is ready, so a whole
    batch costs one checkpoint instead of one per item::

        while True:
            try:
                batch = await receive_batch(results, 256)
            except trio.EndOfChannel:
                break
            await write_rows(batch)

    Args:
        channel: The memory channel (or `FastReceiveChannel`) to read.
        max_items: Upper bound on the length of the returned list (>= 1).

    Returns:
        Between 1 and ``max_items`` items, in channel order.

    Raises:
        trio.EndOfChannel: The channel is closed and empty. Items received before
            the end are returned first; the next call raises.
        trio.ClosedResourceError: ``channel`` was closed by this side.
        TypeError: ``channel`` is not a memory channel or
            ``max_items`` is not an int.
        ValueError: ``max_items`` < 1.

    This is always exactly one checkpoint. If cancelled while waiting for the first
    item, it raises ``trio.Cancelled`` and nothing has been taken from the channel;
    once the first item has arrived the rest is taken synchronously, so a batch is
    never lost to cancellation.
    """
    if isinstance(channel, FastReceiveChannel):
        channel = channel.channel
    if not isinstance(channel, trio.MemoryReceiveChannel):
        raise TypeError(
            f"channel must be a trio.MemoryReceiveChannel or a FastReceiveChannel, got {channel!r}"
        )
    limit = check_int("max_items", max_items, minimum=1)
    batch = [await channel.receive()]
    receive_nowait = channel.receive_nowait
    try:
        while len(batch) < limit:
            batch.append(receive_nowait())
    except (trio.WouldBlock, trio.EndOfChannel):
        pass
    return batch
