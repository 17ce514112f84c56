"""The order service's database: one ``orders`` table in SQLite (WAL), used from trio.

The pool of connections, the worker threads and what cancellation does are
:class:`examples.sqlite_pool.SqlitePool`'s; this module adds the ``orders`` queries.
Order ids are SQLite's ``INTEGER PRIMARY KEY``: they grow, so "the orders after id N"
is how a reader (``ListOrders``, the notifier) resumes where it stopped.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from examples.sqlite_pool import DatabaseStatistics, SqlitePool

__all__ = ["DatabaseStatistics", "OrderDatabase", "OrderRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id INTEGER PRIMARY KEY,
    user_id  INTEGER NOT NULL,
    item     TEXT NOT NULL,
    quantity INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, order_id);
"""

_COLUMNS = "order_id, user_id, item, quantity"


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One row of the ``orders`` table."""

    order_id: int
    user_id: int
    item: str
    quantity: int


class OrderDatabase(SqlitePool):
    """The ``orders`` table. An async context manager: the connections close on exit."""

    SCHEMA = _SCHEMA

    async def create_order(self, user_id: int, item: str, quantity: int) -> OrderRow:
        """Insert an order and return it with its new id. One query in a worker thread."""

        def insert(conn: sqlite3.Connection) -> OrderRow:
            cursor = conn.execute(
                "INSERT INTO orders (user_id, item, quantity) VALUES (?, ?, ?)",
                (user_id, item, quantity),
            )
            assert cursor.lastrowid is not None
            return OrderRow(cursor.lastrowid, user_id, item, quantity)

        return await self._run(insert, write=True)

    async def get_order(self, order_id: int) -> OrderRow | None:
        """Return the order with ``order_id``, or None. One query in a worker thread."""

        def query(conn: sqlite3.Connection) -> OrderRow | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)
            ).fetchone()
            return None if row is None else OrderRow(*row)

        return await self._run(query, write=False)

    async def list_orders(
        self, *, after_id: int, limit: int, user_id: int | None = None
    ) -> list[OrderRow]:
        """Return up to ``limit`` orders with ``order_id > after_id`` in id order (a page),
        only ``user_id``'s when given. One query in a worker thread."""

        def page(conn: sqlite3.Connection) -> list[OrderRow]:
            if user_id is None:
                sql = f"SELECT {_COLUMNS} FROM orders WHERE order_id > ? ORDER BY order_id LIMIT ?"
                rows = conn.execute(sql, (after_id, limit)).fetchall()
            else:
                sql = (
                    f"SELECT {_COLUMNS} FROM orders WHERE user_id = ? AND order_id > ? "
                    "ORDER BY order_id LIMIT ?"
                )
                rows = conn.execute(sql, (user_id, after_id, limit)).fetchall()
            return [OrderRow(*row) for row in rows]

        return await self._run(page, write=False)
