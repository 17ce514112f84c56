"""One asyncio client connection: the sans-io core behind an :class:`asyncio.Protocol`.

Theory of operation
-------------------
The same :class:`trio_micro.protocol.Connection` that the trio client drives, driven by
asyncio's callbacks instead of a reader task: :meth:`AioConnection.data_received` feeds it
the bytes and dispatches the events it returns; the ``send_*`` methods give the bytes to
write. There is no task of our own at all. A call is a small :class:`_Call` record keyed by
stream id, holding the future its caller awaits (unary) or the item deque and waiter of a
stream; a client- or bidi-stream's sender parks on a second future (``sender``) while the
server's credit is used up, resolved by the server's CREDIT or the end of the call
(:mod:`._streams` does the sending).

Writes are batched: :meth:`AioConnection.write` appends to a list and schedules one flush
with ``call_soon``, so the REQUESTs of every task that runs in one loop iteration (say the
callers woken by one read full of responses) leave in one ``transport.write``. Callers wait
while the transport's buffer is above its high-water mark (asyncio's ``pause_writing``): a
server that stops reading holds callers back instead of growing the buffer.

Cancellation: a caller cancelled while it awaits its answer (``task.cancel()``, an
``asyncio.timeout`` expiring) drops its record and queues CANCEL; the stream stays open in
the sans-io state until the server's terminal frame arrives, which is then dropped.

Stream slots: a caller at the server's ``max_concurrent_streams`` waits in a FIFO of
futures; each terminal frame wakes one. Server- and bidi-streams keep at most
``initial_stream_credit`` items (the server can't send more than it was granted; a server
that does breaks the protocol and the connection closes) and grant CREDIT back once half
the window is consumed.

GOAWAY: calls above its ``last_id`` fail with ``UNAVAILABLE`` (never processed), the rest
finish, and the channel opens a new connection for new calls. A lost connection fails every
pending call with ``UNAVAILABLE``.

Compression is the sans-io core's, as on the trio client: the HELLO announces what we can
inflate (``Settings.compression``), a REQUEST whose metadata carries ``tm-compression``
has its payload and items compressed by ``proto`` (payloads of at least
``compression_threshold`` bytes), and :func:`inflated` turns a compressed RESPONSE or ITEM
back into bytes -- a payload that would inflate past our ``max_frame_size`` fails that call
with ``RESOURCE_EXHAUSTED``, never the connection.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Final, cast, final

from trio_micro.protocol import (
    CallType,
    CompressionError,
    Connection,
    ConnectionClosed,
    Credit,
    End,
    Error,
    ErrorCode,
    Event,
    GoAway,
    Hello,
    Item,
    LocalProtocolError,
    Payload,
    Ping,
    RemoteProtocolError,
    Response,
    Role,
    Settings,
    Status,
)
from trio_micro.rpc import RpcError

__all__: list[str] = []

_Terminal = Response | End | Error
_TERMINAL: Final = (Response, End, Error)


def inflated(proto: Connection, payload: Payload) -> bytes:
    """A payload's bytes, inflated by ``proto`` if the server compressed it (bounded by our
    ``max_frame_size``). Synchronous.

    Raises:
        RpcError: ``RESOURCE_EXHAUSTED`` if it would inflate past our ``max_frame_size``,
            ``INTERNAL`` for an encoding we did not announce or garbage. Only this call
            fails; the connection carries on.
    """
    if isinstance(payload, bytes):
        return payload
    try:
        return proto.decompress(payload)
    except CompressionError as exc:
        raise RpcError(exc.client_status, f"bad payload from the server: {exc}") from None


@final
class _Call:
    """One call in flight: what its caller waits on, and the answer when it comes."""

    __slots__ = ("cancelled", "error", "frame", "future", "items", "sender", "unacked", "waiter")

    def __init__(
        self, future: asyncio.Future[bytes] | None, items: collections.deque[Payload] | None
    ) -> None:
        self.future = future  # unary: resolved with the payload or an RpcError
        self.items = items  # server-/bidi-stream: payloads not consumed yet
        self.waiter: asyncio.Future[None] | None = None  # a stream consumer parked here
        # A client-/bidi-stream's sender parked for the server's CREDIT (aio._streams).
        self.sender: asyncio.Future[None] | None = None
        self.frame: _Terminal | None = None
        self.error: RpcError | None = None
        self.unacked = 0  # items consumed but not yet granted back as CREDIT
        self.cancelled = False

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def wake_sender(self) -> None:
        sender = self.sender
        if sender is not None:
            self.sender = None
            if not sender.done():
                sender.set_result(None)

    def wake_all(self) -> None:
        """The call ended: wake its consumer and its sender."""
        self.wake()
        self.wake_sender()


def local_error(exc: LocalProtocolError) -> RpcError:
    """The RpcError for a request the protocol refused to send (as the trio client)."""
    if exc.code in (ErrorCode.FRAME_SIZE_ERROR, ErrorCode.METADATA_TOO_LARGE):
        return RpcError(Status.RESOURCE_EXHAUSTED, exc.message)
    return RpcError(Status.INTERNAL, exc.message)


@final
class AioConnection(asyncio.Protocol):
    """One connection to a server; made by :func:`connect`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: Settings,
        peer: str,
        compression_threshold: int,
    ) -> None:
        self.loop = loop
        self.peer = peer
        self.proto = Connection(
            Role.CLIENT, settings=settings, compression_threshold=compression_threshold
        )
        self.handshake: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, _Call] = {}
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._out: list[bytes] = []
        self.queued = 0  # bytes in _out: written, not handed to the transport yet
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._window = settings.initial_stream_credit
        # Why no new call may start here (None: they may).
        self.unusable: RpcError | None = None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is one without subclassing asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self.proto.initiate())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.proto.receive_data(data)
        except RemoteProtocolError as exc:
            self._close(
                RpcError(
                    Status.UNAVAILABLE, f"connection to {self.peer}: protocol error: {exc.message}"
                ),
                self.proto.send_goaway(exc.code, exc.message),
            )
            return
        self._dispatch(events)

    def eof_received(self) -> bool:
        self._dispatch(self.proto.receive_data(b""))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc is not None else ""
        self._transport = None
        self._fail_all(RpcError(Status.UNAVAILABLE, f"connection to {self.peer} lost{reason}"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------ events

    def _dispatch(self, events: list[Event]) -> None:
        calls = self._calls
        freed = 0
        for event in events:
            kind = type(event)
            if kind is Response or kind is Error or kind is End:
                freed += 1
                call = calls.pop(event.id, None)  # type: ignore[union-attr]
                if call is not None:
                    self._finish(call, event)  # type: ignore[arg-type]
            elif kind is Item:
                call = calls.get(event.id)  # type: ignore[union-attr]
                if call is not None and call.items is not None:
                    call.items.append(event.payload)  # type: ignore[union-attr]
                    call.wake()
            elif kind is Credit:  # for a client-/bidi-stream's sender
                call = calls.get(event.id)  # type: ignore[union-attr]
                if call is not None:
                    call.wake_sender()
            elif kind is Ping:
                self.write(self.proto.send_pong(event.opaque))  # type: ignore[union-attr]
            elif kind is Hello:
                if not self.handshake.done():
                    self.handshake.set_result(None)
            elif kind is GoAway:
                self._on_goaway(event)  # type: ignore[arg-type]
            elif kind is ConnectionClosed:
                self._close(RpcError(Status.UNAVAILABLE, f"{self.peer} closed the connection"))
                return
        for _ in range(freed):
            self._wake_slot()
        if self.unusable is not None and not self.proto.open_streams:
            self._close(self.unusable)

    def _finish(self, call: _Call, frame: _Terminal) -> None:
        future = call.future
        if future is None:  # a stream
            call.frame = frame
            call.wake_all()
        elif not future.done():
            if type(frame) is Response:
                try:
                    future.set_result(inflated(self.proto, frame.payload))
                except RpcError as exc:
                    future.set_exception(exc)
            elif type(frame) is Error:
                future.set_exception(RpcError(frame.code, frame.message, frame.details))
            else:  # END on a unary stream: the protocol rejects it before it gets here
                future.set_exception(RpcError(Status.INTERNAL, "END answered a unary call"))

    def _on_goaway(self, frame: GoAway) -> None:
        message = f"server {self.peer} is going away"
        if frame.message:
            message += f" ({frame.message})"
        self._mark_unusable(RpcError(Status.UNAVAILABLE, message))
        refused = RpcError(Status.UNAVAILABLE, f"{message}; the call was not processed")
        for stream_id in [sid for sid in self._calls if sid > frame.last_id]:
            self._fail(self._calls.pop(stream_id), refused)

    def _mark_unusable(self, error: RpcError) -> None:
        if self.unusable is None:
            self.unusable = error
            while self._slot_waiters:
                self._wake_slot()

    @staticmethod
    def _fail(call: _Call, error: RpcError) -> None:
        if call.future is not None:
            if not call.future.done():
                call.future.set_exception(error)
        else:
            call.error = error
            call.wake_all()

    def _fail_all(self, error: RpcError) -> None:
        self._mark_unusable(error)
        if not self.handshake.done():
            self.handshake.set_exception(error)
        calls, self._calls = self._calls, {}
        for call in calls.values():
            self._fail(call, error)
        self.resume_writing()  # nobody waits for a drain that will never come

    def _close(self, error: RpcError, last: bytes = b"") -> None:
        """Fail what is pending with ``error`` and close the transport after ``last``."""
        self._fail_all(error)
        transport = self._transport
        if transport is not None:
            self._flush()
            if last:
                transport.write(last)
            transport.close()

    def close(self) -> None:
        """Close the connection; pending calls fail with ``UNAVAILABLE`` (synchronous)."""
        self._close(RpcError(Status.UNAVAILABLE, f"the channel to {self.peer} was closed"))

    # ------------------------------------------------------------ writing

    @property
    def paused(self) -> bool:
        """Whether the transport's buffer is above its high-water mark."""
        return self._paused

    def write(self, data: bytes) -> None:
        """Queue ``data``; everything queued in one loop iteration leaves in one write."""
        if not data or self._transport is None:
            return
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(data)
        self.queued += len(data)

    def _flush(self) -> None:
        out = self._out
        if out and self._transport is not None:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])
        out.clear()
        self.queued = 0

    # ------------------------------------------------------------ calls

    async def wait_writable(self) -> None:
        """Wait while the transport's buffer is above its high-water mark (a server that
        stops reading); returns at once otherwise, without a checkpoint."""
        while self._paused:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _wake_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _wait_ready(self) -> None:
        """Wait for a stream slot and a writable transport, in FIFO order.

        Raises:
            RpcError: ``UNAVAILABLE``: the connection stopped taking calls meanwhile.
        """
        while True:
            if self.unusable is not None:
                raise self.unusable
            if self._paused:
                await self.wait_writable()
                continue
            if self.proto.can_open_stream() and not self._slot_waiters:
                return
            waiter = self.loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                # Cancelled: pass our wake-up on, so the next in line is not stranded.
                if waiter.done() and not waiter.cancelled():
                    self._wake_slot()
                raise
            if self.unusable is None and self.proto.can_open_stream():
                return

    def _open(
        self,
        method: str,
        payload: bytes,
        call_type: CallType,
        timeout_ms: int | None,
        metadata: dict[str, str] | None,
        call: _Call,
    ) -> int:
        stream_id = self.proto.next_stream_id
        try:
            data = self.proto.send_request(
                stream_id,
                method,
                payload,
                call_type=call_type,
                timeout_ms=timeout_ms,
                metadata=metadata,
            )
        except LocalProtocolError as exc:
            raise local_error(exc) from None
        self._calls[stream_id] = call
        self.write(data)
        return stream_id

    async def unary(
        self, method: str, payload: bytes, timeout_ms: int | None, metadata: dict[str, str] | None
    ) -> bytes:
        """Make a unary call; return the response payload.

        Cancelling the awaiting task sends CANCEL and re-raises :exc:`asyncio.CancelledError`.

        Raises:
            RpcError: The server's ERROR; ``UNAVAILABLE`` if the connection is lost or going
                away; ``RESOURCE_EXHAUSTED`` for a request over the server's frame size.
        """
        if self.unusable is not None or self._paused or not self.proto.can_open_stream():
            await self._wait_ready()
        future: asyncio.Future[bytes] = self.loop.create_future()
        stream_id = self._open(
            method, payload, CallType.UNARY, timeout_ms, metadata, _Call(future, None)
        )
        try:
            return await future
        except asyncio.CancelledError:
            if self._calls.pop(stream_id, None) is not None:
                self.write(self.proto.send_cancel(stream_id))
            raise

    async def open_stream(
        self,
        method: str,
        payload: bytes,
        timeout_ms: int | None,
        metadata: dict[str, str] | None,
        call_type: CallType = CallType.SERVER_STREAM,
    ) -> tuple[int, _Call]:
        """Send a stream call's REQUEST (server-, client- or bidi-stream); return its id and
        record. A client-stream's record has no item queue: its answer is one RESPONSE."""
        if self.unusable is not None or self._paused or not self.proto.can_open_stream():
            await self._wait_ready()
        call = _Call(None, None if call_type is CallType.CLIENT_STREAM else collections.deque())
        stream_id = self._open(method, payload, call_type, timeout_ms, metadata, call)
        return stream_id, call

    async def next_item(self, stream_id: int, call: _Call) -> bytes | None:
        """The next item's payload; ``None`` at END. Cancellation sends CANCEL.

        Raises:
            RpcError: The server's ERROR, or the connection failed; ``CANCELLED`` if the
                stream was cancelled (:meth:`cancel_stream`) while this waited.
        """
        items = call.items
        assert items is not None
        if not items and call.frame is None and call.error is None:
            waiter: asyncio.Future[None] = self.loop.create_future()
            call.waiter = waiter
            try:
                await waiter
            except asyncio.CancelledError:
                self.cancel_stream(stream_id, call)
                raise
        if items:
            payload = items.popleft()
            call.unacked += 1
            if call.unacked * 2 >= self._window and call.frame is None:
                self.write(self.proto.send_credit(stream_id, call.unacked))
                call.unacked = 0
            if isinstance(payload, bytes):
                return payload
            try:
                return inflated(self.proto, payload)
            except RpcError:
                self.cancel_stream(stream_id, call)
                raise
        if call.error is not None:
            raise call.error
        frame = call.frame
        if type(frame) is End:
            return None
        if frame is None:  # woken by cancel_stream from another task
            raise RpcError(Status.CANCELLED, "the call was cancelled")
        assert type(frame) is Error
        raise RpcError(frame.code, frame.message, frame.details)

    def cancel_stream(self, stream_id: int, call: _Call) -> None:
        """Give up on a stream: drop its record and send CANCEL (synchronous). Whoever
        waits on it (another task's consumer, a sender waiting for credit) wakes up to
        find the call cancelled."""
        if call.cancelled:
            return
        call.cancelled = True
        if self._calls.pop(stream_id, None) is not None:
            self.write(self.proto.send_cancel(stream_id))
        call.wake_all()


