"""`first_completed`: race functions, keep the first outcome, cancel the rest.

Each function runs in its own task of one nursery; the first task to finish records
its outcome (a value or an ``Exception``) and cancels the nursery's scope, which
cancels the others; the nursery then waits for them, so nothing outlives the call.
The hedged RPC call (``trio_micro.rpc.hedged``) is built on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from .._validate import check_callable

__all__ = ["first_completed"]

T = TypeVar("T")


async def first_completed(*fns: Callable[[], Awaitable[T]]) -> T:
    """Run ``fns`` concurrently; return the first result and cancel the others.

    aiometer's ``run_any``, trio-util's ``wait_any``::

        page = await first_completed(
            partial(fetch, mirror_a, path), partial(fetch, mirror_b, path)
        )

    The first function to *finish* decides: if it returned, its value is returned; if
    it raised an ``Exception``, that exception is raised as is (not in a group). Either
    way the others are cancelled and waited for before this returns, so nothing
    outlives the call. Exceptions the others raise while being cancelled are dropped:
    only the first outcome counts. When several finish in the same scheduling round
    without a checkpoint, which one is first is up to trio's scheduler.

    Always a checkpoint (each function runs in its own task). If the caller is
    cancelled, every function is cancelled and ``trio.Cancelled`` propagates.
    ``BaseException``s that are not ``Exception``s (``KeyboardInterrupt``) propagate
    from the internal nursery in a ``BaseExceptionGroup``.

    Args:
        *fns: Zero-argument async callables, e.g. ``functools.partial(fetch, url)``;
            at least one.

    Returns:
        The value of the first function to return, if it finished first.

    Raises:
        ValueError: No function was given.
        TypeError: An argument is not callable (checked before anything runs).
        Exception: The exception of the function that finished first, if it raised.
    """
    if not fns:
        raise ValueError("first_completed() needs at least one function, got none")
    for index, fn in enumerate(fns):
        check_callable(f"fns[{index}]", fn, expected="a zero-argument async callable")
    first: list[tuple[bool, Any]] = []  # (raised, value or exception), once

    async def run(fn: Callable[[], Awaitable[T]], scope: trio.CancelScope) -> None:
        try:
            value: Any = await fn()
            raised = False
        except Exception as exc:  # Cancelled and KeyboardInterrupt propagate
            value, raised = exc, True
        if not first:
            first.append((raised, value))
            scope.cancel()

    async with trio.open_nursery() as nursery:
        for fn in fns:
            nursery.start_soon(run, fn, nursery.cancel_scope)
    raised, value = first[0]
    if raised:
        try:
            raise value
        finally:
            del value  # no reference cycle through the traceback
    return value  # type: ignore[no-any-return]
