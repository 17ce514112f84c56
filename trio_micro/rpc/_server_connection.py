"""One client connection of the server: reading, dispatching, timers, draining.

Theory of operation
-------------------
Tasks of one connection::

    connection ── writer (the only task that writes the socket)
               ├─ timers (keepalive PINGs, idle timeout)
               ├─ the connection task itself reads frames
               └─ call workers (one per call in progress; :mod:`._workers`)

The connection task reads the socket, feeds the sans-io :class:`~trio_micro.protocol.
Connection`, and dispatches events: a REQUEST becomes a :class:`~._context.ServerCall` run
by a call worker (:class:`~._workers.CallWorkers`) through
:meth:`~._server_calls.CallRunner.run`, which decodes, calls the handler and answers;
CANCEL cancels that call's scope, CREDIT wakes a stream producer waiting for credit, PING
is answered in place. A connection has at most as many workers as it had calls at once
(at most ``max_concurrent_streams``); when its last call ends, it keeps
``_KEEP_IDLE_WORKERS`` of them and ends the others.

The call's cancel scope is its worker's; its deadline is the client's ``timeout_ms``, so
calls the handler makes inherit the remaining time. The scope is cancelled by the client's
CANCEL, which is how cancellation crosses the wire.

A REQUEST is charged against the connection's and the server's byte budgets before its
call starts, and refused with ``RESOURCE_EXHAUSTED`` when it doesn't fit
(:mod:`._server_limits`). Calls the client cancels before their answer are counted over a
sliding window (:class:`~trio_micro.protocol.WindowCounter`): a flood of them ("rapid
reset") gets ``GOAWAY(ENHANCE_YOUR_CALM)``, however the client splits its writes.

Reading is paced: while the writer is congested (the client does not read its answers)
no call is started and nothing more is read; every ``_DISPATCH_BATCH`` requests of one
read the reader yields so the calls it started can answer; a lone call is let run before
the next read. Draining (:meth:`ServerConnection.start_drain`, on the server's shutdown or
the idle timeout) sends ``GOAWAY(NO_ERROR)`` and closes the connection once its last call
has ended. A connection's failure -- a protocol error, a timeout, a reset -- is logged with
its reason and ends that connection only.

Log events: ``rpc.connection.handshake_timeout``, ``rpc.connection.tls_failed``,
``rpc.connection.protocol_error``, ``rpc.connection.keepalive_timeout``,
``rpc.connection.enhance_your_calm``, ``rpc.connection.idle``, ``rpc.connection.lost``.
"""

from __future__ import annotations

import contextvars
import math
import ssl
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

import structlog
import trio

from trio_micro.protocol import (
    DEFAULT_COMPRESSION_THRESHOLD,
    CallType,
    Cancel,
    CompressionError,
    Connection,
    ConnectionClosed,
    Credit,
    End,
    ErrorCode,
    Event,
    GoAway,
    Hello,
    Item,
    LocalProtocolError,
    Ping,
    RemoteProtocolError,
    Request,
    Role,
    Settings,
    Status,
    WindowCounter,
)

from ._admission import Admission
from ._context import ServerCall
from ._interceptors import ServerInterceptor
from ._server_calls import (
    ANSWER_BIDI_STREAM,
    ANSWER_CLIENT_STREAM,
    ANSWER_STREAM,
    ANSWER_UNARY,
    Answer,
    CallRunner,
    Handler,
)
from ._server_limits import (
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_SERVER_BUFFERED_BYTES,
    FLUSH_TIMEOUT,
    ByteBudget,
    admit_request,
)
from ._service import MethodInfo
from ._streaming import deliver
from ._tls import PeerIdentity, peer_identity
from ._transport import RECEIVE_SIZE, Writer, peer_host, peer_name
from ._workers import CallWorkers

if TYPE_CHECKING:
    from ._server import Server

__all__: list[str] = []

_ANSWERS: Final[dict[CallType, Answer]] = {
    CallType.SERVER_STREAM: ANSWER_STREAM,
    CallType.CLIENT_STREAM: ANSWER_CLIENT_STREAM,
    CallType.BIDI_STREAM: ANSWER_BIDI_STREAM,
}

