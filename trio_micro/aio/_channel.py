"""The asyncio channel: typed stubs and untyped calls by name over one connection, and
server-streams.

A :class:`Channel` keeps one :class:`~._connection.AioConnection` to one server and opens
a new one when the old one is lost or going away. Its stubs are built from the same
service definitions as :meth:`trio_micro.rpc.Channel.stub` (``rpc.Service`` and its
:class:`~trio_micro.rpc.MethodInfo`, prebuilt msgpack decoders included), so a stub is
typed the same way: mypy sees the service class itself. The untyped calls by name
(:meth:`Channel.call`, :meth:`~Channel.call_stream`, :meth:`~Channel.stream_call`) are the
stubs' own callables and objects made with :meth:`rpc.MethodInfo.untyped
<trio_micro.rpc.MethodInfo.untyped>`, as on the trio channel.

The deadline a call sends is that of the enclosing :func:`~._deadline.timeout` (see
:mod:`._deadline`); client- and bidi-stream calls are in :mod:`._streams`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, Final, Generic, TypeVar, cast, final

import msgspec

from trio_micro._validate import (
    ENCODE_ERRORS,
    cannot_encode,
    check_bool,
    check_encodable,
    check_int,
    check_seconds,
    check_str_mapping,
)
from trio_micro.protocol import (
    DECODE_ERRORS,
    DEFAULT_COMPRESSION_THRESHOLD,
    DEFAULT_MAX_FRAME_SIZE,
    SUPPORTED_COMPRESSION,
    Settings,
    Status,
    check_compression,
    with_compression_hint,
)
from trio_micro.rpc import Endpoint, MethodInfo, RpcError, Service

from ._connection import AioConnection, _Call, connect
from ._deadline import timeout_ms
from ._streams import StreamCall, streaming_method

__all__ = ["Channel", "ResponseStream", "open_channel"]

S = TypeVar("S", bound=Service)
T = TypeVar("T")

_encode: Final = msgspec.msgpack.Encoder().encode


@final
class Channel:
    """Calls to one server from asyncio; made by :func:`open_channel`.

    One connection at a time, opened on first use (and by :func:`open_channel`) and again
    after it is lost; a call never retries, so a call on a lost connection fails with
    ``UNAVAILABLE`` and the next call reconnects.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        settings: Settings,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        connect_timeout: float,
        compression: str | None = None,
        compression_threshold: int = DEFAULT_COMPRESSION_THRESHOLD,
    ) -> None:
        self.endpoint = endpoint
        self._settings = settings
        check_compression(compression)  # "none" stays: it turns the server's default off
        self._compression = compression
        self._compression_threshold = compression_threshold
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._connect_timeout = connect_timeout
        self._conn: AioConnection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<aio.Channel to {self.endpoint}>"

    async def connection(self) -> AioConnection:
        """The connection calls go to, connected if need be (a checkpoint then).

        Raises:
            RpcError: ``CANCELLED`` on a closed channel; ``UNAVAILABLE`` if the server can't
                be reached.
        """
        conn = self._conn
        if conn is not None and conn.unusable is None:
            return conn
        async with self._lock:
            if self._closed:
                raise RpcError(Status.CANCELLED, "the channel is closed")
            conn = self._conn
            if conn is None or conn.unusable is not None:
                endpoint = self.endpoint
                conn = self._conn = await connect(
                    endpoint.host,
                    endpoint.port,
                    peer=str(endpoint),
                    settings=self._settings,
                    ssl_context=self._ssl,
                    server_hostname=self._server_hostname,
                    handshake_timeout=self._connect_timeout,
                    compression_threshold=self._compression_threshold,
                )
            return conn

    def close(self) -> None:
        """Close the channel: pending calls fail with ``UNAVAILABLE``, new ones with
        ``CANCELLED``. Synchronous; idempotent."""
        self._closed = True
        if self._conn is not None:
            self._conn.close()

    def stub(
        self,
        service: type[S],
        *,
        metadata: Mapping[str, str] | None = None,
        compression: str | None = None,
    ) -> S:
        """A typed client of ``service`` (an ``rpc.Service`` subclass), as
        :meth:`trio_micro.rpc.Channel.stub`: ``await stub.method(request)`` for unary
        methods; ``stub.method(request)`` is a :class:`ResponseStream` for server-streams;
        ``async with stub.method() as (send, receive)`` (a :class:`~._streams.StreamCall`)
        for client- and bidi-streams.

        ``compression`` is the encoding of this stub's calls, both ways (``"zlib"``,
        ``"zstd"`` with the extra, ``"none"``); ``None``: the channel's (docs/rpc.md §16).

        Raises:
            TypeError: ``service`` is not a Service subclass, ``metadata`` not a mapping
                of strings, or ``compression`` not a string.
            ValueError: An unknown ``compression``.
        """
        if not (isinstance(service, type) and issubclass(service, Service)):
            raise TypeError(f"stub() takes an rpc.Service subclass, got {service!r}")
        checked = self._metadata(metadata, compression)
        proxy = _Stub(service.__rpc_name__)
        for attr, info in service.__rpc_methods__.items():
            method: Callable[..., object]
            if info.kind == "unary":
                method = self._unary_method(info, checked)
            elif info.kind == "server_stream":
                method = self._stream_method(info, checked)
            else:  # client_stream, bidi_stream
                method = streaming_method(self, info, checked)
            setattr(proxy, attr, method)
        return cast(S, proxy)

    def _metadata(
        self, metadata: Mapping[str, str] | None, compression: str | None
    ) -> dict[str, str] | None:
        """``metadata`` checked, with the compression hint of the choice (the stub's or
        call's, else the channel's) when there is one: the protocol layer compresses by
        it, both ways."""
        checked = check_str_mapping("metadata", metadata) or None
        return with_compression_hint(checked, compression, self._compression)

    async def call(
        self,
        method: str,
        request: Any,
        *,
        idempotent: bool = False,
        metadata: Mapping[str, str] | None = None,
        compression: str | None = None,
    ) -> Any:
        """Make an untyped unary call by name: ``await channel.call("users/get_user", {...})``.

        :meth:`trio_micro.rpc.Channel.call` for asyncio, for programs that know a method
        only at run time (gateways, scripts): the request is any msgpack-encodable value --
        a dict with the request struct's field names -- and the answer comes back as plain
        dicts, lists and scalars. The server validates the request as for a typed stub (a
        bad field: ``INVALID_ARGUMENT`` naming it). It is a stub's unary call (the same
        code path), so the deadline of the enclosing :func:`~trio_micro.aio.timeout` is
        sent, and a task cancelled while it waits sends CANCEL. Suspends while it waits
        for the answer (and to connect, if need be).

        Args:
            method: ``"<service>/<method>"``, as listed by the reflection service.
            request: The request, e.g. ``{"user_id": 1}``.
            idempotent: Taken for the trio channel's signature; the asyncio channel never
                retries, so it changes nothing.
            metadata: Sent with the call (string pairs).
            compression: This call's encoding, both ways (``"zlib"``, ``"zstd"`` with the
                extra, ``"none"``); ``None``: the channel's.

        Raises:
            RpcError: The server's status (``UNIMPLEMENTED`` for a method it does not
                have), ``RESOURCE_EXHAUSTED`` for a request over the server's frame size,
                ``INTERNAL`` for an answer that does not decode, ``UNAVAILABLE`` /
                ``CANCELLED`` as for stub calls.
            TypeError: ``method`` is not a string, ``request`` cannot be encoded,
                ``idempotent`` is not a bool, bad metadata or ``compression`` type.
            ValueError: ``method`` is not ``"<service>/<method>"``, or an unknown
                ``compression``.
        """
        info = MethodInfo.untyped(method, "unary", idempotent)
        return await self._unary_method(info, self._metadata(metadata, compression))(request)

    def call_stream(
        self,
        method: str,
        request: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        compression: str | None = None,
    ) -> ResponseStream[Any]:
        """Open an untyped server-stream call by name; items come back as plain values.

        :meth:`trio_micro.rpc.Channel.call_stream` for asyncio: the counterpart of
        :meth:`call` for ``@rpc.server_stream`` methods; the result is a
        :class:`ResponseStream` like a stub's (nothing is sent until it is iterated; an
        item that does not decode fails this call alone with ``INTERNAL``). Synchronous.

        Raises:
            TypeError: ``request`` cannot be encoded (checked here, before anything is
                sent), ``method`` is not a string, or bad metadata or ``compression`` type.
            ValueError: ``method`` is not ``"<service>/<method>"``, or an unknown
                ``compression``.
        """
        info = MethodInfo.untyped(method, "server_stream")
        return ResponseStream(
            self, info, check_encodable("request", request), self._metadata(metadata, compression)
        )

    def stream_call(
        self,
        method: str,
        *,
        bidi: bool,
        metadata: Mapping[str, str] | None = None,
        compression: str | None = None,
    ) -> StreamCall[Any, Any]:
        """Open an untyped client-stream (``bidi=False``) or bidi-stream call by name.

        :meth:`trio_micro.rpc.Channel.stream_call` for asyncio: ``async with
        channel.stream_call(...) as (send, receive)``, a stub's :class:`StreamCall`
        sending and receiving plain values (nothing is sent until ``async with``).
        Synchronous.

        Raises:
            TypeError: ``bidi`` is not a bool, ``method`` is not a string, or bad metadata
                or ``compression`` type (an item that can't be encoded: from ``send``).
            ValueError: ``method`` is not ``"<service>/<method>"``, or an unknown
                ``compression``.
        """
        info = MethodInfo.untyped(
            method, "bidi_stream" if check_bool("bidi", bidi) else "client_stream"
        )
        return StreamCall(self, info, self._metadata(metadata, compression))

    def _unary_method(
        self, info: MethodInfo, metadata: dict[str, str] | None
    ) -> Callable[[Any], Awaitable[Any]]:
        request_type = info.request_type
        decode = info.decode_response
        wire_name = info.wire_name

        async def call(request: Any) -> Any:
            if type(request) is not request_type and not isinstance(request, request_type):
                raise _bad_request(info, request)
            try:
                payload = _encode(request)
            except ENCODE_ERRORS as exc:
                raise cannot_encode(f"request of {wire_name}", request, exc) from None
            conn = self._conn
            if conn is None or conn.unusable is not None:
                conn = await self.connection()
            data = await conn.unary(wire_name, payload, timeout_ms(conn.loop), metadata)
            try:
                return decode(data)
            except DECODE_ERRORS as exc:
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

    Nothing is sent until the first item is asked for; the deadline sent is the one in
    force then. Items are granted to the server as they are consumed, so a slow consumer
    slows the server down instead of filling buffers.

    Closing it early -- ``aclose()``, leaving ``async with``, the consumer being cancelled
    while it waits, or ``break`` once the stream is garbage -- sends CANCEL, and the server
    cancels the handler.

    What ``__anext__`` raises:


    Raises:
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
        "_meta",
        "_req",
        "_sid",
    )

    def __init__(
        self, channel: Channel, info: MethodInfo, request: object, metadata: dict[str, str] | None
    ) -> None:
        self._channel = channel
        self._info = info
        self._req = request
        self._meta = metadata
        self._conn: AioConnection | None = None
        self._call: _Call | None = None
        self._sid = 0
        self._done = False

    def __repr__(self) -> str:
        return f"<aio.ResponseStream {self._info.wire_name}>"

    def __aiter__(self) -> ResponseStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            if self._call is not None and self._call.frame is not None and not self._call.items:
                raise StopAsyncIteration
            raise RpcError(Status.CANCELLED, "the stream was closed")
        if self._call is None:
            try:
                request = _encode(self._req)
            except ENCODE_ERRORS as exc:
                self._done = True
                raise cannot_encode(f"request of {self._info.wire_name}", self._req, exc) from None
            try:
                opened = await self._channel.connection()
                self._sid, self._call = await opened.open_stream(
                    self._info.wire_name, request, timeout_ms(opened.loop), self._meta
                )
                self._conn = opened
            except BaseException:
                self._done = True
                raise
        conn, call = self._conn, self._call
        assert conn is not None
        try:
            payload = await conn.next_item(self._sid, call)
        except BaseException:
            self._cancel()
            raise
        if payload is None:
            self._done = True
            raise StopAsyncIteration
        try:
            return cast(T, self._info.decode_response(payload))
        except DECODE_ERRORS as exc:
            self._cancel()
            raise RpcError(
                Status.INTERNAL, f"bad stream item from {self._info.wire_name}: {exc}"
            ) from None

    def _cancel(self) -> None:
        self._done = True
        if self._conn is not None and self._call is not None and self._call.frame is None:
            self._conn.cancel_stream(self._sid, self._call)

    async def aclose(self) -> None:
        """Stop the stream: CANCEL it if the server has not ended it. Not a checkpoint."""
        self._cancel()

    async def __aenter__(self) -> ResponseStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._cancel()

    def __del__(self) -> None:
        if not self._done:
            with suppress(Exception):  # never raise from a finalizer
                self._cancel()


