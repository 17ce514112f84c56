"""Pieces shared by both ends of a connection: the batching writer, addresses, peers.

Theory of operation (the writer)
--------------------------------
Every task that has a frame to send -- callers on the client, call tasks on the server, the
reader answering a PING -- appends the frame's bytes to one list with the synchronous
:meth:`Writer.write` and wakes the writer task if it is parked. That is an append and, at
most, one ``reschedule``: no lock, no checkpoint. The writer task runs in a later scheduling
batch than the tasks that woke it, so by then every task of the current batch has appended
its frame, and the writer sends them all with a single ``send_all(b"".join(chunks))``. Under
load that is one system call for dozens of frames; when idle, one per frame with no added
latency (no timers, no Nagle-style waiting).

The queue is bounded by its users, not by the writer: every producer of large frames (a
RESPONSE, a stream ITEM) checks :attr:`Writer.congested` *before* queuing and waits in
:meth:`Writer.wait_uncongested` while more than ``HIGH_WATER`` bytes are queued, and the
server's reader stops reading and starting calls meanwhile. The check and the append happen
without a checkpoint in between, so the queue never holds more than ``HIGH_WATER`` plus one
frame and the small control frames of one read: a peer that stops reading holds back the
handlers instead of growing the queue.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from typing import Final, final

import trio

__all__ = ["Endpoint"]

#: Bytes queued in a writer above which stream producers wait for the socket.
HIGH_WATER: Final = 1 << 20
#: How much one read asks for.
RECEIVE_SIZE: Final = 1 << 16

_ADDRESS_FORM: Final = "'host:port' or '[ipv6]:port'"
# RFC 1123 host name labels (after lower-casing); dotted numbers must be an IPv4 address.
_HOST_LABEL_RE: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_DOTTED_NUMBERS_RE: Final = re.compile(r"[0-9.]+")
# An IPv6 zone (``fe80::1%eth0``): an interface name or number.
_ZONE_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")


@final
class Endpoint:
    """A server address: ``host`` and ``port``, in canonical form.

    The one address type of trio_micro: ``registry.Endpoint.address`` is ``str()`` of one,
    and :func:`trio_micro.registry.parse_address` is :meth:`parse`. The rules:

    * a host name is ASCII letters, digits and ``-`` in dot-separated labels of 1-63
      characters that neither start nor end with ``-``, at most 253 characters, an optional
      final dot (RFC 1123); it is lower-cased;
    * an IPv4 address is four decimal numbers (no leading zeros); an IPv6 address, with an
      optional ``%zone`` (letters, digits, ``_.-``), is compressed (``0:0::1`` becomes
      ``::1``) and written in brackets in an address string (``[::1]:80``), never without;
    * the port is 1-65535.

    No name lookup happens. Endpoints compare and hash by ``(host, port)``.

    Args:
        host: A host name or an IP address (IPv6 without brackets).
        port: The TCP port, 1-65535.

    Raises:
        TypeError: ``host`` is not a str or ``port`` not an int.
        ValueError: A bad host or port; the message says which and shows it.
    """

    __slots__ = ("_hash", "host", "port")

    def __init__(self, host: str, port: int) -> None:
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, got {port!r}")
        if not 0 < port < 65536:
            raise ValueError(f"port must be in [1, 65535], got {port!r}")
        if ":" in host:
            host = _ipv6(host, f"host {host!r} is not a valid IPv6 address (without brackets)")
        else:
            host = _host(host, f"host {host!r}")
        self.host = host
        self.port = port
        self._hash = hash((host, port))  # a channel looks endpoints up on every call

    @classmethod
    def parse(cls, address: str) -> Endpoint:
        """Parse ``"host:port"`` or ``"[ipv6]:port"`` into its canonical endpoint.

        Not a checkpoint; no name lookup happens. See the class docs for the rules.

        Raises:
            TypeError: ``address`` is not a str.
            ValueError: It is not of the form ``host:port`` / ``[ipv6]:port``; the message
                says which part is wrong and shows the whole address.
        """
        if not isinstance(address, str):
            raise TypeError(f"address must be a str of the form {_ADDRESS_FORM}, got {address!r}")
        if "/" in address:
            raise ValueError(
                f"address must be {_ADDRESS_FORM} without a scheme or path, got {address!r}"
            )
        host, sep, port_text = address.rpartition(":")
        if not sep or not host:
            raise ValueError(f"address must look like {_ADDRESS_FORM}, got {address!r}")
        if not port_text.isascii() or not port_text.isdigit():
            raise ValueError(f"address must end in ':<port>' with a decimal port, got {address!r}")
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError(f"address port must be in [1, 65535], got {address!r}")
        if host.startswith("[") and host.endswith("]"):
            host = _ipv6(
                host[1:-1], f"address has brackets but no valid IPv6 address in them: {address!r}"
            )
        elif ":" in host:
            raise ValueError(
                f"an IPv6 address needs brackets, as in '[::1]:50051', got {address!r}"
            )
        else:
            host = _host(host, f"address {address!r}")
        endpoint: Endpoint = object.__new__(cls)
        endpoint.host = host
        endpoint.port = port
        endpoint._hash = hash((host, port))
        return endpoint

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"Endpoint({self.host!r}, {self.port!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return self.host == other.host and self.port == other.port

    def __hash__(self) -> int:
        return self._hash


def _ipv6(text: str, error: str) -> str:
    """The compressed form of an IPv6 address (without brackets); ``error`` if it is none."""
    _, percent, zone = text.partition("%")
    if percent and not _ZONE_RE.fullmatch(zone):
        raise ValueError(error)
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        raise ValueError(error) from None


def _host(text: str, shown: str) -> str:
    """The canonical form of a host name or IPv4 address; ``shown`` names it in errors."""
    # isascii first: str.lower() maps some non-ASCII letters to ASCII ones (KELVIN SIGN -> k).
    host = text.lower() if text.isascii() else text
    if _DOTTED_NUMBERS_RE.fullmatch(host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"{shown}: the host is not a valid IPv4 address") from None
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError(
            f"{shown}: the host must be an IP address or a DNS name (ASCII letters, digits, "
            "'-' and '.'; labels of 1-63 characters, not starting or ending with '-')"
        )
    return host


def peer_name(stream: trio.abc.Stream, *, local: bool = False) -> str:
    """``"host:port"`` of the other end of a socket stream (through any SSLStream), or of
    this end with ``local=True``."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        try:
            address = stream.socket.getsockname() if local else stream.socket.getpeername()
        except OSError:
            return "?"
        if stream.socket.family == socket.AF_INET6:
            return f"[{address[0]}]:{address[1]}"
        if isinstance(address, tuple):
            return f"{address[0]}:{address[1]}"
        return str(address)
    return repr(stream)


