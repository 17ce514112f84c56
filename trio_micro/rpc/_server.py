"""The RPC server: :func:`serve`, :func:`open_server` and :class:`Server`.

Theory of operation
-------------------
Tasks::

    serve ── accept loop (one per listener)
          └─ connection (one per client; :mod:`._server_connection`)
               ├─ writer, timers, the reader
               └─ call workers (:mod:`._workers`), each running one call at a time
                  (:mod:`._server_calls`)

This module owns the listeners and the set of connections: it binds, accepts, refuses
connections beyond ``max_connections`` or ``max_connections_per_peer`` (with a GOAWAY
saying why, unless TLS; :mod:`._server_limits` has the bounds a client can't raise), runs each
connection in a task of its own (a failure there is logged and ends that connection only),
and shuts down. What it serves is built, and every argument checked, by
:mod:`._server_setup` before anything is bound. A connection reads frames and dispatches
each REQUEST to a call worker, which runs the call in a context and under a cancel scope of
its own; see those modules.

Admission (:mod:`._admission`): with ``max_inflight``, a REQUEST arriving while that many
calls run on the whole server (or, near it, on a connection already holding its fair
share) is answered ``RESOURCE_EXHAUSTED`` at once by the connection that read it.
Health (:mod:`._health`): a ``trio_micro.health`` service is served unless
``health=False``.

Graceful shutdown (:meth:`Server.shutdown`): the accept loops stop, every health status
turns ``NOT_SERVING`` and the health watches queue that answer and end, then every
connection sends ``GOAWAY(NO_ERROR)`` and closes as soon as its last call ends; after
``grace_period`` the calls still running are cancelled.

Log events: ``rpc.server.started``, ``rpc.server.shutdown``, ``rpc.server.grace_expired``,
``rpc.server.accept_failed``, ``rpc.connection.refused``, ``rpc.connection.crashed``; the
connection's are listed in :mod:`._server_connection`, ``rpc.handler.crashed`` in
:mod:`._server_calls`.
"""

from __future__ import annotations

import errno
import inspect
import math
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Unpack, final

import structlog
import trio

from trio_micro._background import open_background_nursery
from trio_micro.protocol import DEFAULT_COMPRESSION_THRESHOLD, DEFAULT_MAX_FRAME_SIZE

from ._admission import Admission
from ._health import HEALTH_SERVICE, HealthService
from ._interceptors import ServerInterceptor
from ._options import ServerOptions
from ._server_connection import Method, ServerConfig, ServerConnection
from ._server_limits import (
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_SERVER_BUFFERED_BYTES,
    ByteBudget,
    ConnectionGate,
)
from ._server_setup import Prepared, prepare
from ._service import Service

__all__ = ["Server", "ServerStatistics", "open_server", "serve"]

log = structlog.get_logger("rpc")

