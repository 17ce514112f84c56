"""The client's front end: typed stubs, untyped calls by name, response streams.

A stub (:func:`make_stub`, behind :meth:`~trio_micro.rpc.Channel.stub`) has one callable
per method of the service. A unary method checks the request's type, encodes it, runs the
channel's client interceptors (:func:`~._interceptors.run_intercepted`) around
:meth:`~._calls.Caller.unary` and decodes the answer. A server-stream method returns a
:class:`ResponseStream`, which does the same when it is first iterated and then decodes
the items as they come. Untyped calls by name (``Channel.call`` / ``call_stream``) use the
same callables with a :class:`~trio_micro.rpc.MethodInfo` whose types are ``object``
(:meth:`MethodInfo.untyped <trio_micro.rpc.MethodInfo.untyped>`). Picking connections and
retrying is :mod:`._calls`'.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any, Final, Generic, TypeVar, cast, final

import msgspec
import trio

from trio_micro._validate import ENCODE_ERRORS, cannot_encode, check_str_mapping
from trio_micro.protocol import DECODE_ERRORS, Status

from ._calls import Caller
from ._client import ClientConnection, _Call
from ._client_streams import streaming_method
from ._context import ClientCall
from ._errors import RpcError
from ._interceptors import run_intercepted
from ._service import MethodInfo, Service

__all__ = ["ResponseStream"]

S = TypeVar("S", bound=Service)
T = TypeVar("T")

_encode: Final = msgspec.msgpack.Encoder().encode


def make_stub(caller: Caller, service: type[S], metadata: dict[str, str] | None) -> S:
    """A stub of ``service`` making its calls through ``caller`` (see ``Channel.stub``)."""
    proxy = _Stub(service.__rpc_name__)
    for attr, info in service.__rpc_methods__.items():
        if info.kind == "unary":
            method: Any = unary_method(caller, info, metadata)
        elif info.kind == "server_stream":
            method = stream_method(caller, info, metadata)
        else:
            method = streaming_method(caller, info, metadata)
        setattr(proxy, attr, method)
    return cast(S, proxy)


def unary_method(
    caller: Caller, info: MethodInfo, metadata: dict[str, str] | None
) -> Callable[[Any], Awaitable[Any]]:
    """The callable making unary calls of ``info`` (``TypeError`` for a wrong request)."""
    request_type = info.request_type
    decode = info.decode_response
    wire_name = info.wire_name
    interceptors = caller.interceptors
    unary = caller.unary
    idempotent = info.idempotent

    async def call(request: Any) -> Any:
        if type(request) is not request_type and not isinstance(request, request_type):
            raise _bad_request(info, request)
        try:
            payload = _encode(request)
        except ENCODE_ERRORS as exc:
            raise cannot_encode(f"request of {wire_name}", request, exc) from None
        if interceptors:
            details = ClientCall(info.service, info.name, "unary", dict(metadata or {}), request)
            box: list[bytes] = []

            async def innermost() -> None:
                box.append(
                    await unary(wire_name, payload, details.metadata or None, details, idempotent)
                )

            await run_intercepted(interceptors, details, innermost)
            data = box[0]
        else:
            data = await unary(wire_name, payload, metadata, None, idempotent)
        try:
            return decode(data)
        except DECODE_ERRORS as exc:
            raise RpcError(Status.INTERNAL, f"bad response from {wire_name}: {exc}") from None

    call.__name__ = call.__qualname__ = info.name
    call.__rpc_method__ = info  # type: ignore[attr-defined]  # for rpc.hedged's check
    return call


def stream_method(
    caller: Caller, info: MethodInfo, metadata: dict[str, str] | None
) -> Callable[[Any], ResponseStream[Any]]:
    """The callable opening server-stream calls of ``info`` (nothing is sent yet)."""
    request_type = info.request_type

    def call(request: Any) -> ResponseStream[Any]:
        if type(request) is not request_type and not isinstance(request, request_type):
            raise _bad_request(info, request)
        return ResponseStream(caller, info, request, metadata)

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

    What ``__anext__`` raises:


    Raises:
        RpcError: The server's status, ``UNAVAILABLE`` if the connection failed, or
            ``CANCELLED`` when used after being closed.
    """

    __slots__ = (
        "__weakref__",
        "_call",
        "_caller",
        "_conn",
        "_done",
        "_info",
        "_metadata",
        "_request",
        "_stream_id",
    )

    def __init__(
        self,
        caller: Caller,
        info: MethodInfo,
        request: object,
        metadata: dict[str, str] | None,
    ) -> None:
        self._caller = caller
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
        caller = self._caller
        info = self._info
        try:
            payload = _encode(self._request)
        except ENCODE_ERRORS as exc:
            raise cannot_encode(f"request of {info.wire_name}", self._request, exc) from None
        await trio.lowlevel.checkpoint_if_cancelled()
        if caller.interceptors:
            details = ClientCall(
                info.service,
                info.name,
                "server_stream",
                dict(self._metadata or {}),
                self._request,
            )

            async def innermost() -> None:
                opened = await caller.open_stream(
                    info.wire_name, payload, details.metadata or None, details
                )
                self._conn, self._stream_id, self._call = opened

            await run_intercepted(caller.interceptors, details, innermost)
        else:
            opened = await caller.open_stream(info.wire_name, payload, self._metadata, None)
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
        except DECODE_ERRORS as exc:
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
    """The runtime object behind ``Channel.stub``; one attribute per method."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __repr__(self) -> str:
        return f"<rpc stub for {self._service!r}>"


def _bad_request(info: MethodInfo, request: object) -> TypeError:
    return TypeError(
        f"{info.wire_name} takes a {info.request_type.__name__} request, got {request!r}"
    )


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    """A copy of call metadata (``None`` if empty); ``TypeError`` unless str to str."""
    return check_str_mapping("metadata", metadata) or None
