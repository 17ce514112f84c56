"""The client side: :func:`open_channel`, :class:`Channel`, typed stubs, response streams.

Theory of operation
-------------------
A channel keeps ``pool_size`` connection *slots* per endpoint. Each slot is one task that
connects, runs the connection until it ends, and connects again -- at once after a
connection that worked for a while, otherwise after an exponential backoff with jitter
(gRPC's: 1 s, x1.6 per attempt, +-20 %, at most 120 s). Ready connections sit in one list;
a call takes one through the :class:`Balancer` (round robin by default) without awaiting
anything, so the channel adds a list index to the cost of a call. When no connection is
ready a call waits while some slot is still connecting, and fails fast with ``UNAVAILABLE``
(naming the addresses and why) once every slot has failed its last attempt -- like gRPC
without ``wait_for_ready``.

A call refused by a server's GOAWAY (never processed) is retried on another connection,
transparently: that is always safe. Retrying calls that *were* processed is issue #4's
retry policy (for ``idempotent`` methods).

Deadlines: each call sends the time left in the caller's effective deadline
(:func:`trio.current_effective_deadline`), rounded *up* to the millisecond so the server's
deadline never fires before the caller's. Cancellation: see :mod:`._client`.

Log events: ``rpc.channel.connect_failed``, ``rpc.channel.connected``,
``rpc.channel.connection_lost``, ``rpc.channel.protocol_error``,
``rpc.channel.keepalive_timeout``, ``rpc.channel.goaway``.
"""

from __future__ import annotations

import math
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar, cast, final, runtime_checkable

import msgspec
import structlog
import trio

from trio_micro._validate import check_int, check_seconds
from trio_micro.protocol import Settings, Status
from trio_micro.protocol._frames import DEFAULT_MAX_FRAME_SIZE

from ._client import ClientConnection, RefusedError, _Call, connect
from ._context import ClientCall
from ._errors import RpcError
from ._interceptors import ClientInterceptor
from ._service import MethodInfo, Service
from ._transport import Endpoint

__all__ = [
    "Balancer",
    "Channel",
    "ChannelStatistics",
    "ResponseStream",
    "RoundRobin",
    "Subchannel",
    "open_channel",
]

log = structlog.get_logger("rpc")

S = TypeVar("S", bound=Service)
T = TypeVar("T")

_encode: Final = msgspec.msgpack.Encoder().encode
# How often a call refused by GOAWAY (never processed) is retried on another connection.
_MAX_REFUSED_RETRIES: Final = 5
# gRPC's connection backoff (doc/connection-backoff.md).
_BACKOFF_INITIAL: Final = 1.0
_BACKOFF_MULTIPLIER: Final = 1.6
_BACKOFF_JITTER: Final = 0.2
_BACKOFF_MAX: Final = 120.0


@runtime_checkable
class Subchannel(Protocol):
    """What a :class:`Balancer` sees of a ready connection."""

    @property
    def endpoint(self) -> Endpoint:
        """The server it is connected to."""
        ...

    @property
    def outstanding(self) -> int:
        """Calls in flight on it."""
        ...


@runtime_checkable
class Balancer(Protocol):
    """Chooses the connection for each call (the hook for issue #4's balancers).

    ``pick`` is called synchronously on every call with at least two ready connections and
    must be cheap.
    """

    def pick(self, ready: Sequence[Subchannel]) -> int:
        """Return the index in ``ready`` of the connection to use."""
        ...


@final
class RoundRobin:
    """The default :class:`Balancer`: each ready connection in turn."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def pick(self, ready: Sequence[Subchannel]) -> int:
        """Return the next index, wrapping around."""
        index = self._next % len(ready)
        self._next = index + 1
        return index


@final
@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A snapshot of :meth:`Channel.statistics`.

    Attributes:
        endpoints: The addresses the channel connects to.
        slots: Connection slots (``pool_size`` per endpoint).
        ready: Connections ready for calls.
        outstanding: Calls in flight over all connections.
    """

    endpoints: tuple[str, ...]
    slots: int
    ready: int
    outstanding: int


class _Backoff:
    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current = _BACKOFF_INITIAL

    def reset(self) -> None:
        self._current = _BACKOFF_INITIAL

    def next_delay(self) -> float:
        delay = self._current * (1 + random.uniform(-_BACKOFF_JITTER, _BACKOFF_JITTER))
        self._current = min(self._current * _BACKOFF_MULTIPLIER, _BACKOFF_MAX)
        return delay


