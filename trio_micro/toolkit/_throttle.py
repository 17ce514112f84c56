"""Rate limiting through channels: `open_throttle`.

Theory of operation
-------------------
`open_throttle` is one more channel pattern (``_channels.py``): one task moves items
from the input channel to a new memory channel with the loop of `open_merge`
(``_forward``), taking one token of a :class:`RateLimiter` per item before delivering
it. The bucket arithmetic is the limiter's own (exact under ``MockClock``:
``floor(rate * t) + burst`` items in ``t`` seconds), so a throttle is as accurate as a
`RateLimiter` and as cheap: a token that is available costs no checkpoint
(``acquire_nowait``), only a wait for one does. The output is a `FastReceiveChannel`,
so a throttle composes with `open_fan_out` and `open_merge` on either side, and the
usual ownership rules hold: the input is closed when the throttle stops, so its
producer gets ``trio.BrokenResourceError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

import trio

from .._validate import check_int
from ._channels import _aclose_input, _check_buffer, _check_channel, _forward
from ._ratelimit import RateLimiter, _check_rate
from ._receive import FastReceiveChannel

__all__ = ["open_throttle"]

T = TypeVar("T")


def open_throttle(
    receive_channel: trio.abc.ReceiveChannel[T],
    rate: float,
    *,
    burst: int = 1,
    buffer: int = 0,
) -> AbstractAsyncContextManager[FastReceiveChannel[T]]:
    """Pace the items of ``receive_channel`` to ``rate`` per second, ``burst`` at once.

    Usage::

        async with open_throttle(requests, 100, burst=10) as paced:
            async with open_fan_out(paced, send, workers=8) as results:
                ...

    Items keep their order. Each item takes one token of a
    ``RateLimiter(rate, burst=burst)`` before it is delivered, so in any ``t`` seconds
    at most ``floor(rate * t) + burst`` items come out (exactly that many when the input
    keeps up, under a mock clock). In real time a late wake-up costs tokens once it is
    later than ``burst / rate``: choose ``burst >= rate / 100`` for under 1% error
    (benchmarks/RESULTS.md measures it).

    Args:
        receive_channel: The input; it becomes owned by the throttle and is closed when
            the throttle stops.
        rate: Items per second, a finite number > 0.
        burst: Items that may come out at once after a quiet period (>= 1).
        buffer: Size of the output channel's buffer (>= 0). Tokens are taken before an
            item enters the buffer, so a buffer does not let items through faster.

    Returns:
        An async context manager yielding the paced channel, a `FastReceiveChannel`.

    Raises:
        TypeError: ``receive_channel`` is not a trio receive channel, ``rate`` is not
            a number, or ``burst`` / ``buffer`` is not an int.
        ValueError: ``rate`` is not finite and > 0, ``burst`` < 1 or ``buffer`` < 0.
        ExceptionGroup: Raised by ``async with``: an exception from the input channel
            cancels the body and is raised in a group (with any exception of the body),
            as from `open_merge`.

    Checkpoints and cancellation: entering the block is not a checkpoint; leaving it
    is. When the input ends, the output ends after the items already taken. If the
    consumer closes the output, this is noticed at the next item delivered; then the
    input is closed. Leaving the block cancels the pacing task and closes the input
    and the output.
    """
    source = _check_channel("receive_channel", receive_channel)
    limiter = RateLimiter(_check_rate(rate), check_int("burst", burst, minimum=1))
    return _throttle(source, limiter, _check_buffer(buffer))


@asynccontextmanager
async def _throttle(
    source: trio.abc.ReceiveChannel[T], limiter: RateLimiter, buffer: int
) -> AsyncIterator[FastReceiveChannel[T]]:
    send_channel, receive_channel = trio.open_memory_channel[T](buffer)

    async def pace() -> None:
        with send_channel:
            try:
                await _forward(source, send_channel, limiter)
            finally:
                await _aclose_input(source)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pace)
            try:
                yield FastReceiveChannel(receive_channel)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        receive_channel.close()
        send_channel.close()
        await _aclose_input(source)
