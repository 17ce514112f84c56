"""The user service: the article's ``GetUser`` done properly, plus create, update and list.

``GetUser`` answers from a TTL/LRU cache in front of SQLite; concurrent misses for one id
cause one database query (:class:`~examples.user_service.cache.TTLCache` coalesces them),
and the reply says where it came from (``source`` is ``"cache"`` or ``"database"``, as in
the article). Writes invalidate the cache. Requests are validated by their msgspec types
(a negative id, an empty name or a malformed email is ``INVALID_ARGUMENT`` with the field
path before the handler runs); a missing user is ``NOT_FOUND``.

Each call binds ``cache="hit"`` or ``cache="miss"`` to the structlog context, so the
access log record of the call carries it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
import structlog

from trio_micro import rpc

from .cache import TTLCache
from .database import UserDatabase, UserRow

__all__ = [
    "CreateUserRequest",
    "GetUserRequest",
    "ListUsersRequest",
    "UpdateUserRequest",
    "User",
    "UserService",
]

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


class User(msgspec.Struct, frozen=True):
    user_id: int
    name: str
    email: str
    source: str


def _user(row: UserRow, source: str) -> User:
    return User(user_id=row.user_id, name=row.name, email=row.email, source=source)


class UserService(rpc.Service, name="users"):
    """The user service. Give it an open database and a cache."""

    def __init__(self, db: UserDatabase, cache: TTLCache[int, UserRow | None]) -> None:
        self.db = db
        self.cache = cache

    @rpc.unary(idempotent=True)
    async def get_user(self, req: GetUserRequest) -> User:
        row, hit = await self.cache.get_or_load(req.user_id, self.db.get_user)
        structlog.contextvars.bind_contextvars(cache="hit" if hit else "miss")
        if row is None:
            raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no user with user_id={req.user_id}")
        return _user(row, "cache" if hit else "database")

    @rpc.unary
    async def create_user(self, req: CreateUserRequest) -> User:
        row = await self.db.create_user(req.name, req.email)
        self.cache.invalidate(row.user_id)  # a cached "no such user" must not survive
        return _user(row, "database")

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