async def connect(
    host: str,
    port: int,
    *,
    peer: str,
    settings: Settings,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    handshake_timeout: float,
    compression_threshold: int,
) -> AioConnection:
    """Open a connection and complete the handshake (TLS, then HELLO both ways).

    Cancellation closes whatever was opened and re-raises.

    Raises:
        RpcError: ``UNAVAILABLE`` naming the address: refused, unreachable, timed out, TLS
            failure, or the server broke the protocol at once.
    """
    loop = asyncio.get_running_loop()
    conn: AioConnection | None = None

    def factory() -> AioConnection:
        nonlocal conn
        conn = AioConnection(loop, settings, peer, compression_threshold)
        return conn

    try:
        async with asyncio.timeout(handshake_timeout):
            await loop.create_connection(
                factory,
                host,
                port,
                ssl=ssl_context,
                server_hostname=(server_hostname or host) if ssl_context is not None else None,
            )
            assert conn is not None
            await conn.handshake
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, TimeoutError):
            raise RpcError(
                Status.UNAVAILABLE, f"can't connect to {peer}: handshake timed out"
            ) from exc
        if isinstance(exc, RpcError):
            raise RpcError(Status.UNAVAILABLE, f"can't connect to {peer}: {exc.message}") from exc
        if isinstance(exc, OSError):  # refused, unreachable, TLS (ssl.SSLError)
            raise RpcError(Status.UNAVAILABLE, f"can't connect to {peer}: {exc}") from exc
        raise
    assert conn is not None
    return conn
