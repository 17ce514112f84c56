"""One client connection: many concurrent calls over one transport.

Theory of operation
-------------------
Tasks: the connection runs a reader (the task that called :meth:`ClientConnection.run`), a
writer (:class:`~trio_micro.rpc._transport.Writer`) and, with keepalive on, a timer. There
is **no task per call**: the caller's own task sends the REQUEST (a synchronous append to
the writer's queue) and then parks on a tiny :class:`_Call` record with
:func:`trio.lowlevel.wait_task_rescheduled`. The reader, on the answer, stores the frame in
the record and reschedules the caller. A call costs one dict entry and one park/reschedule
pair; the replies of a burst of calls are dispatched from one read. A lone call's REQUEST
goes straight to the socket (:meth:`~trio_micro.rpc._transport.Writer.write_eager`) when
it is the only call in flight on its channel; once the reader has answered every call it
yields before reading again, so a caller making one call at a time sends the next one
first.

Cancellation: if the caller's scope is cancelled while it is parked, the abort callback
drops the record and queues a CANCEL frame (synchronously, so even a cancelled caller never
waits). The stream stays open in the sans-io state until the server's terminal frame
arrives; the reader then finds no record and drops the frame.

Stream slots: a caller at the server's ``max_concurrent_streams`` parks in a FIFO
:class:`trio.lowlevel.ParkingLot`; every terminal frame wakes one waiter. Newcomers queue
behind waiters, so nobody starves.

Server-streams: the record holds a deque of item payloads. The consumer
(:class:`~trio_micro.rpc.ResponseStream`) takes items from it and grants CREDIT back once
half of the initial window has been consumed, so at most ``initial_stream_credit`` items are
ever buffered on the client, and the server never runs ahead of the consumer by more.

GOAWAY from the server: calls above its ``last_id`` fail with :class:`RefusedError` (never
processed, so the channel retries them on another connection); the others finish; no new
calls are taken; the connection closes when the last one ends. A broken transport fails
every pending call with ``UNAVAILABLE``.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Final, final

import structlog
import trio
from msgspec.msgpack import Ext

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
    Item,
    LocalProtocolError,
    Payload,
    Ping,
    RemoteProtocolError,
    Response,
    Status,
)

from ._errors import RpcError
from ._observability import with_traceparent
from ._transport import RECEIVE_SIZE, Endpoint, Writer

__all__: list[str] = []

log = structlog.get_logger("rpc")

_FLUSH_TIMEOUT: Final = 1.0


class RefusedError(RpcError):
    """The server never processed the call (GOAWAY, or the connection was going away
    before it was sent): safe to retry on another connection."""

    def __init__(self, message: str) -> None:
        super().__init__(Status.UNAVAILABLE, message)


@final
class _Call:
    """The waiter of one call: the parked caller, and the answer when it comes."""

    __slots__ = ("cancelled", "error", "frame", "items", "sender", "task", "unacked", "waited")

    def __init__(self, items: collections.deque[Payload] | None) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.frame: Response | End | Error | None = None
        self.error: RpcError | None = None
        self.items = items
        self.unacked = 0  # stream items consumed but not yet granted back as CREDIT
        self.cancelled = False
        self.sender: trio.lowlevel.Task | None = None  # waiting for credit (rpc._client_streams)
        # The caller waited for an item since it last sent one: the server may be waiting
        # for its next request, which then leaves at once (rpc._client_streams).
        self.waited = False


def _wake(call: _Call) -> None:
    task = call.task
    if task is not None:
        call.task = None
        trio.lowlevel.reschedule(task)
    if call.sender is not None:  # a client-/bidi-stream's sender: its call ended
        wake_sender(call)


def wake_sender(call: _Call) -> None:
    """Wake the task waiting for credit to send on ``call``'s stream, if any."""
    task = call.sender
    if task is not None:
        call.sender = None
        trio.lowlevel.reschedule(task)


def local_error(exc: LocalProtocolError) -> RpcError:
    """An RpcError for a request the protocol refused to send."""
    if exc.code in (ErrorCode.FRAME_SIZE_ERROR, ErrorCode.METADATA_TOO_LARGE):
        return RpcError(Status.RESOURCE_EXHAUSTED, exc.message)
    return RpcError(Status.INTERNAL, exc.message)