log = structlog.get_logger("rpc")

# PINGs arriving faster than min_ping_interval tolerated before GOAWAY(ENHANCE_YOUR_CALM);
# gRPC's default.
_MAX_PING_STRIKES: Final = 2
# Calls cancelled by the client before they were answered, tolerated within any
# _PREMATURE_CANCEL_WINDOW seconds on one connection before GOAWAY(ENHANCE_YOUR_CALM): the
# "rapid reset" flood (CVE-2023-44487) costs the client nothing and the server a task per
# call. Counted over time, not per read, so CANCELs sent a little after their REQUESTs (in
# later reads) count too. And only while they are more than half of the calls started since
# the oldest of them: hedging or timeouts cancel a small share of a busy client's calls,
# however many calls a second that is; a flood cancels nearly all of them.
_MAX_PREMATURE_CANCELS: Final = 1000
_PREMATURE_CANCEL_WINDOW: Final = 10.0
_PREMATURE_CANCEL_FRACTION: Final = 0.5
# Requests dispatched from one read before the reader yields to the calls it started.
_DISPATCH_BATCH: Final = 16
# Idle call workers a connection keeps once it has no calls; the others end then.
_KEEP_IDLE_WORKERS: Final = 16

# A method table entry: its info, the bound handler, and the name of its call tasks
# (passed to start_soon, which otherwise formats a name from the function on every call).
Method = tuple[MethodInfo, Handler, str]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """What :func:`~._server.serve` was told, checked; shared by its connections."""

    settings: Settings
    ssl_context: ssl.SSLContext | None
    interceptors: tuple[ServerInterceptor, ...]
    max_connections: int | None
    handshake_timeout: float
    keepalive_interval: float
    keepalive_timeout: float
    idle_timeout: float
    min_ping_interval: float
    grace_period: float
    max_inflight: int | None = None
    max_connections_per_peer: int | None = None
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    max_server_buffered_bytes: int = DEFAULT_MAX_SERVER_BUFFERED_BYTES
    max_stalled_streams: int = 32
    stall_timeout: float = 30.0
    compression: str | None = None
    compression_threshold: int = DEFAULT_COMPRESSION_THRESHOLD


