"""The user service's database: SQLite in WAL mode, used without blocking the event loop.

The pool of connections, the worker threads and what cancellation does are
:class:`examples.sqlite_pool.SqlitePool`'s; this module adds the ``users`` table's queries.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from examples.sqlite_pool import DatabaseStatistics, SqlitePool

__all__ = ["DatabaseStatistics", "UserDatabase", "UserRow"]

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


class UserDatabase(SqlitePool):
    """A pool of SQLite connections to one database file, used from trio.

    An async context manager (see :class:`~examples.sqlite_pool.SqlitePool`): the
    connections are closed on exit.
    """

    SCHEMA = _SCHEMA

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