@final
class _Slot:
    __slots__ = ("connection", "endpoint", "error", "failed", "scope")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.connection: ClientConnection | None = None
        self.failed = False  # the last attempt failed; now backing off
        self.error: RpcError | None = None
        self.scope = trio.CancelScope()


@final
class _Options:
    __slots__ = (
        "handshake_timeout",
        "keepalive_interval",
        "keepalive_timeout",
        "server_hostname",
        "settings",
        "ssl_context",
    )

    def __init__(
        self,
        settings: Settings,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        handshake_timeout: float,
        keepalive_interval: float,
        keepalive_timeout: float,
    ) -> None:
        self.settings = settings
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.handshake_timeout = handshake_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout


def _timeout_ms() -> int | None:
    deadline = trio.current_effective_deadline()
    if deadline == math.inf:
        return None
    return max(0, math.ceil((deadline - trio.current_time()) * 1000))


@final
class Channel:
    """Calls to one service address (or several), over a pool of multiplexed connections.

    Made by :func:`open_channel`; use :meth:`stub` to make calls.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        pool_size: int,
        options: _Options,
        interceptors: tuple[ClientInterceptor, ...],
        balancer: Balancer,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self._options = options
        self._interceptors = interceptors
        self._balancer = balancer
        self._slots = [_Slot(endpoint) for endpoint in endpoints for _ in range(pool_size)]
        self._ready: list[ClientConnection] = []
        self._changed = trio.lowlevel.ParkingLot()
        self._closed = False

    def __repr__(self) -> str:
        return f"<rpc.Channel {', '.join(map(str, self.endpoints))}>"

    def statistics(self) -> ChannelStatistics:
        """Return a snapshot of the pool (synchronous)."""
        return ChannelStatistics(
            endpoints=tuple(map(str, self.endpoints)),
            slots=len(self._slots),
            ready=len(self._ready),
            outstanding=sum(conn.outstanding for conn in self._ready),
        )

    def stub(self, service: type[S], *, metadata: Mapping[str, str] | None = None) -> S:
        """Return a client for ``service`` whose methods make calls over this channel.

        The stub has the service's type, so type checkers check requests and know the
        results: ``await users.get_user(GetUserRequest(user_id=1))`` is a ``User``, and a
        server-stream method returns an async iterator of items (a :class:`ResponseStream`
        at run time). Each call checks the request's type (``TypeError``) before sending.

        Args:
            service: The :class:`Service` subclass (the class, not an instance).
            metadata: Sent with every call of this stub (string pairs).

        Raises:
            TypeError: ``service`` is not a Service subclass, or bad metadata.
        """
        if not (isinstance(service, type) and issubclass(service, Service)) or (service is Service):
            raise TypeError(f"service must be an rpc.Service subclass, got {service!r}")
        fixed = _check_metadata(metadata)
        proxy = _Stub(service.__rpc_name__)
        for attr, info in service.__rpc_methods__.items():
            method = (
                self._unary_method(info, fixed)
                if info.kind == "unary"
                else self._stream_method(info, fixed)
            )
            setattr(proxy, attr, method)
        return cast(S, proxy)

    # ------------------------------------------------------------------ connections

    def _start(self, nursery: trio.Nursery) -> None:
        for slot in self._slots:
            nursery.start_soon(self._maintain, slot)

    def _close(self) -> None:
        self._closed = True
        error = RpcError(Status.CANCELLED, "the channel was closed")
        for slot in self._slots:
            if slot.connection is not None:
                slot.connection.close(error)
            slot.scope.cancel()
        self._changed.unpark_all()

    def _unusable(self, conn: ClientConnection) -> None:
        with suppress(ValueError):
            self._ready.remove(conn)
        self._changed.unpark_all()

    async def _maintain(self, slot: _Slot) -> None:
        options = self._options
        backoff = _Backoff()
        with slot.scope:
            while True:
                try:
                    conn = await connect(
                        slot.endpoint,
                        settings=options.settings,
                        ssl_context=options.ssl_context,
                        server_hostname=options.server_hostname,
                        handshake_timeout=options.handshake_timeout,
                        keepalive_interval=options.keepalive_interval,
                        keepalive_timeout=options.keepalive_timeout,
                        on_unusable=self._unusable,
                    )
                except RpcError as exc:
                    delay = backoff.next_delay()
                    log.info(
                        "rpc.channel.connect_failed",
                        peer=str(slot.endpoint),
                        error=exc.message,
                        retry_in=round(delay, 3),
                    )
                    slot.failed = True
                    slot.error = exc
                    self._changed.unpark_all()
                    await trio.sleep(delay)
                    slot.failed = False
                    continue
                log.debug("rpc.channel.connected", peer=str(slot.endpoint))
                slot.connection = conn
                slot.failed = False
                slot.error = None
                self._ready.append(conn)
                self._changed.unpark_all()
                started = trio.current_time()
                try:
                    await conn.run()
                finally:
                    slot.connection = None
                    self._unusable(conn)
                if trio.current_time() - started >= _BACKOFF_INITIAL:
                    backoff.reset()
                    continue
                # A connection that dies at once (e.g. GOAWAY right after HELLO) counts as a
                # failed attempt: back off, and let callers fail fast meanwhile.
                slot.failed = True
                slot.error = RpcError(
                    Status.UNAVAILABLE, f"connection to {slot.endpoint} closed: {conn.reason}"
                )
                self._changed.unpark_all()
                await trio.sleep(backoff.next_delay())
                slot.failed = False

    async def _pick(self) -> ClientConnection:
        while True:
            ready = self._ready
            if ready:
                if len(ready) == 1:
                    return ready[0]
                return ready[self._balancer.pick(ready)]
            if self._closed:
                raise RpcError(Status.CANCELLED, "the channel was closed")
            if all(slot.failed for slot in self._slots):
                reasons = sorted({slot.error.message for slot in self._slots if slot.error})
                raise RpcError(Status.UNAVAILABLE, "; ".join(reasons))
            await self._changed.park()

    # ------------------------------------------------------------------ calls

    async def _unary(
        self, method: str, payload: bytes, metadata: dict[str, str] | None, call: ClientCall | None
    ) -> bytes:
        refused: RefusedError | None = None
        for _ in range(_MAX_REFUSED_RETRIES):
            ready = self._ready
            if len(ready) == 1:
                conn = ready[0]
                await trio.lowlevel.checkpoint_if_cancelled()
            else:
                conn = await self._pick()
            if call is not None:
                call.peer = conn.peer
            try:
                return await conn.unary(method, payload, _timeout_ms(), metadata)
            except RefusedError as exc:
                refused = exc
        assert refused is not None
        raise RpcError(Status.UNAVAILABLE, refused.message)

    async def _open_stream(
        self, method: str, payload: bytes, metadata: dict[str, str] | None, call: ClientCall | None
    ) -> tuple[ClientConnection, int, _Call]:
        refused: RefusedError | None = None
        for _ in range(_MAX_REFUSED_RETRIES):
            conn = await self._pick()
            if call is not None:
                call.peer = conn.peer
            try:
                stream_id, record = await conn.open_stream(method, payload, _timeout_ms(), metadata)
            except RefusedError as exc:
                refused = exc
                continue
            return conn, stream_id, record
        assert refused is not None
        raise RpcError(Status.UNAVAILABLE, refused.message)

    def _unary_method(
        self, info: MethodInfo, metadata: dict[str, str] | None
    ) -> Callable[[Any], Awaitable[Any]]:
        request_type = info.request_type
        decode = info.decode_response
        wire_name = info.wire_name
        interceptors = self._interceptors
        unary = self._unary

        async def call(request: Any) -> Any:
            if type(request) is not request_type and not isinstance(request, request_type):
                raise _bad_request(info, request)
            payload = _encode(request)
            if interceptors:
                details = ClientCall(
                    info.service, info.name, "unary", dict(metadata or {}), request
                )
                box: list[bytes] = []

                async def innermost() -> None:
                    box.append(await unary(wire_name, payload, details.metadata or None, details))

                await _intercepted(interceptors, details, innermost)
                data = box[0]
            else:
                data = await unary(wire_name, payload, metadata, None)
            try:
                return decode(data)
            except msgspec.DecodeError as exc:
                raise RpcError(Status.INTERNAL, f"bad response from {wire_name}: {exc}") from None

        call.__name__ = call.__qualname__ = info.name
        return call

    def _stream_method(
        self, info: MethodInfo, metadata: dict[str, str] | None
    ) -> Callable[[Any], ResponseStream[Any]]:
        request_type = info.request_type

        def call(request: Any) -> ResponseStream[Any]:
            if type(request) is not request_type and not isinstance(request, request_type):
                raise _bad_request(info, request)
            return ResponseStream(self, info, request, metadata)

        call.__name__ = call.__qualname__ = info.name
        return call


@final
class ResponseStream(Generic[T]):
    """The items of a server-stream call: an async iterator, also an async context manager.

    Nothing is sent until the first item is asked for (or ``async with`` is entered); the
    deadline sent is the caller's at that moment. Items are granted to the server as they
    are consumed, so a slow consumer slows the server down instead of filling buffers.

    Closing it early -- ``aclose()``, leaving ``async with``, ``break`` out of ``async for``
    once the stream is garbage (immediate in CPython), or the consumer being cancelled while
    waiting -- sends CANCEL, and the server cancels the handler.

    Raises (from ``__anext__``):
        RpcError: The server's status, ``UNAVAILABLE`` if the connection failed, or
            ``CANCELLED`` when used after being closed.
    """

    __slots__ = (
        "__weakref__",
        "_call",
        "_channel",
        "_conn",
        "_done",
        "_info",
        "_metadata",
        "_request",
        "_stream_id",
    )

    def __init__(
        self,
        channel: Channel,
        info: MethodInfo,
        request: object,
        metadata: dict[str, str] | None,
    ) -> None:
        self._channel = channel
        self._info = info
        self._request = request
        self._metadata = metadata
        self._conn: ClientConnection | None = None
        self._call: _Call | None = None
        self._stream_id = 0
        self._done = False

    def __repr__(self) -> str:
        return f"<rpc.ResponseStream {self._info.wire_name}>"

    async def _start(self) -> None:
        channel = self._channel
        info = self._info
        payload = _encode(self._request)
        await trio.lowlevel.checkpoint_if_cancelled()
        if channel._interceptors:
            details = ClientCall(
                info.service,
                info.name,
                "server_stream",
                dict(self._metadata or {}),
                self._request,
            )

            async def innermost() -> None:
                opened = await channel._open_stream(
                    info.wire_name, payload, details.metadata or None, details
                )
                self._conn, self._stream_id, self._call = opened

            await _intercepted(channel._interceptors, details, innermost)
        else:
            opened = await channel._open_stream(info.wire_name, payload, self._metadata, None)
            self._conn, self._stream_id, self._call = opened
        if self._done:  # closed while the interceptors were running
            self._cancel()

    def __aiter__(self) -> ResponseStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            if self._call is not None and self._call.frame is not None and not self._call.items:
                raise StopAsyncIteration
            raise RpcError(Status.CANCELLED, "the stream was closed")
        if self._call is None:
            try:
                await self._start()
            except BaseException:
                self._done = True
                raise
        conn, call = self._conn, self._call
        assert conn is not None
        assert call is not None
        if call.cancelled:
            self._done = True
            raise RpcError(Status.CANCELLED, "the stream was cancelled")
        try:
            payload = await conn.next_item(self._stream_id, call)
        except BaseException:
            self._done = True
            self._cancel()
            raise
        if payload is None:
            self._done = True
            raise StopAsyncIteration
        try:
            return cast(T, self._info.decode_response(payload))
        except msgspec.DecodeError as exc:
            self._done = True
            self._cancel()
            raise RpcError(
                Status.INTERNAL, f"bad stream item from {self._info.wire_name}: {exc}"
            ) from None

    def _cancel(self) -> None:
        self._done = True
        if self._conn is not None and self._call is not None and self._call.frame is None:
            self._conn.cancel_stream(self._stream_id, self._call)

    async def aclose(self) -> None:
        """Stop the stream: CANCEL it if the server has not ended it. A checkpoint."""
        self._cancel()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> ResponseStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Reached after `break` out of `async for`: tell the server to stop.
        if not self._done:
            with suppress(Exception):  # never raise from a finalizer
                self._cancel()


@final
class _Stub:
    """The runtime object behind :meth:`Channel.stub`; one attribute per method."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __repr__(self) -> str:
        return f"<rpc stub for {self._service!r}>"


