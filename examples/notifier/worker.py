"""The notifier: follow the new orders, notify each order's user, never lose one.

Theory of operation
-------------------
A *feeder* task reads ``orders.list_orders(after_id=fed, follow=True)`` (a server
stream that does not end) into a small bounded channel. When the stream breaks (the
orders replica died, ``UNAVAILABLE``) it waits a :class:`trio_micro.Backoff` delay and
opens a new one after the last order it fed, so nothing is skipped and nothing read twice.

:func:`trio_micro.amap` maps :meth:`Notifier._deliver` over that channel with ``workers``
calls at once, in order (``ordered=True``). Each delivery first takes a token of the
order's user from a :class:`trio_micro.KeyedRateLimiter` (so one busy user cannot flood
the downstream, and a quiet user is not held up behind it beyond the ``workers``
window), then sends the notification. A downstream that refuses (``RESOURCE_EXHAUSTED``)
or is away (``UNAVAILABLE``) is retried after a backoff delay, as long as it takes: a
refusal loses nothing. Any other error is permanent for that order: it is logged as
:data:`NOTIFY_FAILED` and counted, and the notifier goes on.

The results come out of ``amap`` in order, so :attr:`Notifier.cursor`, the id of the last
order whose result was written (:data:`NOTIFY_SENT` / :data:`NOTIFY_FAILED`), means
"every order up to here is done". That is what a restart resumes after.

Stopping (:meth:`Notifier.run` returns when ``stop`` is set): the feeder stops reading at
once; the orders already taken (in flight or in the channel) get ``grace`` seconds to
finish. What is still unfinished then is cancelled and *handed back*: it lies after the
returned cursor, so the next run, started from that cursor, delivers it. A delivery that
was cancelled after the downstream took it may be delivered twice; none is lost
(at-least-once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec
import structlog
import trio

from examples.orders.service import ListOrdersRequest, Order, OrderService
from trio_micro import Backoff, KeyedRateLimiter, amap, rpc

__all__ = [
    "NOTIFY_FAILED",
    "NOTIFY_SENT",
    "Downstream",
    "LogDownstream",
    "Notification",
    "Notifier",
    "NotifierStatistics",
]

#: Log event: one order's notification was delivered (``order_id``, ``user_id``, ``attempts``).
NOTIFY_SENT: Final = "notifier.sent"
#: Log event: one order's notification failed for good (``order_id``, ``code``, ``message``).
NOTIFY_FAILED: Final = "notifier.failed"
#: Log event: the orders stream broke; the feeder reconnects after ``delay_s``.
STREAM_BROKEN: Final = "notifier.stream.broken"
#: Log event: the downstream refused a notification; it is retried after ``delay_s``.
DOWNSTREAM_REFUSED: Final = "notifier.downstream.refused"

#: Downstream codes that mean "later": the notification is retried, never dropped.
RETRYABLE: Final = frozenset({rpc.Status.RESOURCE_EXHAUSTED, rpc.Status.UNAVAILABLE})

log = structlog.get_logger("notifier")


class Notification(msgspec.Struct, frozen=True):
    """What the downstream receives for one order."""

    order_id: int
    user_id: int
    text: str


class Downstream(Protocol):
    """Where notifications go (a mail or push service).

    ``send`` raises :class:`trio_micro.rpc.RpcError` when it cannot take one; the codes in
    :data:`RETRYABLE` mean "try again later".
    """

    async def send(self, notification: Notification) -> None: ...


class LogDownstream:
    """A downstream that logs each notification as ``notifier.notification``."""

    async def send(self, notification: Notification) -> None:
        """Log it. A checkpoint."""
        await trio.lowlevel.checkpoint()
        log.info("notifier.notification", order_id=notification.order_id, text=notification.text)


@dataclass(frozen=True, slots=True)
class NotifierStatistics:
    """Counters of a :class:`Notifier`.

    Attributes:
        cursor: Every order up to this id is done (delivered or failed for good).
        sent: Notifications delivered.
        failed: Orders whose notification failed for good.
        refused: Times the downstream refused (each one retried).
        reconnects: Times the orders stream was opened again after it broke.
    """

    cursor: int
    sent: int
    failed: int
    refused: int
    reconnects: int


@dataclass(frozen=True, slots=True)
class _Result:
    order: Order
    attempts: int
    error: rpc.RpcError | None


class Notifier:
    """Notify the user of every new order, from ``cursor`` on (see the module docs).

    Args:
        orders: A stub of the order service (``channel.stub(OrderService)``).
        downstream: Where the notifications go.
        cursor: Resume after this order id (0: from the first order).
        workers: Notifications in flight at most.
        rate: Notifications per second per user.
        burst: Notifications a quiet user may get at once.
        backoff: Delays between retries (a fresh copy of its settings per order and for
            the stream); default ``Backoff(initial=0.05, maximum=2.0)``.
    """

    def __init__(
        self,
        orders: OrderService,
        downstream: Downstream,
        *,
        cursor: int = 0,
        workers: int = 8,
        rate: float = 5.0,
        burst: int = 2,
        backoff: Callable[[], Backoff] = lambda: Backoff(initial=0.05, maximum=2.0),
    ) -> None:
        if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
            raise ValueError(f"cursor must be an int >= 0, got {cursor!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        self.orders = orders
        self.downstream = downstream
        self.workers = workers
        self._limiter: KeyedRateLimiter[int] = KeyedRateLimiter(rate, burst)
        self._backoff = backoff
        self._cursor = self._fed = cursor
        self._sent = self._failed = self._refused = self._reconnects = 0

    @property
    def cursor(self) -> int:
        """Every order up to this id is done; a restart resumes after it."""
        return self._cursor

    def statistics(self) -> NotifierStatistics:
        """Return the counters. Not a checkpoint."""
        return NotifierStatistics(
            cursor=self._cursor,
            sent=self._sent,
            failed=self._failed,
            refused=self._refused,
            reconnects=self._reconnects,
        )

    async def run(self, stop: trio.Event, *, grace: float = 5.0) -> int:
        """Notify orders until ``stop`` is set; return the cursor to resume after.

        After ``stop``: no new order is read; those taken get ``grace`` seconds to finish,
        then the rest is cancelled and handed back (it lies after the returned cursor).
        Cancelling the call itself stops everything at once (the cursor stays valid).

        Raises:
            ExceptionGroup: A bug in a delivery or in writing a result (as ``amap``
                raises them); errors of the orders stream and of the downstream are
                handled, not raised.
        """
        if not 0 <= grace < math.inf:
            raise ValueError(f"grace must be a finite number of seconds >= 0, got {grace!r}")
        send, receive = trio.open_memory_channel[Order](self.workers)
        async with trio.open_nursery() as nursery:
            feeding = trio.CancelScope()
            delivering = trio.CancelScope()

            async def feed() -> None:
                with send, feeding:
                    await self._feed(send)

            async def on_stop() -> None:
                await stop.wait()
                feeding.cancel()
                delivering.deadline = trio.current_time() + grace

            nursery.start_soon(feed)
            nursery.start_soon(on_stop)
            with delivering:
                async with amap(self._deliver, receive, limit=self.workers) as results:
                    async for result in results:
                        self._write(result)
            nursery.cancel_scope.cancel()
        return self._cursor

    async def _feed(self, send: trio.MemorySendChannel[Order]) -> None:
        backoff = self._backoff()
        while True:
            request = ListOrdersRequest(after_id=self._fed, follow=True)
            try:
                async for order in self.orders.list_orders(request):
                    await send.send(order)
                    self._fed = order.order_id
                    backoff.reset()
                raise rpc.RpcError(rpc.Status.UNAVAILABLE, "the orders stream ended")
            except rpc.RpcError as exc:
                delay = backoff.next_delay()
                log.warning(STREAM_BROKEN, after_id=self._fed, error=str(exc), delay_s=delay)
                await trio.sleep(delay)
                self._reconnects += 1

    async def _deliver(self, order: Order) -> _Result:
        await self._limiter.acquire(order.user_id)
        notification = Notification(
            order_id=order.order_id,
            user_id=order.user_id,
            text=f"order {order.order_id}: {order.quantity} x {order.item}",
        )
        backoff = self._backoff()
        attempts = 0
        while True:
            attempts += 1
            try:
                await self.downstream.send(notification)
            except rpc.RpcError as exc:
                if exc.code not in RETRYABLE:
                    return _Result(order, attempts, exc)
                self._refused += 1
                delay = backoff.next_delay()
                log.info(
                    DOWNSTREAM_REFUSED, order_id=order.order_id, code=exc.code.name, delay_s=delay
                )
                await trio.sleep(delay)
            else:
                return _Result(order, attempts, None)

    def _write(self, result: _Result) -> None:
        order, error = result.order, result.error
        if error is None:
            self._sent += 1
            log.info(
                NOTIFY_SENT,
                order_id=order.order_id,
                user_id=order.user_id,
                attempts=result.attempts,
            )
        else:
            self._failed += 1
            log.warning(
                NOTIFY_FAILED, order_id=order.order_id, code=error.code.name, message=error.message
            )
        self._cursor = order.order_id
