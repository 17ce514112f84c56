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

from collections.abc import Callable
from typing import Final, final

import structlog
import trio

from trio_micro.protocol import Connection, ErrorCode, Role, Settings

from ._transport import RECEIVE_SIZE, peer_host, peer_name

__all__: list[str] = []

log = structlog.get_logger("rpc")

#: Upper bound on flushing the last frames (GOAWAY, errors) of a closing connection.
FLUSH_TIMEOUT: Final = 1.0
#: A repeating accept failure or connection refusal is logged once per this many seconds,
#: with the count of the occurrences in between.
LOG_INTERVAL: Final = 5.0

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

    :meth:`ready` takes ``now`` (any monotonic clock); :meth:`emit` reads trio's.
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

    def emit(self, method: Callable[..., object], event: str, **fields: object) -> None:
        """Call ``method(event, **fields, count=..., log_interval=...)`` (a structlog
        logger's ``error``, say) if a line is due at ``trio.current_time()``."""
        count = self.ready(trio.current_time())
        if count is not None:
            method(event, **fields, count=count, log_interval=self.interval)


@final
class ConnectionGate:
    """Which new connections a server serves, and the refusal of the others.

    Args:
        max_connections: Connections served at once (``None``: no limit).
        max_connections_per_peer: The same per peer IP address.
        goaway: The server's settings, to send a refused connection HELLO + GOAWAY
            saying why; ``None`` (TLS: no handshake for a refusal) closes it silently.

    Attributes:
        peers: Open connections per peer host; the server adds and removes them.
    """

    __slots__ = ("_accept_log", "_goaway", "_refuse_log", "_refusing", "limit", "peers", "per_peer")

    def __init__(
        self,
        *,
        max_connections: int | None,
        max_connections_per_peer: int | None,
        goaway: Settings | None,
    ) -> None:
        self.limit = max_connections
        self.per_peer = max_connections_per_peer
        self._goaway = goaway
        self.peers = PeerCounts()
        self._refusing = 0
        self._accept_log = LogThrottle(LOG_INTERVAL)
        self._refuse_log = LogThrottle(LOG_INTERVAL)

    def accept_failed(self, exc: OSError, retry_in: float) -> None:
        """Log an ``accept()`` failure, at most a line per ``LOG_INTERVAL`` (with a count)."""
        self._accept_log.emit(
            log.error, "rpc.server.accept_failed", error=repr(exc), retry_in=retry_in
        )

    def admit(
        self, stream: trio.SocketStream, open_connections: int, nursery: trio.Nursery
    ) -> bool:
        """True: serve ``stream``. False: it is being refused (in a task of ``nursery``,
        or already closed when ``MAX_REFUSING`` refusals are in flight). Synchronous."""
        if self.limit is not None and open_connections >= self.limit:
            reason, message = "max_connections", f"server at max_connections ({self.limit})"
        elif self.per_peer is not None and self.peers[peer_host(stream)] >= self.per_peer:
            reason = "max_connections_per_peer"
            message = (
                f"too many connections from your host (max_connections_per_peer={self.per_peer})"
            )
        else:
            return True
        self._refuse_log.emit(
            log.warning,
            "rpc.connection.refused",
            peer=peer_name(stream),
            reason=reason,
            message=message,
        )
        if self._refusing >= MAX_REFUSING:  # a flood: don't let refusals pin descriptors
            stream.socket.close()
        else:
            self._refusing += 1
            nursery.start_soon(self._refuse, stream, message)
        return False

    async def _refuse(self, stream: trio.SocketStream, why: str) -> None:
        try:
            if self._goaway is not None:
                # Say why, so the client's logs do: preface + HELLO + GOAWAY(last_id=0).
                proto = Connection(Role.SERVER, settings=self._goaway)
                data = proto.initiate() + proto.send_goaway(ErrorCode.NO_ERROR, why)
                with trio.move_on_after(FLUSH_TIMEOUT):
                    await stream.send_all(data)
                    # Half-close and drain what the client already sent, so that closing
                    # doesn't reset the connection before it has read the GOAWAY.
                    await stream.send_eof()
                    while await stream.receive_some(RECEIVE_SIZE):
                        pass
        except (trio.BrokenResourceError, OSError):
            pass
        finally:
            self._refusing -= 1
            await trio.aclose_forcefully(stream)