@final
class _Stub:
    """The runtime object behind :meth:`Channel.stub`; one attribute per method."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __repr__(self) -> str:
        return f"<aio stub for {self._service!r}>"


def _bad_request(info: MethodInfo, request: object) -> TypeError:
    return TypeError(
        f"{info.wire_name} takes a {info.request_type.__name__} request, got {request!r}"
    )


@asynccontextmanager
async def open_channel(
    target: str,
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    initial_stream_credit: int = 64,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    connect_timeout: float = 10.0,
    compression: str | None = None,
    compression_threshold: int = DEFAULT_COMPRESSION_THRESHOLD,
) -> AsyncIterator[Channel]:
    """Open a :class:`Channel` to the server at ``target`` (``"host:port"``) from asyncio.

    Connects (and does the handshake) before the body runs, so a server that is not there
    fails here; leaving the block closes the connection, failing calls still pending with
    ``UNAVAILABLE``.

    Args:
        target: ``"host:port"`` or ``"[ipv6]:port"`` (:meth:`trio_micro.rpc.Endpoint.parse`).
        max_frame_size: Largest frame accepted from the server (HELLO setting).
        initial_stream_credit: Items a server-stream may send ahead of the consumer.
        ssl_context: Connect with TLS (``ssl.create_default_context()`` checks the
            server's certificate against ``server_hostname``, the target's host by default).
        connect_timeout: Seconds for the TCP connect, TLS and HELLO exchange together.
        compression: The encoding of every call's payloads, both ways (``"zlib"``;
            ``"zstd"`` with the ``zstd`` extra; ``"none"``), unless a stub says otherwise;
            ``None`` (the default): none from this side, and the server's own default for
            its answers. Used only with servers that accept it, and only for payloads of
            at least ``compression_threshold`` bytes. The channel always accepts every
            encoding it supports; docs/rpc.md §16.
        compression_threshold: Requests and stream items shorter than this many bytes are
            sent uncompressed, whatever the encoding (default 1 KiB,
            ``protocol.DEFAULT_COMPRESSION_THRESHOLD``; 0: compress every payload that gets
            smaller). The server's answers follow the server's own threshold.

    Raises:
        TypeError / ValueError: A bad ``target`` or option.
        RpcError: ``UNAVAILABLE``: the server can't be reached.
    """
    endpoint = Endpoint.parse(target)
    settings = Settings(
        max_frame_size=max_frame_size,
        initial_stream_credit=initial_stream_credit,
        compression=SUPPORTED_COMPRESSION,
    )
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r}")
    channel = Channel(
        endpoint,
        settings=settings,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        connect_timeout=check_seconds("connect_timeout", connect_timeout, finite=True),
        compression=compression,
        compression_threshold=check_int("compression_threshold", compression_threshold, minimum=0),
    )
    try:
        await channel.connection()
        yield channel
    finally:
        channel.close()