async def _intercepted(
    interceptors: tuple[ClientInterceptor, ...],
    call: ClientCall,
    innermost: Callable[[], Awaitable[None]],
) -> None:
    chain = innermost
    for interceptor in reversed(interceptors):
        chain = _bind(interceptor, call, chain)
    await chain()


def _bind(
    interceptor: ClientInterceptor, call: ClientCall, proceed: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    def run() -> Awaitable[None]:
        return interceptor.intercept(call, proceed)

    return run


def _bad_request(info: MethodInfo, request: object) -> TypeError:
    return TypeError(
        f"{info.wire_name} takes a {info.request_type.__name__} request, got {request!r}"
    )


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of str to str, got {metadata!r}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
    return dict(metadata) or None


def _endpoints(target: str | Endpoint | Sequence[str | Endpoint]) -> list[Endpoint]:
    items = [target] if isinstance(target, str | Endpoint) else target
    if not isinstance(items, Sequence) or not items:
        raise ValueError(f"target must be an address or a non-empty list of them, got {target!r}")
    return [item if isinstance(item, Endpoint) else Endpoint.parse(item) for item in items]


@asynccontextmanager
async def open_channel(
    target: str | Endpoint | Sequence[str | Endpoint],
    *,
    pool_size: int = 1,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    interceptors: Sequence[ClientInterceptor] = (),
    balancer: Balancer | None = None,
    handshake_timeout: float = 20.0,
    keepalive_interval: float = math.inf,
    keepalive_timeout: float = 20.0,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    initial_stream_credit: int = 64,
) -> AsyncIterator[Channel]:
    """Open a channel to a server (or several replicas of one) for the body of ``async with``.

    ::

        async with rpc.open_channel("127.0.0.1:50051") as channel:
            users = channel.stub(UserService)
            user = await users.get_user(GetUserRequest(user_id=1))

    Connections are opened in the background (the ``async with`` does not wait for them);
    the first calls wait while they connect, and fail with ``UNAVAILABLE`` if every
    connection attempt failed. Leaving the block closes the connections; calls still
    pending in other tasks fail with ``RpcError(CANCELLED)``. No task outlives the block.

    Args:
        target: ``"host:port"``, an :class:`Endpoint`, or a list of them (calls are
            balanced over all).
        pool_size: Connections per address. One multiplexed connection carries any number
            of concurrent calls, and in a single-threaded trio program it batches best;
            more help when one connection's socket is the bottleneck.
        ssl_context: Use TLS with this client-side context.
        server_hostname: The name to verify the certificate against (default: the host).
        interceptors: :class:`ClientInterceptor` objects wrapped around every call, the
            first outermost.
        balancer: Chooses the connection per call; default :class:`RoundRobin`.
        handshake_timeout: Seconds to connect, TLS-handshake and exchange HELLOs.
        keepalive_interval: Seconds without receiving anything after which the client PINGs
            the server (default ``math.inf``: off). Keep it above the server's
            ``min_ping_interval``.
        keepalive_timeout: Seconds to wait for an answer to a PING before dropping the
            connection (its calls fail with ``UNAVAILABLE``).
        max_frame_size: Largest frame this side accepts (bytes).
        initial_stream_credit: Items a server-stream may send ahead of the consumer.

    Raises:
        TypeError / ValueError: A bad argument.
        BaseExceptionGroup: Wraps what the body raised (a nursery runs inside).
    """
    endpoints = _endpoints(target)
    check_int("pool_size", pool_size, minimum=1)
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, got {ssl_context!r}")
    if not isinstance(interceptors, Sequence) or not all(
        isinstance(i, ClientInterceptor) for i in interceptors
    ):
        raise TypeError(
            f"interceptors must be a sequence of rpc.ClientInterceptor, got {interceptors!r}"
        )
    if balancer is not None and not isinstance(balancer, Balancer):
        raise TypeError(f"balancer must be an rpc.Balancer, got {balancer!r}")
    settings = Settings(
        max_frame_size=check_int("max_frame_size", max_frame_size),
        initial_stream_credit=check_int("initial_stream_credit", initial_stream_credit, minimum=1),
    )
    options = _Options(
        settings,
        ssl_context,
        server_hostname,
        check_seconds("handshake_timeout", handshake_timeout, finite=True),
        check_seconds("keepalive_interval", keepalive_interval),
        check_seconds("keepalive_timeout", keepalive_timeout, finite=True),
    )
    channel = Channel(endpoints, pool_size, options, tuple(interceptors), balancer or RoundRobin())
    async with trio.open_nursery() as nursery:
        channel._start(nursery)
        try:
            yield channel
        finally:
            channel._close()
            nursery.cancel_scope.cancel()