@final
class Writer:
    """The single writer of one connection; see the module docs.

    :meth:`run` is the writer task. It ends when :meth:`finish` was called and everything
    queued before has been sent, and raises whatever ``send_all`` raises.
    """

    __slots__ = (
        "_chunks",
        "_drain",
        "_finishing",
        "_pending",
        "_socket",
        "_stream",
        "_task",
        "done",
    )

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        # Plain TCP only: the socket that write_eager may write to directly.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._chunks: list[bytes] = []
        self._pending = 0  # bytes queued or being sent
        self._task: trio.lowlevel.Task | None = None  # set while parked
        self._finishing = False
        self._drain = trio.lowlevel.ParkingLot()
        self.done = trio.Event()

    @property
    def pending(self) -> int:
        """Bytes queued or being sent."""
        return self._pending

    @property
    def congested(self) -> bool:
        """More than ``HIGH_WATER`` bytes are waiting for the socket."""
        return self._pending > HIGH_WATER

    def write(self, data: bytes) -> None:
        """Queue ``data`` (synchronous; never blocks). Ignored after :meth:`finish`."""
        if self._finishing or not data:
            return
        self._chunks.append(data)
        self._pending += len(data)
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    def write_eager(self, data: bytes) -> None:
        """Like :meth:`write`, but send ``data`` at once when the writer is idle.

        For a lone frame (a single call in flight) this saves the writer task's scheduling
        round: when nothing is queued and the writer task is parked (so no ``send_all`` is
        running), the bytes go to the socket with one non-blocking system call, right here
        (synchronous: no checkpoint). Whatever the socket does not take -- a full buffer, an
        error -- is queued for the writer task as :meth:`write` would, so ordering, errors
        and the queue limits stay the writer's business. Under load, use :meth:`write`:
        frames queued together leave in one ``send_all``.
        """
        sock = self._socket
        if sock is None or self._task is None or self._chunks or self._finishing or not data:
            self.write(data)
            return
        fd = sock.fileno()
        if fd < 0:
            self.write(data)
            return
        try:
            sent = os.write(fd, data)
        except OSError:  # EAGAIN, or a broken socket: the writer's send_all says which
            sent = 0
        if sent < len(data):
            self.write(data[sent:])

    def finish(self) -> None:
        """Send what is queued, then end :meth:`run`; later writes are ignored."""
        self._finishing = True
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    async def wait_uncongested(self) -> None:
        """Wait until the queue is below ``HIGH_WATER`` (or the writer is finishing)."""
        while self._pending > HIGH_WATER and not self.done.is_set():
            await self._drain.park()

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def run(self) -> None:
        """The writer task; see the class docs."""
        send_all = self._stream.send_all
        try:
            while True:
                chunks = self._chunks
                if not chunks:
                    if self._finishing:
                        return
                    self._task = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._abort)
                    continue
                self._chunks = []
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                await send_all(data)
                self._pending -= len(data)
                if self._drain and self._pending <= HIGH_WATER:
                    self._drain.unpark_all()
        finally:
            self._finishing = True
            self._chunks = []
            self.done.set()
            self._drain.unpark_all()