def status_error(frame: Error) -> RpcError:
    """The RpcError for an ERROR frame."""
    return RpcError(frame.code, frame.message, frame.details)


@final
class ClientConnection:
    """One connection to a server; created by :func:`~._connect.connect` after the
    handshake, driven by :meth:`run`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        proto: Connection,
        endpoint: Endpoint,
        *,
        keepalive_interval: float,
        keepalive_timeout: float,
        on_unusable: Callable[[ClientConnection], None],
        peer: str | None = None,
        pending_events: list[Event] | None = None,
    ) -> None:
        self.stream = stream
        self.proto = proto
        self.endpoint = endpoint
        self.peer = str(endpoint) if peer is None else peer
        self.writer = Writer(stream)
        self._calls: dict[int, _Call] = {}
        self._slots = trio.lowlevel.ParkingLot()
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self._on_unusable = on_unusable
        self._read_scope = trio.CancelScope()
        # Why the connection can't take new calls (None: it can).
        self._unusable: RpcError | None = None
        # What pending calls fail with when the connection ends.
        self.close_error = RpcError(Status.UNAVAILABLE, f"connection to {self.peer} lost")
        self.last_receive = trio.current_time()
        # Events that arrived with the server's HELLO, for the reader to handle first.
        self._pending_events: list[Event] = [] if pending_events is None else pending_events
        self._window = proto.local_settings.initial_stream_credit

    @property
    def usable(self) -> bool:
        """Whether new calls may be started here."""
        return self._unusable is None

    @property
    def reason(self) -> str:
        """Why the connection stopped taking calls (``""`` while it takes them)."""
        return "" if self._unusable is None else self._unusable.message

    @property
    def outstanding(self) -> int:
        """Calls in flight (a load measure for balancers)."""
        return self.proto.open_streams

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Read until the connection ends; then fail what is pending. Cancel to close."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_writer, nursery.cancel_scope)
                if math.isfinite(self._keepalive_interval):
                    nursery.start_soon(self._run_keepalive, nursery.cancel_scope)
                await self._read_loop()
                self.writer.finish()
                with trio.move_on_after(_FLUSH_TIMEOUT):
                    await self.writer.done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._fail_all(self.close_error)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    def close(self, error: RpcError) -> None:
        """Stop the connection: pending calls fail with ``error`` (synchronous)."""
        self.close_error = error
        self._mark_unusable(error)
        self._read_scope.cancel()

    async def _run_writer(self, scope: trio.CancelScope) -> None:
        try:
            await self.writer.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("rpc.channel.connection_lost", peer=self.peer, reason=repr(exc))
            scope.cancel()

    async def _run_keepalive(self, scope: trio.CancelScope) -> None:
        interval = self._keepalive_interval
        timeout = self._keepalive_timeout
        opaque = 0
        while True:
            await trio.sleep_until(self.last_receive + interval)
            if trio.current_time() < self.last_receive + interval:
                continue
            opaque += 1
            sent = trio.current_time()
            self.writer.write(self.proto.send_ping(opaque))
            await trio.sleep_until(sent + timeout)
            if self.last_receive < sent:
                log.warning(
                    "rpc.channel.keepalive_timeout", peer=self.peer, keepalive_timeout=timeout
                )
                self.close_error = RpcError(
                    Status.UNAVAILABLE, f"connection to {self.peer}: keepalive timeout"
                )
                self._mark_unusable(self.close_error)
                scope.cancel()
                return

    def _mark_unusable(self, error: RpcError) -> None:
        if self._unusable is None:
            self._unusable = error
            self._on_unusable(self)
            self._slots.unpark_all()

    def _fail_all(self, error: RpcError) -> None:
        self._mark_unusable(error)
        calls = self._calls
        self._calls = {}
        for call in calls.values():
            call.error = error
            _wake(call)

    async def _read_loop(self) -> None:
        receive = self.stream.receive_some
        proto = self.proto
        events = self._pending_events
        self._pending_events = []
        with self._read_scope:
            while True:
                if events:
                    if not self._dispatch(events):
                        return
                    if len(self._calls) <= 1:
                        # Answered everything (or fed the one stream in flight): a caller
                        # making one call at a time sends its next one (a bidi-stream's
                        # caller, its next item) before the next read, which would find
                        # nothing yet and register for epoll -- two system calls off its way.
                        await trio.lowlevel.cancel_shielded_checkpoint()
                try:
                    data = await receive(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    log.info("rpc.channel.connection_lost", peer=self.peer, reason=repr(exc))
                    return
                self.last_receive = trio.current_time()
                try:
                    events = proto.receive_data(data)
                except RemoteProtocolError as exc:
                    log.warning(
                        "rpc.channel.protocol_error",
                        peer=self.peer,
                        code=exc.code.name,
                        reason=exc.message,
                    )
                    self.close_error = RpcError(
                        Status.UNAVAILABLE,
                        f"connection to {self.peer}: protocol error: {exc.message}",
                    )
                    self.writer.write(proto.send_goaway(exc.code, exc.message))
                    return

    def _dispatch(self, events: list[Event]) -> bool:
        """Handle a batch of events; False when the connection should close."""
        calls = self._calls
        freed = 0
        for event in events:
            kind = type(event)
            if kind is Response or kind is Error or kind is End:
                freed += 1
                call = calls.pop(event.id, None)  # type: ignore[union-attr]
                if call is not None:
                    call.frame = event  # type: ignore[assignment]
                    _wake(call)
            elif kind is Item:
                call = calls.get(event.id)  # type: ignore[union-attr]
                if call is not None and call.items is not None:
                    call.items.append(event.payload)  # type: ignore[union-attr]
                    _wake(call)
            elif kind is Credit:  # for a client-/bidi-stream's sender
                call = calls.get(event.id)  # type: ignore[union-attr]
                if call is not None:
                    wake_sender(call)
            elif kind is Ping:
                self.writer.write(self.proto.send_pong(event.opaque))  # type: ignore[union-attr]
            elif kind is GoAway:
                self._on_goaway(event)  # type: ignore[arg-type]
            elif kind is ConnectionClosed:
                return False
        if freed and self._slots:
            self._slots.unpark(count=freed)
        return not (self._unusable is not None and self.proto.open_streams == 0)

    def _on_goaway(self, frame: GoAway) -> None:
        if frame.code is not ErrorCode.NO_ERROR:
            log.warning(
                "rpc.channel.goaway",
                peer=self.peer,
                code=frame.code.name,
                message=frame.message,
            )
        message = f"server {self.peer} is going away"
        if frame.message:
            message += f" ({frame.message})"
        self._mark_unusable(RefusedError(message))
        refused = RefusedError(f"{message}; the call was not processed")
        for stream_id in [sid for sid in self._calls if sid > frame.last_id]:
            call = self._calls.pop(stream_id)
            call.error = refused
            _wake(call)

    # ------------------------------------------------------------------ calls

    async def _wait_slot(self) -> None:
        proto = self.proto
        while True:
            if self._unusable is not None:
                raise RefusedError(self._unusable.message)
            if proto.can_open_stream() and not self._slots:
                return
            await self._slots.park()
            if self._unusable is None and proto.can_open_stream():
                return

    def _open(
        self,
        method: str,
        payload: bytes,
        call_type: CallType,
        timeout_ms: int | None,
        metadata: dict[str, str] | None,
        items: collections.deque[Payload] | None,
        lone: bool = True,
    ) -> tuple[int, _Call]:
        proto = self.proto
        stream_id = proto.next_stream_id
        try:
            data = proto.send_request(
                stream_id,
                method,
                payload,
                call_type=call_type,
                timeout_ms=timeout_ms,
                metadata=with_traceparent(metadata, proto),
            )
        except LocalProtocolError as exc:
            raise local_error(exc) from None
        call = _Call(items)
        self._calls[stream_id] = call
        if lone:
            self.write_lone(data)
        else:
            self.writer.write(data)
        return stream_id, call

    def write_lone(self, data: bytes) -> None:
        """Queue a call's frame, or send it at once when that call is the connection's only
        one in flight (synchronous, no checkpoint).

        A lone frame skips the writer task's scheduling round
        (:meth:`~._transport.Writer.write_eager`); with other calls in flight, their frames
        may leave in the same ``send_all``. For a REQUEST, and for a client- or bidi-stream's
        item or END that the caller sends after waiting for the server.
        """
        if len(self._calls) == 1:  # alone: send now, skip the writer's round
            self.writer.write_eager(data)
        else:  # others may send in this batch too: one send_all for all
            self.writer.write(data)

    async def unary(
        self,
        method: str,
        payload: bytes,
        timeout_ms: int | None,
        metadata: dict[str, str] | None,
        lone: bool = True,
    ) -> bytes:
        """Make a unary call; return the response payload.

        ``lone=False`` says the caller knows of other calls in flight (on other connections
        of its channel): queue the REQUEST for the writer, where those calls' frames to this
        connection may join it, even when it is this connection's only call.

        Raises:
            RpcError: The server's ERROR, or a transport failure (``UNAVAILABLE``).
            RefusedError: Not sent, or refused by GOAWAY: retry elsewhere.
        """
        if self._unusable is not None or self._slots or not self.proto.can_open_stream():
            await self._wait_slot()
        stream_id, call = self._open(
            method, payload, CallType.UNARY, timeout_ms, metadata, None, lone
        )
        call.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            call.task = None
            if self._calls.pop(stream_id, None) is not None:
                self.writer.write(self.proto.send_cancel(stream_id))
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        frame = call.frame
        if type(frame) is Response:
            answer = frame.payload
            if isinstance(answer, bytes):
                return answer
            return self.inflate(answer, stream_id, call)
        if call.error is not None:
            raise call.error
        assert type(frame) is Error
        raise status_error(frame)

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
        if self._unusable is not None or self._slots or not self.proto.can_open_stream():
            await self._wait_slot()
        items = None if call_type is CallType.CLIENT_STREAM else collections.deque[Payload]()
        return self._open(method, payload, call_type, timeout_ms, metadata, items)

    async def next_item(self, stream_id: int, call: _Call) -> bytes | None:
        """The next item's payload, ``None`` at END.

        Raises:
            RpcError: The server's ERROR, or the connection failed.
        """
        items = call.items
        assert items is not None
        if not items and call.frame is None and call.error is None:
            call.task = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                call.task = None
                self.cancel_stream(stream_id, call)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            call.waited = True
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        if items:
            payload = items.popleft()
            call.unacked += 1
            if call.unacked * 2 >= self._window and call.frame is None:
                # The server may be waiting for this CREDIT: a lone stream's leaves at once.
                self.write_lone(self.proto.send_credit(stream_id, call.unacked))
                call.unacked = 0
            if isinstance(payload, bytes):
                return payload
            return self.inflate(payload, stream_id, call)
        if call.error is not None:
            raise call.error
        frame = call.frame
        if type(frame) is End:
            return None
        assert type(frame) is Error
        raise status_error(frame)

    def inflate(self, payload: Ext, stream_id: int, call: _Call) -> bytes:
        """Decompress a payload the server compressed; on failure cancel the call (if it
        is still running) and raise. Synchronous.

        Raises:
            RpcError: ``RESOURCE_EXHAUSTED`` if it would inflate past our
                ``max_frame_size``, ``INTERNAL`` for an encoding we did not announce or
                garbage. Only this call fails; the connection carries on.
        """
        try:
            return self.proto.decompress(payload)
        except CompressionError as exc:
            self.cancel_stream(stream_id, call)
            raise RpcError(exc.client_status, f"bad payload from {self.peer}: {exc}") from None

    def cancel_stream(self, stream_id: int, call: _Call) -> None:
        """Give up on a stream: drop its record and send CANCEL (synchronous)."""
        if call.cancelled:
            return
        call.cancelled = True
        if self._calls.pop(stream_id, None) is not None:
            self.writer.write(self.proto.send_cancel(stream_id))
