"""Deadlines that cross the wire: ``asyncio.timeout`` plus a context variable.

asyncio has no public way to read the deadline of an enclosing ``asyncio.timeout()``, so
the deadline a call sends is the one set by :func:`timeout` / :func:`timeout_at` (nested
ones take the earliest). A bare ``asyncio.timeout()`` still ends the call on time: it
cancels the awaiting task, which sends CANCEL, and the server cancels the handler.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from types import TracebackType
from typing import Final, final

__all__ = ["Deadline", "timeout", "timeout_at"]

# The earliest deadline (loop time) of the enclosing Deadline blocks; inf: none.
_deadline: Final = contextvars.ContextVar("trio_micro.aio.deadline", default=math.inf)


@final
class Deadline:
    """``asyncio.timeout()`` whose deadline calls inside it send to the server.

    Made by :func:`timeout` / :func:`timeout_at`. Entering it enters an
    :class:`asyncio.Timeout` (returned, so ``expired()`` works) and records the deadline
    for the calls made inside; leaving it restores the outer deadline. Expiry raises
    :exc:`TimeoutError` like ``asyncio.timeout`` does.
    """

    __slots__ = ("_timeout", "_token", "_when")

    def __init__(self, when: float | None) -> None:
        self._when = when
        self._timeout = asyncio.timeout_at(when)
        self._token: contextvars.Token[float] | None = None

    async def __aenter__(self) -> asyncio.Timeout:
        entered = await self._timeout.__aenter__()
        if self._when is not None and self._when < _deadline.get():
            self._token = _deadline.set(self._when)
        return entered

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _deadline.reset(self._token)
            self._token = None
        await self._timeout.__aexit__(exc_type, exc, tb)


def timeout(delay: float | None) -> Deadline:
    """``asyncio.timeout(delay)`` whose deadline crosses the wire with the calls inside.

    Not a checkpoint (entering it is). ``None`` sets no deadline.

    Raises:
        RuntimeError: No running event loop.
    """
    if delay is None:
        return Deadline(None)
    return Deadline(asyncio.get_running_loop().time() + delay)


def timeout_at(when: float | None) -> Deadline:
    """``asyncio.timeout_at(when)`` (``when`` in ``loop.time()``) whose deadline crosses
    the wire with the calls inside."""
    return Deadline(when)


def timeout_ms(loop: asyncio.AbstractEventLoop) -> int | None:
    """The ``timeout_ms`` a call made now sends: what is left of the earliest enclosing
    :class:`Deadline`, rounded up; ``None`` outside one."""
    deadline = _deadline.get()
    if deadline == math.inf:
        return None
    # Rounded up, so the server's deadline never fires before ours.
    return max(0, math.ceil((deadline - loop.time()) * 1000))
