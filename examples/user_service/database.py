"""The user service's database: SQLite in WAL mode, used without blocking the event loop.

Theory of operation
-------------------
SQLite calls block, so they run in worker threads through :func:`trio.to_thread.run_sync`.
A fixed pool of connections (one per allowed thread) is opened up front; a
:class:`trio.CapacityLimiter` of the same size bounds the threads, and each call takes a
connection from the pool for the duration of one thread call. WAL mode lets readers run
beside the one writer, and several *processes* (the demo's replicas) can share one
database file. ``busy_timeout`` makes a writer wait for a lock instead of failing.

Cancellation: a call cancelled while it waits for a thread slot is cancelled cleanly;
once the statement runs in a thread it is not abandoned (``abandon_on_cancel=False``),
so a connection is never handed back while a thread still uses it. The caller sees the
cancellation as soon as the statement finishes.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio

__all__ = ["DatabaseStatistics", "UserDatabase", "UserRow"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    email   TEXT NOT NULL
)
"""

_FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Ken", "Frances", "John", "Radia")
_LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Thompson", "Allen")


@dataclass(frozen=True, slots=True)
class UserRow:
    """One row of the ``users`` table."""

    user_id: int
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class DatabaseStatistics:
    """Counters of a :class:`UserDatabase`: queries run (reads and writes)."""

    queries: int
    reads: int
    writes: int


class UserDatabase:
    """A pool of SQLite connections to one database file, used from trio.

    Use :meth:`open` (an async context manager); the connections are closed on exit.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 4) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self.path = Path(path)
        self._limiter = trio.CapacityLimiter(threads)
        self._threads = threads
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._reads = 0
        self._writes = 0
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> UserDatabase:
        await trio.to_thread.run_sync(self._open_all)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open_all(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(self._threads):
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self._all.append(conn)
        self._all[0].execute(_SCHEMA)
        self._idle = list(self._all)

    async def aclose(self) -> None:
        """Close every connection. Idempotent. A checkpoint."""
        self._closed = True
        conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            conn.close()
        await trio.lowlevel.checkpoint()

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        if self._closed:
            raise trio.ClosedResourceError("the database is closed")
        async with self._limiter:
            conn = self._idle.pop()
            try:
                return await trio.to_thread.run_sync(fn, conn)
            finally:
                self._idle.append(conn)
                if write:
                    self._writes += 1
                else:
                    self._reads += 1

    # -- queries ----------------------------------------------------------------------

    async def get_user(self, user_id: int) -> UserRow | None:
        """Return the user with ``user_id``, or None. One query in a worker thread."""

        def query(conn: sqlite3.Connection) -> UserRow | None:
            row = conn.execute(
                "SELECT user_id, name, email FROM users WHERE user_id = ?", (user_id,)
            ).fetchone()
            return None if row is None else UserRow(*row)

        return await self._run(query, write=False)

    async def create_user(self, name: str, email: str) -> UserRow:
        """Insert a user and return it with its new id."""

        def insert(conn: sqlite3.Connection) -> UserRow:
            cursor = conn.execute("INSERT INTO users (name, email) VALUES (?, ?)", (name, email))
            assert cursor.lastrowid is not None
            return UserRow(cursor.lastrowid, name, email)

        return await self._run(insert, write=True)

    async def update_user(self, user_id: int, name: str, email: str) -> UserRow | None:
        """Update a user; return the new row, or None when there is no such user."""

        def update(conn: sqlite3.Connection) -> UserRow | None:
            cursor = conn.execute(
                "UPDATE users SET name = ?, email = ? WHERE user_id = ?", (name, email, user_id)
            )
            return UserRow(user_id, name, email) if cursor.rowcount else None

        return await self._run(update, write=True)

    async def list_users(self, *, after_id: int, limit: int) -> list[UserRow]:
        """Return up to ``limit`` users with ``user_id > after_id``, in id order (a page)."""

        def page(conn: sqlite3.Connection) -> list[UserRow]:
            rows = conn.execute(
                "SELECT user_id, name, email FROM users WHERE user_id > ? ORDER BY user_id LIMIT ?",
                (after_id, limit),
            ).fetchall()
            return [UserRow(*row) for row in rows]

        return await self._run(page, write=False)

    async def count(self) -> int:
        """Return the number of users."""

        def count(conn: sqlite3.Connection) -> int:
            (n,) = conn.execute("SELECT COUNT(*) FROM users").fetchone()
            return int(n)

        return await self._run(count, write=False)

    async def create_users(self, users: Sequence[tuple[str, str]]) -> list[int]:
        """Insert ``(name, email)`` pairs in one transaction; return their new ids.

        All or nothing: a failure rolls the whole batch back. One query in a worker thread.
        """

        def insert(conn: sqlite3.Connection) -> list[int]:
            conn.execute("BEGIN IMMEDIATE")
            ids: list[int] = []
            try:
                for name, email in users:
                    cursor = conn.execute(
                        "INSERT INTO users (name, email) VALUES (?, ?)", (name, email)
                    )
                    assert cursor.lastrowid is not None
                    ids.append(cursor.lastrowid)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return ids

        return await self._run(insert, write=True)

    async def seed(self, n: int, *, seed: int = 0, replace: bool = True) -> int:
        """Load ``n`` generated users (ids 1..n), in one transaction.

        The users are the same for the same ``n`` and ``seed``. With ``replace`` (the
        default) the table's previous contents are deleted first and ``n`` is returned.
        Without it, only the ids in 1..n that are missing are inserted and existing rows
        are left alone, so seeding twice changes nothing: the number of rows inserted is
        returned. One query in a worker thread.

        Raises:
            ValueError: ``n`` is not an int >= 0.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        rng = random.Random(seed)
        rows: Sequence[tuple[int, str, str]] = [
            (
                i,
                f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                f"user{i}@example.com",
            )
            for i in range(1, n + 1)
        ]
        verb = "INSERT" if replace else "INSERT OR IGNORE"

        def load(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if replace:
                    conn.execute("DELETE FROM users")
                before = conn.total_changes
                conn.executemany(f"{verb} INTO users (user_id, name, email) VALUES (?, ?, ?)", rows)
                inserted = conn.total_changes - before
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return inserted

        return await self._run(load, write=True)

    def statistics(self) -> DatabaseStatistics:
        """Return the query counters. Not a checkpoint."""
        return DatabaseStatistics(
            queries=self._reads + self._writes, reads=self._reads, writes=self._writes
        )
