"""What one client may hold on a server: buffered bytes, connections, stalled streams.

Theory of operation
-------------------
Every resource a client can make the server hold has a bound the client can't raise
(docs/rpc.md, "Limits and worst-case memory"):

* **Request bytes** (:class:`ByteBudget`). A REQUEST's payload stays in memory until its
  call ends. Each connection has a budget (``max_buffered_bytes``), shared with the bytes
  its writer has queued and not yet sent, and the whole server has one more
  (``max_server_buffered_bytes``) over every connection's requests. A REQUEST that would
  go over either is refused at once with ``RESOURCE_EXHAUSTED`` (that call only; its
  payload is dropped), unless the connection has no call in progress -- one call of up to
  ``max_frame_size`` always fits, so a large request is never refused for being large.
  Refusing rather than pausing the read keeps CREDIT and CANCEL frames flowing: a pause
  could wait on a stream that waits for the very CREDIT the pause holds back.
* **Stalled streams** (``max_stalled_streams``, ``stall_timeout``; used by
  :mod:`._server_calls`). A server-stream with no credit waits for the client's CREDIT,
  and holds its handler's state meanwhile. At most ``max_stalled_streams`` of a
  connection's streams wait at once (one more fails with ``RESOURCE_EXHAUSTED``), and one
  that waits longer than ``stall_timeout`` fails with ``RESOURCE_EXHAUSTED`` too, which
  frees its handler.
* **Connections** (:class:`PeerCounts`): ``max_connections`` in all and
  ``max_connections_per_peer`` from one host; the excess is refused at once with a GOAWAY
  that says which limit, and at most ``_MAX_REFUSING`` refusals are in flight (beyond
  that a connection is closed without one), so a connection flood can't pin descriptors.
* **Log lines** (:class:`LogThrottle`): an error that repeats, such as ``accept()``
  failing with ``EMFILE`` or refused connections, is logged at most once per interval,
  with the count of the ones not logged.
"""

from __future__ import annotations

from typing import Final, final

__all__: list[str] = []

#: ``serve``'s default ``max_buffered_bytes``: per connection.
DEFAULT_MAX_BUFFERED_BYTES: Final = 8 << 20
#: ``serve``'s default ``max_server_buffered_bytes``: over all connections.
DEFAULT_MAX_SERVER_BUFFERED_BYTES: Final = 256 << 20
#: Refusals (GOAWAY written, then the socket drained and closed) in flight at once; beyond
#: this a refused connection is closed at once, without the GOAWAY.
MAX_REFUSING: Final = 64


@final
class ByteBudget:
    """A count of bytes held against a limit (synchronous, no checkpoint).

    Attributes:
        limit: Bytes that may be held at once.
        used: Bytes held now.
        refused: Requests refused for want of room, since creation.
    """

    __slots__ = ("limit", "refused", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.refused = 0

    def take(self, n: int) -> None:
        """Hold ``n`` more bytes (the caller checked that they fit)."""
        self.used += n

    def give(self, n: int) -> None:
        """Release ``n`` bytes taken with :meth:`take`."""
        self.used -= n


def admit_request(size: int, connection: ByteBudget, server: ByteBudget, queued: int) -> str | None:
    """Charge a REQUEST of ``size`` payload bytes, or say why not.

    ``queued`` is what the connection's writer holds. Returns ``None`` after charging both
    budgets, or the name of the limit it would exceed (nothing charged). A connection with
    nothing charged always gets its request in: one call of up to ``max_frame_size``
    always fits.
    """
    if connection.used:
        if connection.used + queued + size > connection.limit:
            connection.refused += 1
            return "max_buffered_bytes"
        if server.used + size > server.limit:
            server.refused += 1
            return "max_server_buffered_bytes"
    connection.take(size)
    server.take(size)
    return None


@final
class PeerCounts:
    """Open connections per peer host; entries at zero are dropped (bounded by the
    number of connections)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __getitem__(self, host: str) -> int:
        return self._counts.get(host, 0)

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, host: str) -> None:
        self._counts[host] = self._counts.get(host, 0) + 1

    def remove(self, host: str) -> None:
        left = self._counts[host] - 1
        if left:
            self._counts[host] = left
        else:
            del self._counts[host]


@final
class LogThrottle:
    """At most one log line per ``interval`` seconds for a repeating event.

    ``now`` is passed in (any monotonic clock), so this is testable with a mock clock.
    """

    __slots__ = ("_next", "_suppressed", "interval")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = -float("inf")
        self._suppressed = 0

    def ready(self, now: float) -> int | None:
        """Record one occurrence at ``now``; return how many occurrences the line should
        report (this one plus those suppressed since the last line), or ``None`` when no
        line is due yet."""
        if now < self._next:
            self._suppressed += 1
            return None
        count = self._suppressed + 1
        self._suppressed = 0
        self._next = now + self.interval
        return count