# accept() errors that mean "out of resources right now": back off instead of dying
# (as trio.serve_listeners does).
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
_ACCEPT_BACKOFF: Final = 0.1


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
        refused_calls: Calls refused at ``max_inflight`` since the server started.
        health_watches: Health ``watch`` streams running.
        request_bytes: Request payload bytes of the calls in progress, over all
            connections (bounded by ``max_server_buffered_bytes`` plus one request per
            connection).
        refused_connection_budget: Requests (and request-stream items) refused at a
            connection's ``max_buffered_bytes``, since the server started.
        refused_server_budget: Requests refused at ``max_server_buffered_bytes``.
        refused_stalled_streams: Server-streams failed at ``max_stalled_streams``.
        stall_timeouts: Server-streams failed after waiting ``stall_timeout`` for CREDIT.
    """

    connections: int
    active_calls: int
    queued_bytes: int
    shutting_down: bool
    refused_calls: int = 0
    health_watches: int = 0
    request_bytes: int = 0
    refused_connection_budget: int = 0
    refused_server_budget: int = 0
    refused_stalled_streams: int = 0
    stall_timeouts: int = 0


@final
class Server:
    """A running server, as :func:`serve` reports it through ``task_status`` and
    :func:`open_server` yields it. Not constructed directly.

    Attributes:
        address: ``(host, port)`` of the first listening socket; with ``port=0``, the port
            the system chose.
        addresses: ``(host, port)`` of every listening socket.
        services: Wire name -> service instance, the reflection and health services
            included.
        health: The :class:`HealthService` (``None`` with ``health=False``): set a
            service's status with :meth:`HealthService.set_status`.
    """

    def __init__(
        self,
        services: dict[str, Service],
        methods: dict[str, Method],
        options: ServerConfig,
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
        self._connections: set[ServerConnection] = set()
        self._gate = ConnectionGate(
            max_connections=options.max_connections,
            max_connections_per_peer=options.max_connections_per_peer,
            goaway=None if options.ssl_context is not None else options.settings,
        )
        #: The requests of every connection (see ._server_limits).
        self.buffer_budget = ByteBudget(options.max_server_buffered_bytes)
        # The refusal counts of the connections that ended (budget, stalled, timeouts).
        self._ended_refusals = [0, 0, 0]
        self._accept_scope = trio.CancelScope()
        self._connections_scope = trio.CancelScope()
        self._shutting_down = False
        self._drained = trio.Event()
        self._stopped = trio.Event()
        health = services.get(HEALTH_SERVICE)
        self.health = health if isinstance(health, HealthService) else None
        self._admission = Admission(
            options.max_inflight, None if self.health is None else HEALTH_SERVICE
        )
        if isinstance(health, HealthService):
            watched = health
            self._admission.uncounted = lambda: watched.watches

    def __repr__(self) -> str:
        host, port = self.address
        return f"<rpc.Server {host}:{port} services={sorted(self.services)!r}>"

    def statistics(self) -> ServerStatistics:
        """Return a snapshot of the server's load (synchronous)."""
        budget, stalled, timeouts = self._ended_refusals
        for conn in self._connections:
            budget += conn.budget.refused
            stalled += conn.runner.refused_stalled
            timeouts += conn.runner.stall_timeouts
        return ServerStatistics(
            connections=len(self._connections),
            active_calls=sum(len(conn.calls) for conn in self._connections),
            queued_bytes=sum(conn.writer.pending for conn in self._connections),
            shutting_down=self._shutting_down,
            refused_calls=self._admission.refused,
            health_watches=0 if self.health is None else self.health.watches,
            request_bytes=self.buffer_budget.used,
            refused_connection_budget=budget,
            refused_server_budget=self.buffer_budget.refused,
            refused_stalled_streams=stalled,
            stall_timeouts=timeouts,
        )

    async def shutdown(self) -> None:
        """Shut down gracefully; return when the server has stopped.

        Stops accepting connections, turns every health status ``NOT_SERVING`` and ends
        the health watches (after they queued that answer, at most a second), then sends
        ``GOAWAY(NO_ERROR)`` on every connection (no new calls), lets calls in progress
        finish for up to ``grace_period`` seconds, then cancels the rest and closes
        everything. Calling it again (or concurrently) just
        waits for the same shutdown.

        Cancellation: cancelling ``shutdown`` stops the waiting, not the shutdown; the
        grace period still ends it.
        """
        if not self._shutting_down:
            self._shutting_down = True
            log.info("rpc.server.shutdown", address=list(self.address))
            self._accept_scope.cancel()
            if self.health is not None:
                # Watchers hear NOT_SERVING before the GOAWAY; shielded, or a cancelled
                # caller would leave the connections undrained.
                with trio.CancelScope(shield=True):
                    await self.health.shutdown()
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
        gate = self._gate
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                gate.accept_failed(exc, _ACCEPT_BACKOFF)
                await trio.sleep(_ACCEPT_BACKOFF)
                continue
            if gate.admit(stream, len(self._connections), nursery):
                conn = ServerConnection(self, stream)
                self._connections.add(conn)
                gate.peers.add(conn.peer_host)
                nursery.start_soon(self._handle, conn)

    async def _handle(self, conn: ServerConnection) -> None:
        try:
            await conn.run()
        except Exception as exc:
            # A bug or a surprise in one connection must not take down the others.
            log.error("rpc.connection.crashed", peer=conn.peer, exc_info=exc)
        finally:
            self._connections.discard(conn)
            self._admission.forget(conn)
            ended = self._ended_refusals
            ended[0] += conn.budget.refused
            ended[1] += conn.runner.refused_stalled
            ended[2] += conn.runner.stall_timeouts
            self._gate.peers.remove(conn.peer_host)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(conn.stream)
            self._check_drained()


