"""The order service: orders in SQLite, each one's user checked with the user service.

``CreateOrder`` validates the user by calling ``users.get_user`` through the channel the
service was opened with (``registry://HOST:PORT/users`` under ``serve``). The call is made
inside the handler, so it inherits what is left of the caller's deadline and joins the
caller's trace (the access logs show GetUser as a child span of CreateOrder). When the
caller gives up, the server cancels the handler and with it the GetUser behind it.

Hot users are cheap: a small TTL/LRU cache (:class:`examples.user_service.cache.TTLCache`,
with :class:`trio_micro.SingleFlight` inside) keeps the users found, and concurrent
CreateOrders for one uncached user make one GetUser between them. A missing user is not
cached, so a user created meanwhile can order at once.

Errors, as gRPC services answer them:

* a request the types refuse (a quantity < 1 or above :data:`MAX_QUANTITY`, an empty or
  oversized item): ``INVALID_ARGUMENT`` naming the field, before the handler runs;
* an unknown user: ``FAILED_PRECONDITION`` (the request is well formed, the system is not
  in a state to accept it);
* users is down, refuses, or does not answer within ``users_timeout`` (even when the
  caller set no deadline): ``UNAVAILABLE``, saying so; nothing is stored, the caller may
  retry. No CreateOrder waits longer than ``users_timeout`` for users.

``ListOrders`` streams orders in id order after ``after_id``; with ``follow`` it does not
end but waits for new ones (polling the database every :data:`FOLLOW_POLL` seconds, so it
sees orders written by other replicas sharing the file, and waking at once for its own).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Final

import msgspec
import trio

import trio_micro.registry  # noqa: F401 - registers the registry:// and etcd:// targets
from examples.options import positive_int, positive_seconds
from examples.targets import tls_context
from examples.user_service.cache import TTLCache
from examples.user_service.service import GetUserRequest, User, UserService
from trio_micro import rpc

from .database import OrderDatabase, OrderRow

__all__ = [
    "FOLLOW_POLL",
    "MAX_ITEM_LENGTH",
    "MAX_QUANTITY",
    "CreateOrderRequest",
    "GetOrderRequest",
    "ListOrdersRequest",
    "Order",
    "OrderService",
    "UserCheck",
]

#: Largest quantity of one order; more is ``INVALID_ARGUMENT`` (an oversized order).
MAX_QUANTITY: Final = 1_000
#: Longest item name, in characters.
MAX_ITEM_LENGTH: Final = 200
#: Seconds between database polls of a ``ListOrders(follow=True)`` stream.
FOLLOW_POLL: Final = 0.2

Id = Annotated[int, msgspec.Meta(ge=1, le=2**62)]


class CreateOrderRequest(msgspec.Struct, frozen=True):
    user_id: Id
    item: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ITEM_LENGTH, pattern=r"\S")]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]


class GetOrderRequest(msgspec.Struct, frozen=True):
    order_id: Id


class ListOrdersRequest(msgspec.Struct, frozen=True):
    after_id: Annotated[int, msgspec.Meta(ge=0)] = 0
    user_id: Id | None = None
    page_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    follow: bool = False


class Order(msgspec.Struct, frozen=True):
    order_id: int
    user_id: int
    item: str
    quantity: int


def _order(row: OrderRow) -> Order:
    return Order(order_id=row.order_id, user_id=row.user_id, item=row.item, quantity=row.quantity)


class UserCheck:
    """Is there a user with this id? Asks the user service, remembering the users found.

    Args:
        users: A stub of the user service (``channel.stub(UserService)``).
        cache: Where found users are kept (a missing user is never cached).
        timeout: Most seconds one check waits for users, whatever the caller's deadline.
    """

    def __init__(self, users: UserService, cache: TTLCache[int, User], *, timeout: float) -> None:
        self.users = users
        self.cache = cache
        self.timeout = timeout

    async def _get_user(self, user_id: int) -> User:
        return await self.users.get_user(GetUserRequest(user_id=user_id))

    async def check(self, user_id: int) -> User:
        """Return the user, or raise the ``RpcError`` CreateOrder answers with.

        A checkpoint unless the user is cached. Runs under the caller's deadline and at
        most ``timeout`` seconds; cancellation cancels the GetUser call (or, when others
        wait for the same user, hands the call over to one of them).

        Raises:
            RpcError: ``FAILED_PRECONDITION`` for an unknown user, ``UNAVAILABLE`` when
                users fails, refuses or is too slow.
        """
        try:
            with trio.fail_after(self.timeout):
                user, _ = await self.cache.get_or_load(user_id, self._get_user)
        except trio.TooSlowError:
            raise rpc.RpcError(
                rpc.Status.UNAVAILABLE,
                f"cannot check user_id={user_id}: the users service did not answer within "
                f"{self.timeout:g} s; the order was not created, retry later",
            ) from None
        except rpc.RpcError as exc:
            if exc.code is rpc.Status.NOT_FOUND:
                raise rpc.RpcError(
                    rpc.Status.FAILED_PRECONDITION,
                    f"no user with user_id={user_id}; the order was not created",
                ) from exc
            raise rpc.RpcError(
                rpc.Status.UNAVAILABLE,
                f"cannot check user_id={user_id}: the users service failed ({exc}); "
                "the order was not created, retry later",
            ) from exc
        return user


class OrderService(rpc.Service, name="orders"):
    """The order service. Give it an open database and a :class:`UserCheck`, or use
    :meth:`open`."""

    def __init__(self, db: OrderDatabase, users: UserCheck) -> None:
        self.db = db
        self.users = users
        self._new_order = trio.Event()  # set (and replaced) on every CreateOrder

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        *,
        db: str | os.PathLike[str],
        users: str,
        cache_size: str | int = 1_000,
        cache_ttl: str | float = 5.0,
        users_timeout: str | float = 5.0,
        threads: str | int = 4,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> AsyncIterator[OrderService]:
        """Open the database and a channel to the user service; yield a service using them.

        What ``trio-micro serve examples.orders:OrderService -o db=PATH -o
        users=registry://HOST:PORT/users`` calls, so the options may be strings. Entering
        and leaving are checkpoints; however the body ends, the channel and the
        connections are closed.

        Args:
            db: Path of the SQLite database file (created with its schema if missing).
            users: Target of the user service: ``registry://HOST:PORT/users``,
                ``HOST:PORT``, or any target :func:`trio_micro.rpc.open_channel` takes.
            cache_size: Users remembered at most (LRU beyond that).
            cache_ttl: Seconds a found user is remembered.
            users_timeout: Most seconds one CreateOrder waits for users.
            threads: Worker threads (and connections) for database queries.
            tls_ca, tls_cert, tls_key: PEM files: with them, users and the registry
                behind ``users`` are reached over TLS, verified with ``tls_ca``, this
                replica presenting ``tls_cert`` (mutual TLS; the demo's ``--tls``).

        Raises:
            TypeError: An unknown option (raised by the call, before entering).
            ValueError: An option has a bad value, or the database can't be opened; the
                message names the option and shows the value (a certificate file that
                can't be used: :class:`rpc.TlsFileError`, a ValueError naming it).
        """
        if not isinstance(db, str | os.PathLike) or not os.fspath(db):
            raise ValueError(f"db must be the path of a SQLite database file, got {db!r}")
        if not isinstance(users, str) or not users:
            raise ValueError(f"users must be the target of the user service, got {users!r}")
        cache: TTLCache[int, User] = TTLCache(
            max_size=positive_int("cache_size", cache_size),
            ttl=positive_seconds("cache_ttl", cache_ttl),
        )
        timeout = positive_seconds("users_timeout", users_timeout)
        async with (
            OrderDatabase.open_option(db, threads=positive_int("threads", threads)) as database,
            rpc.open_channel(users, ssl_context=tls_context(tls_ca, tls_cert, tls_key)) as channel,
        ):
            check = UserCheck(channel.stub(UserService), cache, timeout=timeout)
            yield cls(database, check)

    @rpc.unary
    async def create_order(self, req: CreateOrderRequest) -> Order:
        await self.users.check(req.user_id)
        row = await self.db.create_order(req.user_id, req.item, req.quantity)
        self._new_order.set()
        self._new_order = trio.Event()
        return _order(row)

    @rpc.unary(idempotent=True)
    async def get_order(self, req: GetOrderRequest) -> Order:
        row = await self.db.get_order(req.order_id)
        if row is None:
            raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no order with order_id={req.order_id}")
        return _order(row)

    @rpc.server_stream
    async def list_orders(self, req: ListOrdersRequest) -> AsyncIterator[Order]:
        """Stream orders after ``after_id`` in id order; with ``follow``, never end."""
        after = req.after_id
        while True:
            new_order = self._new_order
            page = await self.db.list_orders(
                after_id=after, limit=req.page_size, user_id=req.user_id
            )
            for row in page:
                yield _order(row)
            if page:
                after = page[-1].order_id
            if len(page) == req.page_size:
                continue
            if not req.follow:
                return
            with trio.move_on_after(FOLLOW_POLL):
                await new_order.wait()
