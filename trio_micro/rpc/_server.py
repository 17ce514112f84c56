"""The RPC server: :func:`serve`, :func:`open_server` and :class:`Server`.

Theory of operation
-------------------
Tasks::

    serve ── accept loop (one per listener)
          └─ connection (one per client) ── writer (the only task that writes the socket)
                                          ├─ timers (keepalive PINGs, idle timeout)
                                          ├─ the connection task itself reads frames
                                          └─ call workers (one per call in progress)

The connection task reads the socket, feeds the sans-io :class:`~trio_micro.protocol.
Connection`, and dispatches events: a REQUEST hands the call to a worker, CANCEL cancels that
call's scope, CREDIT wakes a stream producer waiting for credit, PING is answered in place.
Call workers append their answer to the :class:`~trio_micro.rpc._transport.Writer`'s queue
without awaiting, so the answers of a burst of calls leave in one ``send_all``.

A call worker is a task that runs one call at a time and, when the call is done, parks for
the next one instead of ending: starting a task and entering a new cancel scope for every
call used to be half of the server's time per call. A connection has at most as many workers
as it had calls at once (at most ``max_concurrent_streams``); when its last call ends, it
keeps ``_KEEP_IDLE_WORKERS`` of them and ends the others. Each call still runs as if in a
task of its own: in a fresh copy of the connection's context (what a handler binds or sets
never reaches the next call) and under a cancel scope that no other call shares -- the
worker's, whose deadline is the call's and is cleared when the call ends, and which is
replaced after a call was cancelled.

The scope's deadline is the client's ``timeout_ms``, so calls the handler makes inherit the
remaining time. The scope is cancelled by the client's CANCEL, which is how cancellation
crosses the wire. A cancelled call still gets its terminal frame (``CANCELLED`` or
``DEADLINE_EXCEEDED``), as the protocol requires. For a unary call the RESPONSE is queued
inside the interceptor chain (as a stream's items are), so when ``proceed`` returns the
answer is on its way and an access log's record does not delay it.

Graceful shutdown (:meth:`Server.shutdown`): the accept loops stop, every connection sends
``GOAWAY(NO_ERROR)`` and closes as soon as its last call ends; after ``grace_period`` the
calls still running are cancelled. A connection's failure -- a protocol error, a timeout, a
reset -- is logged with its reason and ends that connection only.

Log events: ``rpc.server.started``, ``rpc.server.shutdown``, ``rpc.server.grace_expired``,
``rpc.server.accept_failed``, ``rpc.connection.refused``, ``rpc.connection.handshake_timeout``,
``rpc.connection.tls_failed``,
``rpc.connection.protocol_error``, ``rpc.connection.keepalive_timeout``,
``rpc.connection.enhance_your_calm``, ``rpc.connection.idle``, ``rpc.connection.lost``,
``rpc.connection.crashed``, ``rpc.handler.crashed``.
"""

from __future__ import annotations

import contextvars
import errno
import math
import ssl
import types
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Sequence,
)
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final, Unpack, final

import msgspec
import structlog
import trio

from trio_micro._validate import check_int, check_optional_int, check_seconds
from trio_micro.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    CallType,
    Cancel,
    Connection,
    ConnectionClosed,
    Credit,
    ErrorCode,
    Event,
    GoAway,
    Hello,
    LocalProtocolError,
    Ping,
    RemoteProtocolError,
    Request,
    Role,
    Settings,
    Status,
)

from ._context import ServerCall
from ._context import _current as _current_call
from ._errors import RpcError
from ._interceptors import ServerInterceptor
from ._observability import enter_server_span
from ._options import ServerOptions
from ._reflection import ReflectionService
from ._service import MethodInfo, Service, invalid_argument
from ._transport import RECEIVE_SIZE, Writer, peer_name

__all__ = ["Server", "ServerStatistics", "open_server", "serve"]

log = structlog.get_logger("rpc")