async def serve(
    services: Iterable[Service],
    *,
    host: str | None = None,
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    interceptors: Sequence[ServerInterceptor] = (),
    reflection: bool = True,
    health: bool = True,
    max_connections: int | None = None,
    max_connections_per_peer: int | None = None,
    max_inflight: int | None = None,
    max_concurrent_streams: int = 1000,
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
    max_server_buffered_bytes: int = DEFAULT_MAX_SERVER_BUFFERED_BYTES,
    max_stalled_streams: int = 32,
    stall_timeout: float = 30.0,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_metadata_size: int = 8 * 1024,
    handshake_timeout: float = 10.0,
    keepalive_interval: float = 7200.0,
    keepalive_timeout: float = 20.0,
    idle_timeout: float = math.inf,
    min_ping_interval: float = 5.0,
    compression: str | None = None,
    compression_threshold: int = DEFAULT_COMPRESSION_THRESHOLD,
    grace_period: float = 10.0,
    listeners: Sequence[trio.SocketListener] | None = None,
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
        health: Also serve ``trio_micro.health`` (:class:`HealthService`, gRPC's health
            protocol), every service ``SERVING``; see :attr:`Server.health`.
        max_connections: Connections beyond this are refused at once (GOAWAY saying so,
            then closed; the client's call fails ``UNAVAILABLE``) and logged (at most a
            line per 5 s, with a count); ``None`` for no limit.
        max_connections_per_peer: Like ``max_connections``, for the connections from one
            host (IP address); ``None`` for no limit.
        max_inflight: Calls the whole server runs at once; a call beyond it is refused at
            once with ``RESOURCE_EXHAUSTED`` (details ``refused=max_inflight``, which a
            channel with a retry policy retries on another endpoint) and logged as
            ``rpc.call.refused``. Near the limit (its top eighth) a connection already
            holding its fair share, ``ceil(max_inflight / connections calling)``, is
            refused first (details ``fair-share``), so one connection can't take every
            slot (docs/rpc.md §14). Health calls are exempt. ``None``: no limit. Unlike
            ``max_concurrent_streams``, which makes a client wait, this sheds load.
        max_concurrent_streams: Calls one connection may have running at once; advertised to
            clients, which wait for a free slot.
        max_buffered_bytes: Bytes one connection may make the server hold: the payloads of
            its calls in progress plus its answers queued and not yet sent. A REQUEST
            that would go over is refused with ``RESOURCE_EXHAUSTED`` (that call only),
            unless the connection has no call in progress. Default 8 MiB.
        max_server_buffered_bytes: The same over every connection's request payloads.
            Default 256 MiB. docs/rpc.md ("Limits and worst-case memory") has the formula.
        max_stalled_streams: Server-streams of one connection that may wait for the
            client's CREDIT at once; one more fails with ``RESOURCE_EXHAUSTED``.
        stall_timeout: Seconds a server-stream may wait for CREDIT; then it fails with
            ``RESOURCE_EXHAUSTED``, which frees its handler (``math.inf``: forever).
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
        compression: The encoding (``"zlib"``, ``"zstd"`` with the extra, or ``"none"``)
            that answers are compressed with when the call does not ask for one and the
            client accepts it; payloads under ``compression_threshold`` are sent as they
            are. The server always accepts (decompresses) every encoding it supports;
            docs/rpc.md §16.
        compression_threshold: Answers shorter than this many bytes are sent uncompressed,
            whatever the encoding (default 1 KiB,
            ``protocol.DEFAULT_COMPRESSION_THRESHOLD``; 0: compress every answer that gets
            smaller).
        grace_period: Seconds :meth:`Server.shutdown` lets running calls finish.
        listeners: Serve on these (e.g. from :func:`open_tcp_listeners`, several ports, or
            a port shared with ``reuse_port``) instead of binding ``host`` and ``port``,
            which must then be left out. The server owns them: it closes them.
        task_status: Receives the :class:`Server` once it listens.

    Returns:
        Only after :meth:`Server.shutdown` completed; otherwise runs until cancelled, and
        cancellation closes every connection at once (no grace period).

    Raises:
        TypeError / ValueError: A bad argument (before anything is bound).
        OSError: The address can't be bound.
    """
    prepared = prepare(
        services,
        host=host,
        port=port,
        ssl_context=ssl_context,
        interceptors=interceptors,
        reflection=reflection,
        health=health,
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
        max_inflight=max_inflight,
        max_concurrent_streams=max_concurrent_streams,
        max_buffered_bytes=max_buffered_bytes,
        max_server_buffered_bytes=max_server_buffered_bytes,
        max_stalled_streams=max_stalled_streams,
        stall_timeout=stall_timeout,
        max_frame_size=max_frame_size,
        max_metadata_size=max_metadata_size,
        handshake_timeout=handshake_timeout,
        keepalive_interval=keepalive_interval,
        keepalive_timeout=keepalive_timeout,
        idle_timeout=idle_timeout,
        min_ping_interval=min_ping_interval,
        compression=compression,
        compression_threshold=compression_threshold,
        grace_period=grace_period,
        listeners=listeners,
    )
    await _serve_prepared(prepared, task_status)


async def _serve_prepared(
    prepared: Prepared, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> None:
    """Bind (unless given listeners) and run the server; see :func:`serve`."""
    listeners = prepared.listeners
    if listeners is None:
        listeners = await trio.open_tcp_listeners(prepared.port, host=prepared.host)
    server = Server(prepared.by_name, prepared.methods, prepared.options, list(listeners))
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
        BaseException: What the body raised comes out unwrapped (not in a group) when the
            server's tasks did not fail (:func:`trio_micro.open_background_nursery`); so do
            ``OSError`` and argument errors from starting the server.
        BaseExceptionGroup: The running server failed (with the body's exception too, if
            it raised).
    """
    # serve's signature holds the defaults: bind to it rather than repeat them here, so
    # that a bad argument is raised here, before the nursery and without a checkpoint.
    arguments = inspect.signature(serve).bind(services, host=host, port=port, **options)
    arguments.apply_defaults()
    del arguments.arguments["task_status"]
    prepared = prepare(*arguments.args, **arguments.kwargs)
    async with open_background_nursery() as nursery:
        server: Server = await nursery.start(_serve_prepared, prepared)
        try:
            yield server
        except BaseException:
            nursery.cancel_scope.cancel()
            raise
        await server.shutdown()
