"""A nursery for a context manager's background tasks that lets the body's error out whole.

A context manager that runs background tasks (a server's accept loop, a channel's
resolver, a monitor's timer) opens a nursery around its ``yield``. With trio's strict
exception groups, whatever the ``async with`` body raises then comes out wrapped:
``ExceptionGroup([RpcError(NOT_FOUND)])``, and the caller's ``except RpcError`` catches
nothing. :func:`open_background_nursery` is the one fix for every such context manager
here: it re-raises the body's own exception, unwrapped, when the background tasks did not
fail, and keeps the nursery's group when they did, so that no failure is hidden.

This follows trio-websocket (0.12, ``open_websocket``) and trio's "Designing for multiple
errors": a user of ``async with open_x() as x:`` writes the body; the tasks behind ``x``
are an implementation detail whose ``Cancelled`` (the nursery cancelling them because the
body ended) is no failure.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["open_background_nursery"]


@asynccontextmanager
async def open_background_nursery() -> AsyncIterator[trio.Nursery]:
    """Open a nursery whose block raises its own exception unwrapped.

    Use it in place of :func:`trio.open_nursery` in a context manager whose ``yield`` sits
    inside the nursery::

        @asynccontextmanager
        async def open_thing():
            async with open_background_nursery() as nursery:
                nursery.start_soon(background)
                try:
                    yield thing
                finally:
                    nursery.cancel_scope.cancel()

    What leaves the block:

    * the block raised and no background task failed (they returned, or ended with
      ``Cancelled``): the block's exception itself, with its traceback, ``__cause__`` and
      ``__context__`` untouched, whatever its type (``RpcError``, ``KeyboardInterrupt``,
      ``Cancelled``, or a group the block raised itself);
    * a background task failed: the nursery's :class:`BaseExceptionGroup`, holding the
      task's exception and, if the block raised too, the block's (both stay visible);
    * nothing raised: nothing.

    Entering is not a checkpoint; leaving is one, as for a nursery, and waits for the
    background tasks to finish.

    Raises:
        BaseException: What the block raised, unwrapped, when no background task failed.
        BaseExceptionGroup: A background task failed (with the block's exception, if any).
    """
    raised: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                raised = exc
                raise
    except BaseExceptionGroup as group:
        if raised is None or not _only_body_or_cancelled(group, raised):
            raise
        _reraise_unwrapped(raised)


def _only_body_or_cancelled(group: BaseExceptionGroup[BaseException], body: BaseException) -> bool:
    """Whether every leaf of ``group`` is a leaf of ``body`` or a ``Cancelled``.

    Leaves, not groups: trio's cancel scopes rebuild the groups they pass through
    (``derive``), so a group the body raised arrives as a copy; its leaves are the same
    objects.
    """
    own = {id(leaf) for leaf in _leaves(body)}
    _, rest = group.split(lambda exc: id(exc) in own or isinstance(exc, trio.Cancelled))
    return rest is None


def _leaves(exc: BaseException) -> list[BaseException]:
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]


def _reraise_unwrapped(exc: BaseException) -> None:
    # Raising inside the `except` clause would set exc.__context__ to the group that holds
    # exc (a cycle that also buries the real context); put the original back.
    context, suppress = exc.__context__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        exc.__suppress_context__ = suppress
        del exc