@final
class ServerConnection:
    """One client connection of ``server``; see the module docs. :meth:`run` serves it."""

    def __init__(self, server: Server, stream: trio.SocketStream) -> None:
        self.server = server
        options = server._options
        self.options = options
        self.peer = peer_name(stream)
        self.local = peer_name(stream, local=True)
        self.peer_host = peer_host(stream)
        self.identity: PeerIdentity | None = None  # the client certificate's, after TLS
        self.stream: trio.abc.Stream = (
            stream
            if options.ssl_context is None
            else trio.SSLStream(stream, options.ssl_context, server_side=True)
        )
        self.proto = Connection(
            Role.SERVER,
            settings=options.settings,
            compression=options.compression,
            compression_threshold=options.compression_threshold,
        )
        self.writer = Writer(self.stream)
        self.admission: Admission = server._admission
        #: The payloads of this connection's calls in progress (see ._server_limits).
        self.budget = ByteBudget(options.max_buffered_bytes)
        self.runner = CallRunner(
            self.proto,
            self.writer,
            options.interceptors,
            self._no_calls_left,
            self.admission,
            (self.budget, server.buffer_budget),
            max_stalled=options.max_stalled_streams,
            stall_timeout=options.stall_timeout,
        )
        self.calls = self.runner.calls
        self._methods = server._methods
        self._nursery: trio.Nursery | None = None
        self._workers: CallWorkers | None = None  # made with the nursery, in run()
        # Every call runs in a fresh copy of this (see _workers).
        self._context = contextvars.copy_context()
        self._read_scope = trio.CancelScope()
        self._timer_scope = trio.CancelScope()
        self._draining = False
        self._closing = False
        self.last_receive = trio.current_time()
        # The run's clock: its current_time() costs about half of trio.current_time()'s
        # (which reaches it through the run context and the runner), and a connection
        # making one call at a time pays it per call (_no_calls_left).
        self._clock = trio.lowlevel.current_clock()
        self._idle_since = self.last_receive
        self._last_ping = -math.inf
        self._ping_strikes = 0
        self._premature_cancels = WindowCounter(
            _MAX_PREMATURE_CANCELS, _PREMATURE_CANCEL_WINDOW, _PREMATURE_CANCEL_FRACTION
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve the connection until it ends: handshake, then read and dispatch.

        Returns after a graceful close (drained, or the client went away) or a failure that
        was logged; the caller closes the stream. Runs a nursery for the writer, the timers
        and the call workers, so it returns only when they have ended. Cancellation ends
        every call at once, without terminal frames.
        """
        options = self.options
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._workers = CallWorkers(
                nursery, context=self._context, keep_idle=_KEEP_IDLE_WORKERS
            )
            events: list[Event] | None = None
            with trio.move_on_after(options.handshake_timeout) as handshake:
                if isinstance(self.stream, trio.SSLStream):
                    try:
                        await self.stream.do_handshake()
                    except trio.BrokenResourceError as exc:
                        log.warning(
                            "rpc.connection.tls_failed",
                            peer=self.peer,
                            reason=repr(exc.__cause__ or exc),
                        )
                        return
                    self.identity = peer_identity(self.stream)
                self.writer.write(self.proto.initiate())
                nursery.start_soon(self._run_writer)
                events = await self._read_hello()
            if handshake.cancelled_caught:
                log.warning(
                    "rpc.connection.handshake_timeout",
                    peer=self.peer,
                    handshake_timeout=options.handshake_timeout,
                )
                self._write_goaway(ErrorCode.HANDSHAKE_TIMEOUT, "handshake timeout")
                if self.proto.goaway_sent is not None:  # else: stuck in TLS, no writer yet
                    await self._flush_and_close()
                return
            if events is None:
                await self._flush_and_close()
                return
            nursery.start_soon(self._run_timers)
            if self.server._shutting_down:
                self.start_drain("server shutting down")
            await self._read_loop(events)
            await self._flush_and_close()

    async def _run_writer(self) -> None:
        try:
            await self.writer.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("rpc.connection.lost", peer=self.peer, reason=repr(exc.__cause__ or exc))
            self._cancel_all()

    async def _read_hello(self) -> list[Event] | None:
        """Read until the peer's HELLO; return the events after it (None: connection over)."""
        while True:
            events = await self._receive()
            if events is None:
                return None
            for index, event in enumerate(events):
                if isinstance(event, Hello):
                    return events[index + 1 :]
                if isinstance(event, ConnectionClosed):
                    return None

    async def _receive(self) -> list[Event] | None:
        """One read; None when the connection is over (already handled and logged)."""
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("rpc.connection.lost", peer=self.peer, reason=repr(exc.__cause__ or exc))
            self._closing = True
            return None
        self.last_receive = trio.current_time()
        try:
            return self.proto.receive_data(data)
        except RemoteProtocolError as exc:
            log.warning(
                "rpc.connection.protocol_error",
                peer=self.peer,
                code=exc.code.name,
                reason=exc.message,
            )
            self._write_goaway(exc.code, exc.message)
            self._closing = True
            return None

    async def _read_loop(self, events: list[Event]) -> None:
        started = 0
        with self._read_scope:
            while True:
                started_before = started
                woke = False  # a stream handler waiting for the client's next item
                for event in events:
                    kind = type(event)
                    if kind is Request:
                        if self.writer.congested:
                            # The client doesn't read its answers: start no more calls
                            # until it does (and, below, read no more requests).
                            await self.writer.wait_uncongested()
                        self._on_request(event)  # type: ignore[arg-type]
                        started += 1
                        if started % _DISPATCH_BATCH == 0:
                            # Let the calls started so far run and their answers leave
                            # while we dispatch the rest: the client starts on the first
                            # answers instead of both processes taking turns idling.
                            await trio.lowlevel.cancel_shielded_checkpoint()
                    elif kind is Cancel:
                        if self.runner.cancel(
                            event.id  # type: ignore[union-attr]
                        ) and not self._on_premature_cancel(started):
                            return
                    elif kind is Credit:
                        self.runner.credit(event.id)  # type: ignore[union-attr]
                    elif kind is Item or kind is End:  # a client- or bidi-stream's half
                        woke |= deliver(
                            self.calls,
                            event,  # type: ignore[arg-type]
                            (self.budget, self.server.buffer_budget),
                            self.writer.pending,
                            self.proto,
                        )
                    elif kind is Ping:
                        if not self._on_ping(event):  # type: ignore[arg-type]
                            return
                    elif kind is ConnectionClosed:
                        return
                    elif kind is GoAway:
                        self._draining = True  # the client opens no more streams
                    # Pong: liveness is already recorded by last_receive.
                if self._closing:
                    return
                if (started == started_before + 1 or woke) and len(self.calls) == 1:
                    # A lone call (one at a time, latency-bound; or a lone stream's handler
                    # given the item it waited for): let it run and answer before the next
                    # read, which would find nothing yet and register for epoll -- two
                    # system calls off the call's way.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                if self.writer.congested:
                    await self.writer.wait_uncongested()
                received = await self._receive()
                if received is None:
                    return
                events = received

    def _on_ping(self, ping: Ping) -> bool:
        now = trio.current_time()
        if now - self._last_ping < self.options.min_ping_interval:
            self._ping_strikes += 1
            if self._ping_strikes > _MAX_PING_STRIKES:
                log.warning(
                    "rpc.connection.enhance_your_calm",
                    peer=self.peer,
                    reason="ping flood",
                    min_ping_interval=self.options.min_ping_interval,
                )
                self._write_goaway(ErrorCode.ENHANCE_YOUR_CALM, "too many pings")
                return False
        self._last_ping = now
        self.writer.write(self.proto.send_pong(ping.opaque))
        return True

    def _on_premature_cancel(self, started: int) -> bool:
        """A running call was cancelled by the client (of ``started`` calls so far on this
        connection); False (GOAWAY written) on a flood."""
        if self._premature_cancels.record(trio.current_time(), started):
            return True
        log.warning(
            "rpc.connection.enhance_your_calm",
            peer=self.peer,
            reason="cancel flood: calls cancelled before they were answered",
            premature_cancels=_MAX_PREMATURE_CANCELS,
            window=_PREMATURE_CANCEL_WINDOW,
        )
        self._write_goaway(ErrorCode.ENHANCE_YOUR_CALM, "too many cancelled calls")
        return False

    def _write_goaway(self, code: ErrorCode, message: str) -> None:
        # LocalProtocolError: before initiate(), e.g. a TLS handshake that timed out.
        with suppress(LocalProtocolError):
            self.writer.write(self.proto.send_goaway(code, message))

    def start_drain(self, reason: str) -> None:
        """Graceful close: GOAWAY, then close when the last call ends."""
        if self._draining and self.proto.goaway_sent is not None:
            return
        self._draining = True
        if not self.proto.handshake_complete:
            self._closing = True
            self._read_scope.cancel()
            return
        self._write_goaway(ErrorCode.NO_ERROR, reason)
        if not self.calls:
            self._read_scope.cancel()

    async def _flush_and_close(self) -> None:
        self._closing = True
        self.writer.finish()
        with trio.move_on_after(FLUSH_TIMEOUT):
            await self.writer.done.wait()
        self._cancel_all()

    def _cancel_all(self) -> None:
        self._closing = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _run_timers(self) -> None:
        options = self.options
        interval = options.keepalive_interval
        timeout = options.keepalive_timeout
        idle_timeout = options.idle_timeout
        ping_sent: float | None = None
        opaque = 0
        while True:
            now = trio.current_time()
            wake = math.inf
            if ping_sent is not None and self.last_receive >= ping_sent:
                ping_sent = None
            if ping_sent is not None:
                if now >= ping_sent + timeout:
                    log.warning(
                        "rpc.connection.keepalive_timeout",
                        peer=self.peer,
                        keepalive_timeout=timeout,
                    )
                    self._cancel_all()
                    return
                wake = ping_sent + timeout
            elif math.isfinite(interval):
                due = self.last_receive + interval
                if now >= due:
                    opaque += 1
                    self.writer.write(self.proto.send_ping(opaque))
                    ping_sent = now
                    wake = now + timeout
                else:
                    wake = due
            if math.isfinite(idle_timeout) and not self.calls and not self._draining:
                due = self._idle_since + idle_timeout
                if now >= due:
                    log.info("rpc.connection.idle", peer=self.peer, idle_timeout=idle_timeout)
                    self.start_drain("idle timeout")
                    return
                wake = min(wake, due)
            with trio.CancelScope(deadline=wake) as self._timer_scope:
                await trio.sleep_forever()

    # ------------------------------------------------------------------ calls

    def _on_request(self, frame: Request) -> None:
        self._ping_strikes = 0
        entry = self._methods.get(frame.method)
        if entry is None:
            self._reject(frame, Status.UNIMPLEMENTED, self._unimplemented_message(frame.method))
            return
        info, handler, task_name = entry
        if info.call_type is not frame.call_type:
            self._reject(
                frame,
                Status.UNIMPLEMENTED,
                f"{frame.method!r} is a {info.kind} method, called as "
                f"{frame.call_type.name.lower()}",
            )
            return
        admission = self.admission
        calls = self.calls
        if admission.inflight >= admission.threshold:
            refusal = admission.over_limit(info.service, len(calls), self, self.peer, frame.method)
            if refusal is not None:
                self.writer.write(
                    self.proto.send_error(frame.id, refusal.code, refusal.message, refusal.details)
                )
                return
        payload = frame.payload
        if not isinstance(payload, bytes):
            try:  # bounded by our max_frame_size: see protocol.Connection.decompress
                payload = self.proto.decompress(payload)
            except CompressionError as exc:
                self._reject(frame, exc.status, f"bad request payload: {exc}")
                return
        over = admit_request(
            len(payload), self.budget, self.server.buffer_budget, self.writer.pending
        )
        if over is not None:
            self._refuse_buffered(frame, over)
            return
        admission.inflight += 1
        if not calls:  # its first: one more connection with calls (see Admission)
            admission.busy += 1
            if admission.recent:
                admission.recent.pop(self, None)
        workers = self._workers
        assert workers is not None
        worker = workers.acquire()
        scope = worker.scope
        timeout_ms = frame.timeout_ms
        if timeout_ms is None:
            deadline = math.inf
        else:
            deadline = trio.current_time() + timeout_ms / 1000
            scope.deadline = deadline
        sid = frame.id
        call = ServerCall(
            info.service,
            info.name,
            info.kind,
            self.peer,
            frame.metadata,
            deadline,
            sid,
            scope,
            self.local,
            self.identity,
            self.last_receive,  # the read that brought this request
        )
        calls[sid] = call
        answer = ANSWER_UNARY if info.call_type is CallType.UNARY else _ANSWERS[info.call_type]
        workers.start(worker, self.runner.run(answer, call, info, handler, payload), task_name)

    def _unimplemented_message(self, method: str) -> str:
        service, _, name = method.partition("/")
        if service not in self.server.services:
            return f"unknown service {service!r}"
        return f"unknown method {name!r} of service {service!r}"

    def _reject(self, frame: Request, code: Status, message: str) -> None:
        self.writer.write(self.proto.send_error(frame.id, code, message))

    def _refuse_buffered(self, frame: Request, limit: str) -> None:
        budget = self.budget if limit == "max_buffered_bytes" else self.server.buffer_budget
        self.writer.write(
            self.proto.send_error(
                frame.id,
                Status.RESOURCE_EXHAUSTED,
                f"server busy: {limit} ({budget.limit} bytes) reached; retry later",
                {"refused": limit},
            )
        )

    def _no_calls_left(self) -> None:
        admission = self.admission
        admission.busy -= 1  # see Admission: it stays a contender for a while
        if admission.max_inflight is not None:
            admission.recent[self] = self._clock.current_time()  # not there: see _on_request
        if self._workers is not None:
            self._workers.trim()
        if self._draining:
            self._read_scope.cancel()
        elif math.isfinite(self.options.idle_timeout):
            self._idle_since = self._clock.current_time()
            self._timer_scope.cancel()  # re-plan: the idle clock starts now
