"""A pool of SQLite connections used from trio, shared by the example services' databases.

Theory of operation
-------------------
SQLite calls block, so they run in worker threads through :func:`trio.to_thread.run_sync`.
A fixed pool of connections (one per allowed thread) is opened up front; :class:`FairSlots`
of the same number bounds the threads, and each call takes a connection from the pool for
the duration of one thread call.

Fairness between clients (issue #15): the slots are not first come, first served as
:class:`trio.CapacityLimiter`'s are. A client that starts 2,000 page queries at once (20
connections of 99 streams, within every server limit) would queue them all ahead of another
client's one ``get_user``, which then waited 2.6 to 3.9 s (benchmarks/hostile_bench.py,
``many-within-limits``). Waiters queue per RPC connection of the calling task, and a freed
slot goes to the connections in turn: a call waits for about one statement per other busy
connection, whatever their backlog. WAL mode lets readers run
beside the one writer, and several *processes* (the demo's replicas) can share one
database file. ``busy_timeout`` makes a writer wait for a lock instead of failing.

Cancellation: a call cancelled while it waits for a thread slot is cancelled cleanly;
once the statement runs in a thread it is not abandoned (``abandon_on_cancel=False``),
so a connection is never handed back while a thread still uses it. The caller sees the
cancellation as soon as the statement finishes.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

import trio

from trio_micro import Backoff, rpc

__all__ = ["DatabaseStatistics", "FairSlots", "SqlitePool"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DatabaseStatistics:
    """Counters of a :class:`SqlitePool`: queries run (reads and writes)."""

    queries: int
    reads: int
    writes: int


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.granted = False


class FairSlots:
    """``total`` slots, handed to the waiting keys in turn (round robin), each key's
    waiters in order; see the module docs.

    Synchronous except :meth:`acquire`. A key is any string; :meth:`caller` gives the
    calling task's RPC connection.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        # Key -> its waiters; the dict's order is the turn order (a key served moves last).
        self._queues: dict[str, deque[_Waiter]] = {}

    @staticmethod
    def caller() -> str:
        """The peer (``host:port``) of the RPC call the current task serves, or ``""``."""
        try:
            return rpc.current_call().peer
        except RuntimeError:
            return ""

    async def acquire(self, key: str) -> None:
        """Take a slot, waiting for ``key``'s turn when none is free. A checkpoint;
        cancelled while waiting, it takes nothing."""
        await trio.lowlevel.checkpoint()
        if self.used < self.total and not self._queues:
            self.used += 1
            return
        waiter = _Waiter()
        queue = self._queues.setdefault(key, deque())
        queue.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:  # handed a slot as the cancellation came: pass it on
                self.release()
            else:
                queue.remove(waiter)
                if not queue and self._queues.get(key) is queue:
                    del self._queues[key]
            raise

    def release(self) -> None:
        """Give a slot back: to the next key's first waiter, if any waits."""
        if not self._queues:
            self.used -= 1
            return
        key = next(iter(self._queues))
        queue = self._queues.pop(key)
        waiter = queue.popleft()
        if queue:
            self._queues[key] = queue  # back in line, after the other keys
        waiter.granted = True
        waiter.event.set()


class SqlitePool:
    """A pool of SQLite connections to one database file, used from trio.

    Subclasses set :attr:`SCHEMA` (run once when the pool opens) and add their queries
    on top of :meth:`_run`. Use it as an async context manager; the connections are
    closed on exit.
    """

    #: SQL run when the pool opens (``CREATE TABLE IF NOT EXISTS ...``).
    SCHEMA = ""

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 4) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self.path = Path(path)
        self._slots = FairSlots(threads)
        self._threads = threads
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._reads = 0
        self._writes = 0
        self._closed = False

    async def __aenter__(self) -> Self:
        await trio.to_thread.run_sync(self._open_all)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open_all(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(self._threads):
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._all.append(conn)
            conn.execute("PRAGMA busy_timeout=5000")  # first: replicas open the file at once
            _while_locked(lambda c=conn: c.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")
        if self.SCHEMA:
            # IMMEDIATE takes the write lock first, waiting (busy_timeout) for another
            # process creating the same schema; a deferred transaction would fail at once
            # ("database is locked") when it upgrades its read lock.
            schema = self.SCHEMA.strip().rstrip(";")
            first = self._all[0]
            _while_locked(lambda: first.executescript(f"BEGIN IMMEDIATE;\n{schema};\nCOMMIT;"))
        self._idle = list(self._all)

    @classmethod
    @asynccontextmanager
    async def open_option(cls, db: str | os.PathLike[str], *, threads: int) -> AsyncIterator[Self]:
        """Open a pool on ``db`` for a service's ``open`` (``-o db=PATH``); close it on exit.

        Raises:
            ValueError: The database can't be opened; the message names ``db=``.
        """
        pool = cls(db, threads=threads)
        try:
            await pool.__aenter__()
        except (sqlite3.Error, OSError) as exc:
            await pool.aclose()
            raise ValueError(f"db={os.fspath(db)!r}: cannot open the database: {exc}") from exc
        try:
            yield pool
        finally:
            await pool.aclose()

    async def aclose(self) -> None:
        """Close every connection. Idempotent. A checkpoint."""
        self._closed = True
        conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            conn.close()
        await trio.lowlevel.checkpoint()

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``fn(connection)`` in a worker thread; see the module docs on cancellation."""
        if self._closed:
            raise trio.ClosedResourceError("the database is closed")
        await self._slots.acquire(FairSlots.caller())
        try:
            conn = self._idle.pop()
            try:
                return await trio.to_thread.run_sync(fn, conn)
            finally:
                self._idle.append(conn)
                if write:
                    self._writes += 1
                else:
                    self._reads += 1
        finally:
            self._slots.release()

    def statistics(self) -> DatabaseStatistics:
        """Return the query counters. Not a checkpoint."""
        return DatabaseStatistics(
            queries=self._reads + self._writes, reads=self._reads, writes=self._writes
        )


_LOCKED_FOR_AT_MOST = 10.0  # seconds


def _while_locked(step: Callable[[], object]) -> None:
    """Run ``step`` (in a worker thread), again after a backoff while SQLite says "database
    is locked", for at most ``_LOCKED_FOR_AT_MOST`` seconds. Switching a new file to WAL
    needs its exclusive lock, and SQLite answers that at once, without the busy handler,
    when another process is doing the same (replicas started together)."""
    backoff = Backoff(initial=0.01, maximum=0.5)
    give_up = time.monotonic() + _LOCKED_FOR_AT_MOST
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= give_up:
                raise
            time.sleep(backoff.next_delay())
