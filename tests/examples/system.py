"""The example system in one process, for the order service and notifier tests.

``open_users`` serves the user service (or a stand-in named ``users``), ``open_orders``
the order service calling it; both with the access log, whose JSON lines go to one
buffer that :func:`call_records` reads back.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import structlog
import trio
from prometheus_client import CollectorRegistry

from examples.orders import OrderService
from examples.user_service import UserService
from examples.user_service.database import UserDatabase
from examples.user_service.service import GetUserRequest, User
from trio_micro import analysis, observe, rpc
from trio_micro.observe import CallRecord

#: Users 1..USERS exist in the seeded database.
USERS = 20


def address(server: rpc.Server) -> str:
    host, port = server.address[:2]
    return f"{host}:{port}"


@contextmanager
def json_log() -> Iterator[io.BytesIO]:
    """JSON lines from ``configure_logging``, as the services write them under ``serve``."""
    out = io.BytesIO()
    observe.configure_logging(format="json", file=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def call_records(log: io.BytesIO) -> list[CallRecord]:
    """The access-log records written so far."""
    return list(analysis.iter_call_records(log.getvalue().splitlines()))


async def seeded_users(tmp_path: Path) -> Path:
    path = tmp_path / "users.db"
    async with UserDatabase(path) as db:
        await db.seed(USERS)
    return path


class StuckUsers(rpc.Service, name="users"):
    """A user service whose GetUser never answers; it notes when it is cancelled."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = trio.Event()

    @rpc.unary(idempotent=True)
    async def get_user(self, req: GetUserRequest) -> User:
        self.calls += 1
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled.set()
        raise AssertionError("unreachable")  # pragma: no cover


@asynccontextmanager
async def open_server(service: rpc.Service) -> AsyncIterator[rpc.Server]:
    async with rpc.open_server(
        [service], host="127.0.0.1", port=0, interceptors=[rpc.AccessLogInterceptor()]
    ) as server:
        yield server


@asynccontextmanager
async def open_users(db: Path) -> AsyncIterator[rpc.Server]:
    """The real user service on 127.0.0.1, port 0."""
    async with (
        UserService.open(db=db, metrics_registry=CollectorRegistry()) as users,
        open_server(users) as server,
    ):
        yield server


@asynccontextmanager
async def open_orders(
    tmp_path: Path, users: str, **options: str
) -> AsyncIterator[tuple[OrderService, rpc.Channel]]:
    """The order service calling ``users``, and a channel to it."""
    async with (
        OrderService.open(db=tmp_path / "orders.db", users=users, **options) as orders,
        open_server(orders) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        yield orders, channel