# accept() errors that mean "out of resources right now": back off instead of dying
# (as trio.serve_listeners does).
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
_ACCEPT_BACKOFF: Final = 0.1
# Upper bound on flushing the last frames (GOAWAY, errors) of a closing connection.
_FLUSH_TIMEOUT: Final = 1.0
# PINGs arriving faster than min_ping_interval tolerated before GOAWAY(ENHANCE_YOUR_CALM);
# gRPC's default.
_MAX_PING_STRIKES: Final = 2
# CANCELs that arrive in the same read as their REQUEST tolerated on one connection before
# GOAWAY(ENHANCE_YOUR_CALM): the "rapid reset" flood (CVE-2023-44487) costs the client
# nothing and the server a task per call. A real caller cancels after waiting a while.
_MAX_PREMATURE_CANCELS: Final = 1000
_encode: Final = msgspec.msgpack.Encoder().encode
# Requests dispatched from one read before the reader yields to the calls it started.
_DISPATCH_BATCH: Final = 16
# Idle call workers a connection keeps once it has no calls; the others end then.
_KEEP_IDLE_WORKERS: Final = 16

Handler = Callable[[Any], Any]
# A method table entry: its info, the bound handler, and the name of its call tasks
# (passed to start_soon, which otherwise formats a name from the function on every call).
_Method = tuple[MethodInfo, Handler, str]
# The innermost step of a call, run inside the interceptor chain: _ANSWER_UNARY or
# _ANSWER_STREAM (plain functions, taking the connection first; see _run_call).
_Answer = Callable[
    ["_ServerConnection", ServerCall, MethodInfo, Handler, bytes], Coroutine[Any, Any, None]
]


@final
@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """A snapshot of :meth:`Server.statistics`.

    Attributes:
        connections: Open client connections (including ones still in the handshake).
        active_calls: Calls whose handler is running.
        queued_bytes: Bytes queued for sending, over all connections. Each connection's
            queue is bounded (about 1 MiB plus one frame) whether or not clients read.
        shutting_down: :meth:`Server.shutdown` has started.
    """

    connections: int
    active_calls: int
    queued_bytes: int
    shutting_down: bool


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class _Options:
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


