"""Fail fast or wait for ready: what a call does when its channel has no ready connection.

gRPC's semantics (doc/wait-for-ready.md). By default a call *fails fast*: when the channel
is in transient failure -- every connection attempt failed, every endpoint is
``NOT_SERVING``, the resolver's backend (a registry) is unreachable, or the service has no
endpoints -- it fails at once with ``UNAVAILABLE`` saying which. It waits only while
something is under way: a connection being made, or the first resolution. A call made with
*wait for ready* waits through transient failure too, until a connection is ready or the
caller's deadline cancels it.

The channel's default is :func:`~trio_micro.rpc.open_channel`'s ``wait_for_ready``; the
:func:`wait_for_ready` context manager overrides it for the calls made in its body (a
context variable: deadlines in Trio are scoped too, and stub methods take only the
request).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

from trio_micro._validate import check_bool

__all__ = ["wait_for_ready"]

_wait_for_ready: Final[ContextVar[bool | None]] = ContextVar(
    "trio_micro.rpc.wait_for_ready", default=None
)


@contextmanager
def wait_for_ready(enabled: bool = True) -> Iterator[None]:
    """Make the calls in the body wait for ready (``True``) or fail fast (``False``).

    ::

        with trio.fail_after(5), rpc.wait_for_ready():
            user = await users.get_user(GetUserRequest(user_id=1))  # waits out a restart

    Overrides the channel's ``wait_for_ready`` for every channel, in this task and in the
    tasks it starts from the body (a context variable). Not a checkpoint.

    Raises:
        TypeError: ``enabled`` is not a bool.
    """
    token = _wait_for_ready.set(check_bool("enabled", enabled))
    try:
        yield
    finally:
        _wait_for_ready.reset(token)


def waiting_for_ready(default: bool) -> bool:
    """Whether the current call waits for ready: the innermost :func:`wait_for_ready`, or
    the channel's ``default``."""
    enabled = _wait_for_ready.get()
    return default if enabled is None else enabled
