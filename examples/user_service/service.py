"""The user service: the article's ``GetUser`` done properly, plus create, update and list.

``GetUser`` answers from a TTL/LRU cache in front of SQLite; concurrent misses for one id
cause one database query (:class:`~examples.user_service.cache.TTLCache` coalesces them),
and the reply says where it came from (``source`` is ``"cache"`` or ``"database"``, as in
the article). Writes invalidate the cache. Requests are validated by their msgspec types
(a negative id, an empty name or a malformed email is ``INVALID_ARGUMENT`` with the field
path before the handler runs); a missing user is ``NOT_FOUND``.

Each call binds ``cache="hit"`` or ``cache="miss"`` to the structlog context, so the
access log record of the call carries it. Each ``GetUser`` that queries the database (the
one load of a coalesced group of misses, not the callers waiting on it) logs one
``users.db.query`` record with the ``user_id`` and, inside a call, the ``server`` that
the access log's records carry (this replica's address, from :func:`rpc.current_call`),
so ``trio-micro logs summary`` counts the queries of every replica under its address.

:meth:`UserService.open` exports the cache's :meth:`~.cache.TTLCache.statistics` as
Prometheus metrics (:func:`trio_micro.observe.register_stats_source`, read at scrape
time): counters ``trio_micro_user_cache_{hits,misses,loads,evictions,expirations}_total``
and gauges ``trio_micro_user_cache_{size,max_size}``, unregistered when it closes.

As a process: ``trio-micro serve examples.user_service:UserService -o db=PATH`` serves it
through :meth:`UserService.open` (options ``db``, ``cache_size``, ``cache_ttl``,
``threads``); ``python -m examples.user_service seed --db PATH --users N`` seeds the
database.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Final

import msgspec
import structlog
from prometheus_client import CollectorRegistry

from examples.options import positive_int, positive_seconds
from trio_micro import observe, rpc

from .cache import TTLCache
from .database import UserDatabase, UserRow

__all__ = [
    "CACHE_METRICS",
    "DB_QUERY",
    "CreateUserRequest",
    "GetUserRequest",
    "ListUsersRequest",
    "UpdateUserRequest",
    "User",
    "UserService",
]

#: Log event: ``GetUser`` queried the database for ``user_id`` (one per cache load).
DB_QUERY: Final = "users.db.query"
#: The values of the ``cache`` field each call binds (``trio-micro logs --group-by cache``).
CACHE_HIT: Final = "hit"
CACHE_MISS: Final = "miss"
# Users per SQLite transaction in import_users.
IMPORT_BATCH: Final = 500

#: Middle part of the cache's metric names: ``trio_micro_user_cache_*``.
CACHE_METRICS: Final = "user_cache"

# The fields of CacheStatistics that only grow: exported as counters (``..._total``).
_CACHE_COUNTERS: Final = ("hits", "misses", "loads", "evictions", "expirations")

log = structlog.get_logger("users")

UserId = Annotated[int, msgspec.Meta(ge=1, le=2**62)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")]
Email = Annotated[str, msgspec.Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")]


class GetUserRequest(msgspec.Struct, frozen=True):
    user_id: UserId


class CreateUserRequest(msgspec.Struct, frozen=True):
    name: Name
    email: Email


class UpdateUserRequest(msgspec.Struct, frozen=True):
    user_id: UserId
    name: Name
    email: Email


class ListUsersRequest(msgspec.Struct, frozen=True):
    after_id: Annotated[int, msgspec.Meta(ge=0)] = 0
    page_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    limit: Annotated[int, msgspec.Meta(ge=0)] | None = None


class ImportSummary(msgspec.Struct, frozen=True):
    """What ``import_users`` did: users created, in how many transactions, the id range."""

    imported: int
    transactions: int
    first_id: int | None = None
    last_id: int | None = None


class User(msgspec.Struct, frozen=True):
    user_id: int
    name: str
    email: str
    source: str


def _user(row: UserRow, source: str) -> User:
    return User(user_id=row.user_id, name=row.name, email=row.email, source=source)


def _replica() -> dict[str, str]:
    """``{"server": "host:port"}`` for the call being handled, ``{}`` outside a call."""
    try:
        server = rpc.current_call().server
    except RuntimeError:  # not in an RPC handler (a direct call, a test)
        return {}
    return {"server": server} if server else {}


def _export_cache(
    cache: TTLCache[int, UserRow | None], registry: CollectorRegistry | None
) -> Callable[[], None]:
    """Register ``cache.statistics`` as ``trio_micro_user_cache_*``; return the unregister."""
    try:
        return observe.register_stats_source(
            CACHE_METRICS, cache.statistics, counters=_CACHE_COUNTERS, registry=registry
        )
    except ValueError as exc:  # the name is taken in this registry
        raise ValueError(
            f"metrics_registry: {CACHE_METRICS!r} is already exported to this registry "
            "(by another open UserService?); give each service in the process its own "
            f"(metrics_registry=prometheus_client.CollectorRegistry()): {exc}"
        ) from exc


class UserService(rpc.Service, name="users"):
    """The user service. Give it an open database and a cache, or use :meth:`open`."""

    def __init__(self, db: UserDatabase, cache: TTLCache[int, UserRow | None]) -> None:
        self.db = db
        self.cache = cache

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        *,
        db: str | os.PathLike[str],
        cache_size: str | int = 10_000,
        cache_ttl: str | float = 30.0,
        threads: str | int = 4,
        metrics_registry: CollectorRegistry | None = None,
    ) -> AsyncIterator[UserService]:
        """Open the database and a fresh cache; yield a service using them.

        This is what ``trio-micro serve examples.user_service:UserService -o db=PATH``
        calls, so the options may be strings, as they come from the command line. The
        database file and its schema are created if missing (WAL mode, so several
        replicas can share the file); the connections close on exit.

        The cache's statistics are exported as Prometheus metrics while the service is
        open: counters ``trio_micro_user_cache_{hits,misses,loads,evictions,
        expirations}_total``, gauges ``trio_micro_user_cache_size`` and ``..._max_size``
        (read at scrape time; ``/metrics`` of ``serve --debug-port`` shows them).

        Entering (the database opens in a worker thread) and leaving are checkpoints.
        However the body ends, cancellation included, the metrics are unregistered and
        the connections closed.

        Args:
            db: Path of the SQLite database file.
            cache_size: Users the cache holds at most (LRU beyond that).
            cache_ttl: Seconds a cached user (or a cached "no such user") is served.
            threads: Worker threads (and connections) for database queries.
            metrics_registry: Where the cache metrics go; default
                ``prometheus_client.REGISTRY``. One registry takes one service's cache at
                a time: give each service in a process its own (not settable with ``-o``).

        Raises:
            TypeError: An unknown option (raised by the call, before entering), or
                ``metrics_registry`` is not a ``CollectorRegistry``.
            ValueError: An option has a bad value, the database can't be opened, or
                another open service exports its cache to ``metrics_registry``; the
                message names the option and shows the value.
        """
        if not isinstance(db, str | os.PathLike) or not os.fspath(db):
            raise ValueError(f"db must be the path of a SQLite database file, got {db!r}")
        size = positive_int("cache_size", cache_size)
        ttl = positive_seconds("cache_ttl", cache_ttl)
        if metrics_registry is not None and not isinstance(metrics_registry, CollectorRegistry):
            raise TypeError(
                "metrics_registry must be a prometheus_client.CollectorRegistry, "
                f"got {metrics_registry!r}"
            )
        async with UserDatabase.open_option(
            db, threads=positive_int("threads", threads)
        ) as database:
            service = cls(database, TTLCache(max_size=size, ttl=ttl))
            unregister = _export_cache(service.cache, metrics_registry)
            try:
                yield service
            finally:
                unregister()

    async def _query_user(self, user_id: int) -> UserRow | None:
        # The cache's loader: runs once per coalesced group of misses.
        start = time.perf_counter()
        row = await self.db.get_user(user_id)
        # It runs in the task of the call that missed first (SingleFlight has no task of
        # its own), so current_call() is that call: its server is this replica's address.
        log.info(
            DB_QUERY,
            user_id=user_id,
            found=row is not None,
            duration_ms=round((time.perf_counter() - start) * 1000, 3),
            **_replica(),
        )
        return row

    @rpc.unary(idempotent=True)
    async def get_user(self, req: GetUserRequest) -> User:
        row, hit = await self.cache.get_or_load(req.user_id, self._query_user)
        structlog.contextvars.bind_contextvars(cache=CACHE_HIT if hit else CACHE_MISS)
        client = _verified_client()
        if client is not None:  # mutual TLS: who called, in the access record
            structlog.contextvars.bind_contextvars(client=client)
        if row is None:
            raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no user with user_id={req.user_id}")
        return _user(row, "cache" if hit else "database")

    @rpc.unary
    async def create_user(self, req: CreateUserRequest) -> User:
        row = await self.db.create_user(req.name, req.email)
        self.cache.invalidate(row.user_id)  # a cached "no such user" must not survive
        return _user(row, "database")

    @rpc.client_stream
    async def import_users(self, requests: rpc.RequestStream[CreateUserRequest]) -> ImportSummary:
        """Create every user the client streams, ``IMPORT_BATCH`` per SQLite transaction.

        Each batch is committed as it fills, so a call cancelled half-way keeps the batches
        committed before; the summary counts what was created.
        """
        batch: list[tuple[str, str]] = []
        imported = transactions = 0
        first: int | None = None
        last: int | None = None

        async def flush() -> None:
            nonlocal imported, transactions, first, last
            ids = await self.db.create_users(batch)
            for user_id in ids:
                self.cache.invalidate(user_id)  # a cached "no such user" must not survive
            imported += len(ids)
            transactions += 1
            first = ids[0] if first is None else first
            last = ids[-1]
            batch.clear()

        async for req in requests:
            batch.append((req.name, req.email))
            if len(batch) >= IMPORT_BATCH:
                await flush()
        if batch:
            await flush()
        return ImportSummary(imported, transactions, first, last)

    @rpc.bidi_stream
    async def get_users(
        self, requests: rpc.RequestStream[GetUserRequest], responses: rpc.ResponseSender[User]
    ) -> None:
        """Answer each requested id with its user, in order, from the cache when it can;
        an unknown id ends the call with ``NOT_FOUND``."""
        async for req in requests:
            row, hit = await self.cache.get_or_load(req.user_id, self._query_user)
            if row is None:
                raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no user with user_id={req.user_id}")
            await responses.send(_user(row, "cache" if hit else "database"))

    @rpc.unary(idempotent=True)
    async def update_user(self, req: UpdateUserRequest) -> User:
        row = await self.db.update_user(req.user_id, req.name, req.email)
        self.cache.invalidate(req.user_id)
        if row is None:
            raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no user with user_id={req.user_id}")
        return _user(row, "database")

    @rpc.server_stream
    async def list_users(self, req: ListUsersRequest) -> AsyncIterator[User]:
        """Stream users in id order, reading the database one page at a time."""
        after, remaining = req.after_id, req.limit
        while remaining is None or remaining > 0:
            size = req.page_size if remaining is None else min(req.page_size, remaining)
            page = await self.db.list_users(after_id=after, limit=size)
            if not page:
                return
            for row in page:
                yield _user(row, "database")
            after = page[-1].user_id
            if remaining is not None:
                remaining -= len(page)


def _verified_client() -> str | None:
    """The common name of the client certificate the server verified for this call (mutual
    TLS), else ``None`` (plain TCP, or the handler called directly, not by a server)."""
    try:
        identity = rpc.current_call().peer_identity
    except RuntimeError:
        return None
    return None if identity is None else identity.common_name