@final
class Server:
    """A running server, as :func:`serve` reports it through ``task_status`` and
    :func:`open_server` yields it. Not constructed directly.

    Attributes:
        address: ``(host, port)`` of the first listening socket; with ``port=0``, the port
            the system chose.
        addresses: ``(host, port)`` of every listening socket.
        services: Wire name -> service instance, the reflection service included.
    """

    def __init__(
        self,
        services: dict[str, Service],
        methods: dict[str, _Method],
        options: _Options,
        listeners: list[trio.SocketListener],
    ) -> None:
        self.services = services
        self._methods = methods
        self._options = options
        self._listeners = listeners
        self.addresses: list[tuple[str, int]] = [
            tuple(listener.socket.getsockname()[:2]) for listener in listeners
        ]
        self.address: tuple[str, int] = self.addresses[0]
        self._connections: set[_ServerConnection] = set()
        self._accept_scope = trio.CancelScope()
        self._connections_scope = trio.CancelScope()
        self._shutting_down = False
        self._drained = trio.Event()
        self._stopped = trio.Event()

    def __repr__(self) -> str:
        host, port = self.address
        return f"<rpc.Server {host}:{port} services={sorted(self.services)!r}>"

    def statistics(self) -> ServerStatistics:
        """Return a snapshot of the server's load (synchronous)."""
        return ServerStatistics(
            connections=len(self._connections),
            active_calls=sum(len(conn.calls) for conn in self._connections),
            queued_bytes=sum(conn.writer.pending for conn in self._connections),
            shutting_down=self._shutting_down,
        )

    async def shutdown(self) -> None:
        """Shut down gracefully; return when the server has stopped.

        Stops accepting connections, sends ``GOAWAY(NO_ERROR)`` on every connection (no new
        calls), lets calls in progress finish for up to ``grace_period`` seconds, then
        cancels the rest and closes everything. Calling it again (or concurrently) just
        waits for the same shutdown.

        Cancellation: cancelling ``shutdown`` stops the waiting, not the shutdown; the
        grace period still ends it.
        """
        if not self._shutting_down:
            self._shutting_down = True
            log.info("rpc.server.shutdown", address=list(self.address))
            self._accept_scope.cancel()
            for conn in list(self._connections):
                conn.start_drain("server shutting down")
            self._check_drained()
            with trio.move_on_after(self._options.grace_period):
                await self._drained.wait()
            if not self._drained.is_set():
                log.warning(
                    "rpc.server.grace_expired",
                    grace_period=self._options.grace_period,
                    active_calls=self.statistics().active_calls,
                )
                self._connections_scope.cancel()
        await self._stopped.wait()

    def _check_drained(self) -> None:
        if self._shutting_down and not self._connections:
            self._drained.set()

    async def _run(self, task_status: trio.TaskStatus[Server]) -> None:
        try:
            with self._connections_scope:
                async with trio.open_nursery() as connections:
                    try:
                        with self._accept_scope:
                            async with trio.open_nursery() as accepting:
                                for listener in self._listeners:
                                    accepting.start_soon(self._accept_loop, listener, connections)
                                log.info(
                                    "rpc.server.started",
                                    address=list(self.address),
                                    services=sorted(self.services),
                                )
                                task_status.started(self)
                    finally:
                        with trio.CancelScope(shield=True):
                            for listener in self._listeners:
                                await listener.aclose()
        finally:
            self._shutting_down = True
            self._stopped.set()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        limit = self._options.max_connections
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("rpc.server.accept_failed", error=repr(exc), retry_in=_ACCEPT_BACKOFF)
                await trio.sleep(_ACCEPT_BACKOFF)
                continue
            if limit is not None and len(self._connections) >= limit:
                nursery.start_soon(self._refuse, stream, limit)
            else:
                conn = _ServerConnection(self, stream)
                self._connections.add(conn)
                nursery.start_soon(self._handle, conn)

    async def _refuse(self, stream: trio.SocketStream, limit: int) -> None:
        log.warning(
            "rpc.connection.refused",
            peer=peer_name(stream),
            reason="max_connections",
            max_connections=limit,
        )
        try:
            if self._options.ssl_context is None:
                # Say why, so the client's logs do: preface + HELLO + GOAWAY(last_id=0).
                proto = Connection(Role.SERVER, settings=self._options.settings)
                data = proto.initiate() + proto.send_goaway(
                    ErrorCode.NO_ERROR, f"server at max_connections ({limit})"
                )
                with trio.move_on_after(_FLUSH_TIMEOUT):
                    await stream.send_all(data)
                    # Half-close and drain what the client already sent, so that closing
                    # doesn't reset the connection before it has read the GOAWAY.
                    await stream.send_eof()
                    while await stream.receive_some(RECEIVE_SIZE):
                        pass
        except (trio.BrokenResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle(self, conn: _ServerConnection) -> None:
        try:
            await conn.run()
        except Exception as exc:
            # A bug or a surprise in one connection must not take down the others.
            log.error("rpc.connection.crashed", peer=conn.peer, exc_info=exc)
        finally:
            self._connections.discard(conn)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(conn.stream)
            self._check_drained()


@final
class _ServerConnection:
    """One client connection; see the module docs."""

    def __init__(self, server: Server, stream: trio.SocketStream) -> None:
        self.server = server
        options = server._options
        self.options = options
        self.peer = peer_name(stream)
        self.local = peer_name(stream, local=True)
        self.stream: trio.abc.Stream = (
            stream
            if options.ssl_context is None
            else trio.SSLStream(stream, options.ssl_context, server_side=True)
        )
        self.proto = Connection(Role.SERVER, settings=options.settings)
        self.writer = Writer(self.stream)
        self.calls: dict[int, ServerCall] = {}
        self._credit_waiters: dict[int, trio.lowlevel.Task] = {}
        self._methods = server._methods
        self._interceptors = options.interceptors
        self._nursery: trio.Nursery | None = None
        self._idle: list[_Worker] = []  # parked call workers, the most recent last
        # Every call runs in a fresh copy of this (see _drive).
        self._context = contextvars.copy_context()
        self._read_scope = trio.CancelScope()
        self._timer_scope = trio.CancelScope()
        self._draining = False
        self._closing = False
        self.last_receive = trio.current_time()
        self._idle_since = self.last_receive
        self._last_ping = -math.inf
        self._ping_strikes = 0
        self._premature_cancels = 0
        self._read_floor = 0  # the highest stream id before the current read

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        options = self.options
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
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
        self._read_floor = self.proto.next_stream_id - 1
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
                        call = self.calls.get(event.id)  # type: ignore[union-attr]
                        if call is not None:
                            call._cancel_requested = True
                            call._scope.cancel()
                            if event.id > self._read_floor and not self._on_premature_cancel():  # type: ignore[union-attr]
                                return
                    elif kind is Credit:
                        task = self._credit_waiters.pop(event.id, None)  # type: ignore[union-attr]
                        if task is not None:
                            trio.lowlevel.reschedule(task)
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
                if started == started_before + 1 and len(self.calls) == 1:
                    # A lone call (one at a time, latency-bound): let it run and answer
                    # before the next read, which would find nothing yet and register
                    # for epoll -- two system calls off the call's way.
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

    def _on_premature_cancel(self) -> bool:
        self._premature_cancels += 1
        if self._premature_cancels <= _MAX_PREMATURE_CANCELS:
            return True
        log.warning(
            "rpc.connection.enhance_your_calm",
            peer=self.peer,
            reason="cancel flood: CANCELs in the same read as their REQUEST",
            premature_cancels=self._premature_cancels,
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
        with trio.move_on_after(_FLUSH_TIMEOUT):
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
        idle = self._idle
        worker = idle.pop() if idle else _Worker()
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
        )
        self.calls[sid] = call
        answer = _ANSWER_UNARY if info.call_type is CallType.UNARY else _ANSWER_STREAM
        worker.job = self._run_call(answer, call, info, handler, frame.payload)
        task = worker.task
        if task is not None:
            worker.task = None
            task.name = task_name  # what it runs now, for task trees (/debug/tasks)
            trio.lowlevel.reschedule(task)
        else:
            assert self._nursery is not None
            self._nursery.start_soon(self._run_worker, worker, name=task_name)

    async def _run_worker(self, worker: _Worker) -> None:
        """A call task that, instead of ending with its call, parks to run the next one.

        Starting a task and entering a cancel scope for every call cost about half of the
        server's time per call. A worker runs calls one after another, each in a fresh
        copy of the connection's context (so what a handler binds never leaks into the
        next call) and under the worker's cancel scope, which the worker replaces only
        after a call was cancelled (a deadline of a call is cleared when it ends).
        """
        context = self._context
        while True:
            scope = worker.scope
            with scope:
                while True:
                    job = worker.job
                    worker.job = None
                    assert job is not None
                    await _drive(job, context.copy())
                    if scope.cancel_called:
                        break
                    if scope.deadline != math.inf:
                        scope.deadline = math.inf
                    await self._park(worker)
                    if worker.job is None:  # told to end: see _no_calls_left
                        return
            worker.scope = trio.CancelScope()
            await self._park(worker)
            if worker.job is None:
                return

    async def _park(self, worker: _Worker) -> None:
        """Wait for the next call, or to be told to end (``worker.job`` still ``None``).

        Cancelled only when the connection closes.
        """
        idle = self._idle
        idle.append(worker)
        worker.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            worker.task = None
            with suppress(ValueError):
                idle.remove(worker)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _unimplemented_message(self, method: str) -> str:
        service, _, name = method.partition("/")
        if service not in self.server.services:
            return f"unknown service {service!r}"
        return f"unknown method {name!r} of service {service!r}"

    def _reject(self, frame: Request, code: Status, message: str) -> None:
        self.writer.write(self.proto.send_error(frame.id, code, message))

    def _no_calls_left(self) -> None:
        idle = self._idle
        while len(idle) > _KEEP_IDLE_WORKERS:
            worker = idle.pop(0)  # the longest parked
            task = worker.task
            assert task is not None
            worker.task = None  # job None: end
            trio.lowlevel.reschedule(task)
        if self._draining:
            self._read_scope.cancel()
        elif math.isfinite(self.options.idle_timeout):
            self._idle_since = trio.current_time()
            self._timer_scope.cancel()  # re-plan: the idle clock starts now

    def _send_error(self, call: ServerCall, error: RpcError) -> None:
        try:
            data = self.proto.send_error(call.stream_id, error.code, error.message, error.details)
        except LocalProtocolError as exc:
            if exc.code is not ErrorCode.FRAME_SIZE_ERROR:
                return  # the stream is already gone (refused by our GOAWAY)
            data = self.proto.send_error(
                call.stream_id, Status.RESOURCE_EXHAUSTED, f"error too large: {exc.message}"
            )
        self.writer.write(data)

    def _cancelled_status(self, call: ServerCall) -> RpcError:
        if call._cancel_requested:
            return RpcError(Status.CANCELLED, "cancelled by the client")
        return RpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded")

    def _handler_failed(self, call: ServerCall, exc: BaseException, what: str) -> RpcError | None:
        """The error a handler's exception turns the call into (run on failure only).

        None means: let ``exc`` propagate unchanged -- an ``RpcError`` the handler raised
        (it is the call's status already), a cancellation that is not this call's (the
        connection is closing), or a ``BaseException`` that is not ours to catch. This
        call's cancellation becomes ``CANCELLED`` or ``DEADLINE_EXCEEDED``; any other
        ``Exception`` is logged and becomes ``INTERNAL``.
        """
        if isinstance(exc, RpcError):
            return None
        if isinstance(exc, trio.Cancelled):
            return self._cancelled_status(call) if call._scope.cancel_called else None
        if isinstance(exc, Exception):
            return self._crashed(call, exc, what)
        return None

    def _crashed(self, call: ServerCall, exc: BaseException, what: str) -> RpcError:
        log.error(
            "rpc.handler.crashed",
            service=call.service,
            method=call.method,
            peer=call.peer,
            stream_id=call.stream_id,
            what=what,
            exc_info=exc,
        )
        return RpcError(Status.INTERNAL, "internal server error")

    async def _intercepted(
        self, call: ServerCall, innermost: Callable[[], Awaitable[None]]
    ) -> None:
        chain = innermost
        for interceptor in reversed(self._interceptors):
            chain = _bind(interceptor, call, chain)
        await chain()

    async def _run_call(
        self,
        answer: _Answer,
        call: ServerCall,
        info: MethodInfo,
        handler: Handler,
        payload: bytes,
    ) -> None:
        """Run one call, unary or server-stream, to its terminal frame.

        Runs in a worker, under ``call._scope`` (see :meth:`_run_worker`), in a context of
        its own. ``answer`` (inside the interceptors, if any) decodes the request, runs the
        handler and queues the RESPONSE or the items; here the outcome becomes the
        terminal frame: END after a stream that succeeded, ERROR after a failure
        (``CANCELLED`` or ``DEADLINE_EXCEEDED`` when the call's scope was cancelled).
        Checkpoints: those of ``answer`` and the interceptors. Cancellation of the whole
        connection propagates without a frame.

        One function for both kinds, not one a kind: the unary path pays a single
        identity test for it (and ``_on_request`` no longer makes a bound method per
        call), no extra coroutine.
        """
        _current_call.set(call)
        enter_server_span(call)
        try:
            if self._interceptors:
                await self._intercepted(call, lambda: answer(self, call, info, handler, payload))
            else:
                await answer(self, call, info, handler, payload)
        except RpcError as exc:
            # After a unary answer was queued (an interceptor failing later), the stream is
            # closed and _send_error sends nothing.
            self._send_error(call, exc)
        except trio.Cancelled:
            if call._scope.cancel_called:  # else the whole connection is closing
                self._send_error(call, self._cancelled_status(call))
            raise
        else:
            # A stream's END is queued after the interceptors, so one that fails after
            # proceed() still turns the call into an ERROR.
            if answer is not _ANSWER_UNARY:
                self.writer.write(self.proto.send_end(call.stream_id))
        finally:
            calls = self.calls
            del calls[call.stream_id]
            if not calls:
                self._no_calls_left()

    async def _answer_unary(
        self, call: ServerCall, info: MethodInfo, handler: Handler, payload: bytes
    ) -> None:
        """Decode, run the handler, queue the RESPONSE; failures raise RpcError.

        The innermost step of the interceptor chain, so the access log's record is written
        after the answer has been queued (or, for a lone call, sent), not before.
        """
        try:
            request = info.decode_request(payload)
        except msgspec.DecodeError as exc:
            raise invalid_argument(exc) from None
        try:
            result = await handler(request)
        except BaseException as exc:
            error = self._handler_failed(call, exc, "handler raised")
            if error is None:
                raise
            raise error from None
        if not isinstance(result, info.response_type):
            raise self._crashed(
                call,
                TypeError(
                    f"{info.wire_name} must return a {info.response_type.__name__}, got {result!r}"
                ),
                "bad response",
            )
        writer = self.writer
        if writer.congested:  # bound the queue; see _transport
            await writer.wait_uncongested()
        try:
            data = self.proto.send_response(call.stream_id, _encode(result))
        except LocalProtocolError as exc:
            raise _too_large(exc) from None
        if len(self.calls) == 1:  # alone: send now, skip the writer's round
            writer.write_eager(data)
        else:  # others may answer in this batch too: one send_all for all
            writer.write(data)

    async def _answer_stream(
        self, call: ServerCall, info: MethodInfo, handler: Handler, payload: bytes
    ) -> None:
        """Decode, run the generator, queue its items as credit allows; failures raise
        RpcError. The END is queued by :meth:`_run_call`.
        """
        try:
            request = info.decode_request(payload)
        except msgspec.DecodeError as exc:
            raise invalid_argument(exc) from None
        agen: AsyncGenerator[Any, None] = handler(request)
        proto = self.proto
        writer = self.writer
        sid = call.stream_id
        item_type = info.response_type
        try:
            while True:
                if proto.stream_credit(sid) <= 0:
                    try:
                        await self._wait_credit(sid)
                    except trio.Cancelled:
                        if call._scope.cancel_called:
                            raise self._cancelled_status(call) from None
                        raise  # pragma: no cover - the whole server is being cancelled
                    continue
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    return
                except BaseException as exc:
                    error = self._handler_failed(call, exc, "stream handler raised")
                    if error is None:
                        raise
                    raise error from None
                if not isinstance(item, item_type):
                    raise self._crashed(
                        call,
                        TypeError(
                            f"{info.wire_name} must yield {item_type.__name__} items, got {item!r}"
                        ),
                        "bad item",
                    )
                if writer.congested:  # checked right before queuing: see _transport
                    await writer.wait_uncongested()
                try:
                    writer.write(proto.send_item(sid, _encode(item)))
                except LocalProtocolError as exc:
                    raise RpcError(
                        Status.RESOURCE_EXHAUSTED, f"stream item too large: {exc.message}"
                    ) from None
        finally:
            self._credit_waiters.pop(sid, None)  # defensive: _wait_credit's abort removes it
            try:
                await agen.aclose()
            except Exception as exc:  # a finally block in the generator failed
                self._crashed(call, exc, "stream handler raised while closing")

    async def _wait_credit(self, sid: int) -> None:
        self._credit_waiters[sid] = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._credit_waiters.pop(sid, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


_ANSWER_UNARY: Final[_Answer] = _ServerConnection._answer_unary
_ANSWER_STREAM: Final[_Answer] = _ServerConnection._answer_stream


@final
class _Worker:
    """A call worker: its cancel scope, the call it is to run, and its task while parked."""

    __slots__ = ("job", "scope", "task")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.job: Coroutine[Any, Any, None] | None = None
        self.task: trio.lowlevel.Task | None = None


@types.coroutine
def _drive(
    coro: Coroutine[Any, Any, None], context: contextvars.Context
) -> Generator[Any, Any, None]:
    """Await ``coro`` with each of its steps run in ``context``: ``await coro`` in a
    context of its own, as if it ran in a new task (``context.run`` per step is what trio
    does for every task step)."""
    run = context.run
    try:
        trap = run(coro.send, None)
        while True:
            try:
                value = yield trap
            except GeneratorExit:
                run(coro.close)
                raise
            except BaseException as exc:
                trap = run(coro.throw, exc)
            else:
                trap = run(coro.send, value)
    except StopIteration:
        return


def _too_large(exc: LocalProtocolError) -> RpcError:
    return RpcError(Status.RESOURCE_EXHAUSTED, f"response too large: {exc.message}")


def _bind(
    interceptor: ServerInterceptor, call: ServerCall, proceed: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    def run() -> Awaitable[None]:
        return interceptor.intercept(call, proceed)

    return run


def _build(
    services: Iterable[Service], reflection: bool
) -> tuple[dict[str, Service], dict[str, _Method]]:
    if isinstance(services, Service) or not isinstance(services, Iterable):
        raise TypeError(f"services must be an iterable of rpc.Service instances, got {services!r}")
    by_name: dict[str, Service] = {}
    for service in services:
        if not isinstance(service, Service) or type(service) is Service:
            raise TypeError(f"services must hold rpc.Service instances, got {service!r}")
        name = service.__rpc_name__
        if name in by_name:
            raise ValueError(f"two services named {name!r}: {by_name[name]!r} and {service!r}")
        by_name[name] = service
    if reflection:
        reflector = ReflectionService(by_name.values())
        if reflector.__rpc_name__ in by_name:
            raise ValueError(
                f"a service is named {reflector.__rpc_name__!r}; pass reflection=False"
            )
        by_name[reflector.__rpc_name__] = reflector
    methods: dict[str, _Method] = {}
    for service in by_name.values():
        for attr, info in service.__rpc_methods__.items():
            task_name = f"{__name__}.call:{info.wire_name}"
            methods[info.wire_name] = (info, getattr(service, attr), task_name)
    return by_name, methods


async def serve(
    services: Iterable[Service],
    *,
    host: str | None = None,
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    interceptors: Sequence[ServerInterceptor] = (),
    reflection: bool = True,
    max_connections: int | None = None,
    max_concurrent_streams: int = 1000,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_metadata_size: int = 8 * 1024,
    handshake_timeout: float = 10.0,
    keepalive_interval: float = 7200.0,
    keepalive_timeout: float = 20.0,
    idle_timeout: float = math.inf,
    min_ping_interval: float = 5.0,
    grace_period: float = 10.0,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``services`` over TCP (optionally TLS) until cancelled or shut down.

    Start it with ``server = await nursery.start(partial(rpc.serve, [svc], port=0))``, like
    :func:`trio.serve_tcp`.

    Args:
        services: :class:`Service` instances; their wire names must be unique.
        host: Interface to bind, as for :func:`trio.open_tcp_listeners` (``None``: all).
        port: TCP port; 0 picks a free one (see :attr:`Server.address`).
        ssl_context: Serve TLS with this context (a server-side ``ssl.SSLContext``). The TLS
            handshake counts against ``handshake_timeout``.
        interceptors: :class:`ServerInterceptor` objects wrapped around every call, the
            first outermost.
        reflection: Also serve ``trio_micro.reflection`` (:class:`ReflectionService`).
        max_connections: Connections beyond this are refused (GOAWAY, then closed) and
            logged; ``None`` for no limit.
        max_concurrent_streams: Calls one connection may have running at once; advertised to
            clients, which wait for a free slot.
        max_frame_size: Largest frame accepted, bytes (at least 16384).
        max_metadata_size: Largest request metadata accepted, UTF-8 bytes of keys + values.
        handshake_timeout: Seconds a new connection has to finish the TLS handshake and the
            HELLO exchange; otherwise it is dropped (GOAWAY ``HANDSHAKE_TIMEOUT``).
        keepalive_interval: Seconds without receiving anything after which the server PINGs
            the client (``math.inf``: never).
        keepalive_timeout: Seconds to wait for anything (e.g. the PONG) after a PING before
            dropping the connection.
        idle_timeout: Seconds without calls after which a connection is closed gracefully
            (``math.inf``: never).
        min_ping_interval: Clients may not PING more often than this (seconds); a client
            that keeps doing it gets ``GOAWAY(ENHANCE_YOUR_CALM)``. Advertised in HELLO.
        grace_period: Seconds :meth:`Server.shutdown` lets running calls finish.
        task_status: Receives the :class:`Server` once it listens.

    Returns:
        Only after :meth:`Server.shutdown` completed; otherwise runs until cancelled, and
        cancellation closes every connection at once (no grace period).

    Raises:
        TypeError / ValueError: A bad argument (before anything is bound).
        OSError: The address can't be bound.
    """
    if not isinstance(interceptors, Sequence) or not all(
        isinstance(i, ServerInterceptor) for i in interceptors
    ):
        raise TypeError(
            f"interceptors must be a sequence of rpc.ServerInterceptor, got {interceptors!r}"
        )
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, got {ssl_context!r}")
    check_int("port", port, minimum=0)
    if max_connections is not None:
        check_optional_int("max_connections", max_connections, minimum=1)
    try:
        settings = Settings(
            max_frame_size=check_int("max_frame_size", max_frame_size),
            max_concurrent_streams=check_int(
                "max_concurrent_streams", max_concurrent_streams, minimum=1
            ),
            max_metadata_size=check_int("max_metadata_size", max_metadata_size, minimum=0),
            min_ping_interval_ms=math.ceil(
                check_seconds("min_ping_interval", min_ping_interval, finite=True) * 1000
            ),
        )
    except msgspec.ValidationError as exc:  # pragma: no cover - __post_init__ raises ValueError
        raise ValueError(str(exc)) from None
    options = _Options(
        settings=settings,
        ssl_context=ssl_context,
        interceptors=tuple(interceptors),
        max_connections=max_connections,
        handshake_timeout=check_seconds("handshake_timeout", handshake_timeout, finite=True),
        keepalive_interval=check_seconds("keepalive_interval", keepalive_interval),
        keepalive_timeout=check_seconds("keepalive_timeout", keepalive_timeout, finite=True),
        idle_timeout=check_seconds("idle_timeout", idle_timeout),
        min_ping_interval=min_ping_interval,
        grace_period=check_seconds("grace_period", grace_period),
    )
    by_name, methods = _build(services, reflection)
    listeners = await trio.open_tcp_listeners(port, host=host)
    server = Server(by_name, methods, options, listeners)
    await server._run(task_status)


@asynccontextmanager
async def open_server(
    services: Iterable[Service],
    *,
    host: str | None = None,
    port: int = 0,
    **options: Unpack[ServerOptions],
) -> AsyncIterator[Server]:
    """Run :func:`serve` in the background for the body of an ``async with``.

    ::

        async with rpc.open_server([UserService()], host="127.0.0.1", port=0) as server:
            host, port = server.address

    Takes the same arguments as :func:`serve` (the options typed by :class:`ServerOptions`).
    Leaving the block normally shuts the server down gracefully (:meth:`Server.shutdown`,
    bounded by ``grace_period``); leaving it with an exception, or being cancelled, closes
    it at once.

    Raises:
        BaseExceptionGroup: Wraps what the body or the server raised (a trio nursery runs
            inside).
    """
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(_serve_with_options, services, host, port, options)
        try:
            yield server
        except BaseException:
            nursery.cancel_scope.cancel()
            raise
        await server.shutdown()


async def _serve_with_options(
    services: Iterable[Service],
    host: str | None,
    port: int,
    options: ServerOptions,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(services, host=host, port=port, task_status=task_status, **options)
