"""Pieces shared by both ends of a connection: the batching writer, peers (and the
addresses of :mod:`._address`).

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

import os
import socket
from typing import Final, final

import trio

from ._address import Endpoint

__all__ = ["Endpoint"]

#: Bytes queued in a writer above which stream producers wait for the socket.
HIGH_WATER: Final = 1 << 20
#: How much one read asks for.
RECEIVE_SIZE: Final = 1 << 16


def peer_host(stream: trio.abc.Stream) -> str:
    """The IP address of the other end of a socket stream (through any SSLStream), or
    ``"?"``: what per-peer connection limits count by."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        try:
            address = stream.socket.getpeername()
        except OSError:
            return "?"
        return str(address[0]) if isinstance(address, tuple) else str(address)
    return repr(stream)


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
