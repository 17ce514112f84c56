"""`FastReceiveChannel`: a memory channel's receiving end whose ``async for`` drains the buffer.

Theory of operation
-------------------
``async for item in memory_receive_channel`` calls ``await receive()`` per item, and
trio's ``receive()`` is a full checkpoint: the task goes once through the scheduler
even when an item is already buffered. For a pipeline whose stages move items with
``send_nowait`` that one trip per item is most of the consumer's cost, and it caps an
``async for`` consumer far below what the producers deliver (benchmarks/RESULTS.md).

`FastReceiveChannel` wraps a :class:`trio.MemoryReceiveChannel`. Its ``__anext__``
checks for cancellation (cheap: no scheduler trip) and takes a buffered item with
``receive_nowait``; only when nothing is buffered, or after ``CONSUMER_BUDGET`` items
taken that way in a row, does it ``await receive()``, a full checkpoint. So a consumer
that never blocks still lets the other tasks run at least every ``CONSUMER_BUDGET``
items (tests/toolkit/test_receive.py checks that bound with the task monitor's
blocked-step detector), and a cancelled consumer stops at its next item: no item is
taken from the buffer after the cancellation is seen.

Everything else (``receive``, ``receive_nowait``, ``clone``, ``close``, ``statistics``)
is the wrapped channel's, so backpressure and closing behave exactly as trio documents.
trio's memory channel classes are final, hence a wrapper rather than a subclass.
"""

from __future__ import annotations

from typing import Final, TypeVar, final

import trio

__all__ = ["CONSUMER_BUDGET", "FastReceiveChannel"]

T = TypeVar("T")

#: Items an ``async for`` over a `FastReceiveChannel` takes without a schedule point.
CONSUMER_BUDGET: Final = 64


@final
class FastReceiveChannel(trio.abc.ReceiveChannel[T]):
    """The receiving end of a memory channel, with a fast ``async for``.

    Returned by `open_fan_out`, `open_merge` and `open_throttle`. It behaves like the
    :class:`trio.MemoryReceiveChannel` it wraps (``receive``, ``receive_nowait``,
    ``clone``, ``close``, ``statistics``, ``with`` / ``async with``), except that
    iterating it does not pay a scheduler trip per buffered item; see the module
    docstring. Any toolkit function that takes a memory channel takes this too.

    ``async for`` semantics: every step is a cancellation point (checked before an item
    is taken, so cancellation never loses an item), and a schedule point when it has
    to wait for an item or after `CONSUMER_BUDGET` items taken without waiting.

    Args:
        channel: The memory channel to wrap; the wrapper owns it (closing one closes
            the other).

    Raises:
        TypeError: ``channel`` is not a ``trio.MemoryReceiveChannel``.
    """

    __slots__ = ("_budget", "_channel", "_receive_nowait")

    def __init__(self, channel: trio.MemoryReceiveChannel[T]) -> None:
        if not isinstance(channel, trio.MemoryReceiveChannel):
            raise TypeError(f"channel must be a trio.MemoryReceiveChannel, got {channel!r}")
        self._channel = channel
        self._receive_nowait = channel.receive_nowait
        self._budget = CONSUMER_BUDGET

    def __repr__(self) -> str:
        return f"<FastReceiveChannel of {self._channel!r}>"

    @property
    def channel(self) -> trio.MemoryReceiveChannel[T]:
        """The wrapped memory channel (its ``async for`` is trio's, one trip per item)."""
        return self._channel

    def receive_nowait(self) -> T:
        """Take a buffered item; see ``trio.MemoryReceiveChannel.receive_nowait``.

        Not a checkpoint. Raises ``trio.WouldBlock``, ``trio.EndOfChannel`` or
        ``trio.ClosedResourceError`` as it does.
        """
        return self._receive_nowait()

    async def receive(self) -> T:
        """Wait for an item; see ``trio.MemoryReceiveChannel.receive``. Always a checkpoint."""
        return await self._channel.receive()

    def clone(self) -> FastReceiveChannel[T]:
        """Another receiving end of the same channel; see ``trio.MemoryReceiveChannel.clone``."""
        return FastReceiveChannel(self._channel.clone())

    def close(self) -> None:
        """Close this end, synchronously. Not a checkpoint."""
        self._channel.close()

    async def aclose(self) -> None:
        """Close this end. A checkpoint."""
        await self._channel.aclose()

    def __enter__(self) -> FastReceiveChannel[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._channel.close()

    def statistics(self) -> trio.MemoryChannelStatistics:
        """The wrapped channel's ``statistics()``. Not a checkpoint."""
        return self._channel.statistics()

    def __aiter__(self) -> FastReceiveChannel[T]:
        return self

    async def __anext__(self) -> T:
        budget = self._budget - 1
        if budget:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                item = self._receive_nowait()
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
            else:
                self._budget = budget
                return item
        self._budget = CONSUMER_BUDGET
        try:
            return await self._channel.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
