"""Hedged calls: a second attempt after a delay, the first answer wins (:func:`hedged`).

A hedged call sends attempt 1 at once and attempt ``k`` after ``(k - 1) * delay``
seconds unless an answer has arrived; the first attempt to finish decides, and the
others are cancelled. Cancelling an attempt of a unary call sends CANCEL to its server
(see :mod:`._client`), so the loser's handler is cancelled on the wire instead of
running to completion. The race itself is :func:`trio_micro.toolkit.first_completed`.

Each attempt is a separate call through the channel, balanced on its own, except that
it avoids the endpoint the previous attempt went to when another is ready: the
attempts share a list of endpoints through the context variable `hedge_tried`, which
:meth:`~._calls.Caller.unary` reads (a slow replica is often idle by the balancer's
measure, calls in flight, so without this it would get the second attempt too).

Only idempotent methods may be hedged (the server may run the method more than once);
a stub method of a method not marked ``@rpc.unary(idempotent=True)`` is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from functools import partial
from typing import Any, Final, TypeVar, TypeVarTuple, Unpack

import trio

from trio_micro._validate import check_callable, check_int, check_number
from trio_micro.toolkit import first_completed

from ._service import MethodInfo
from ._transport import Endpoint

__all__ = ["hedge_tried", "hedged"]

#: The endpoints the attempts of the current hedged call went to, in order; shared by
#: the attempts (the list is set before their tasks start, so they see the same one).
hedge_tried: ContextVar[list[Endpoint] | None] = ContextVar(
    "trio_micro.rpc.hedge_tried", default=None
)

T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")

#: The most attempts one hedged call may make.
MAX_HEDGED_ATTEMPTS: Final = 8


async def hedged(
    fn: Callable[[Unpack[PosArgsT]], Awaitable[T]],
    *args: *PosArgsT,
    delay: float,
    attempts: int = 2,
) -> T:
    """Call ``fn(*args)``, and again every ``delay`` seconds until one answers.

    ::

        user = await rpc.hedged(users.get_user, GetUserRequest(7), delay=0.010)

    Pick ``delay`` near the method's p95 latency: about 5% of calls then cost a second
    attempt, and a call stuck on a slow replica waits about ``delay`` plus a normal
    call instead of the slow replica's time.

    The first attempt to finish decides: its answer is returned, or its exception
    (an ``RpcError`` with the server's status, say) raised as is. The other attempts
    are cancelled, which sends CANCEL to their servers. Each attempt goes to another
    endpoint than the previous one when another is ready. The caller's deadline applies
    to every attempt. Always a checkpoint; cancelling the call cancels every attempt.

    Args:
        fn: The call to make, usually a stub method of an idempotent method; any
            async callable is accepted, and a stub method of a method that is not
            idempotent is refused.
        *args: Its arguments (the request).
        delay: Seconds between attempts, a finite number >= 0.
        attempts: The most attempts, 1 to ``MAX_HEDGED_ATTEMPTS`` (8).

    Returns:
        The answer of the first attempt that finished, if it answered.

    Raises:
        TypeError: ``fn`` is not callable, ``delay`` not a number, ``attempts`` not an int.
        ValueError: ``fn`` is a stub method of a method that is not idempotent,
            ``delay`` < 0 or not finite, or ``attempts`` out of range.
        RpcError: The first attempt to finish failed.
    """
    check_callable("fn", fn, expected="an async callable")
    pause = check_number("delay", delay, zero=True, unit="seconds")
    count = check_int("attempts", attempts, minimum=1)
    if count > MAX_HEDGED_ATTEMPTS:
        raise ValueError(f"attempts must be <= {MAX_HEDGED_ATTEMPTS}, got {attempts!r}")
    info = getattr(fn, "__rpc_method__", None)
    if isinstance(info, MethodInfo) and not info.idempotent:
        raise ValueError(
            f"{info.wire_name} is not idempotent: a hedged call may run it more than once "
            "(mark it @rpc.unary(idempotent=True))"
        )
    token = hedge_tried.set([])
    try:
        return await first_completed(
            *(partial(_attempt, index * pause, fn, args) for index in range(count))
        )
    finally:
        hedge_tried.reset(token)


async def _attempt(after: float, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    if after:
        await trio.sleep(after)
    return await fn(*args)
