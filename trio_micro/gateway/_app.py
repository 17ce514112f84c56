"""The ASGI application: Connect requests in, untyped RPC calls out.

Theory of operation
-------------------
One HTTP request is one call on an :class:`rpc.Channel <trio_micro.rpc.Channel>` by name
(``channel.call`` / ``channel.call_stream``, the untyped calls made for gateways), so the
server's handlers, interceptors, access log and metrics see a gateway call as any other
call. The request's path names the method (``/<service>/<method>``); the route table
(wire name -> ``"unary"`` / ``"server_stream"``) says which shape it has and comes from the
services themselves or from the server's reflection.

The body is read up to ``max_body_size`` (the RPC max frame size by default) and never
further: a longer body is refused with ``resource_exhausted`` before the rest arrives.
JSON is decoded into plain values and sent as the request; the server validates it
against the request type, so a wrong field is the server's ``invalid_argument`` naming it.

Deadlines: ``Connect-Timeout-Ms`` becomes a trio cancel scope around the call, so the
channel sends it on (minus the time already spent), and the handler runs under it.
Tracing: a valid ``traceparent`` header becomes the call's ``traceparent`` metadata, which
the server's span continues. Disconnects: once the body is read, a task waits for ASGI's
``http.disconnect``; when the client goes away first, it cancels the call, which sends
CANCEL, and the handler is cancelled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, final

import msgspec
import trio

from trio_micro import rpc
from trio_micro.observe import parse_traceparent
from trio_micro.protocol import DECODE_ERRORS, Status

from ._connect import (
    end_stream,
    envelope,
    error_body,
    http_status,
    parse_timeout_ms,
    single_envelope,
)

__all__: list[str] = []

Routes = Callable[[str], Awaitable[str | None]]

_JSON: Final = b"application/json"
_CONNECT_JSON: Final = b"application/connect+json"
_json_encode: Final = msgspec.json.Encoder().encode
_json_decode: Final = msgspec.json.decode
_TIMED_OUT: Final = "the deadline of Connect-Timeout-Ms passed"


class _DisconnectedError(Exception):
    """The client went away before the request was read: there is nobody to answer."""


class _RefusedError(Exception):
    """A request refused before any call: HTTP status, Connect code, message."""

    def __init__(self, status: int, code: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _header(scope: Mapping[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _media_type(value: bytes | None) -> bytes:
    return (value or b"").split(b";", 1)[0].strip().lower()


@final
class ConnectApp:
    """The ASGI 3 application of :func:`~trio_micro.gateway.serve_gateway`.

    Args:
        channel: Where calls go.
        routes: Async function: wire name -> ``"unary"`` / ``"server_stream"``, or None
            for a method that does not exist.
        max_body_size: The largest request body accepted, bytes.
    """

    def __init__(self, channel: rpc.Channel, routes: Routes, max_body_size: int) -> None:
        self._channel = channel
        self._routes = routes
        self._max_body = max_body_size

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            method, kind = await self._route(scope)
            body = await self._read_body(scope, receive)
            request = self._decode(scope, kind, body)
            metadata = self._metadata(scope)
            timeout = _header(scope, b"connect-timeout-ms")
            try:
                seconds = None if timeout is None else parse_timeout_ms(timeout.decode()) / 1000
            except (ValueError, UnicodeDecodeError) as exc:
                raise _RefusedError(400, Status.INVALID_ARGUMENT, str(exc)) from None
        except _RefusedError as exc:
            await _send_error(send, exc.status, exc.code, exc.message)
            return
        except _DisconnectedError:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            if kind == "unary":
                await self._unary(send, method, request, metadata, seconds)
            else:
                await self._stream(send, method, request, metadata, seconds)
            nursery.cancel_scope.cancel()

    async def _route(self, scope: Any) -> tuple[str, str]:
        path: str = scope["path"]
        method = path[1:] if path.startswith("/") else path
        service, slash, name = method.rpartition("/")
        kind = await self._routes(method) if slash and service and name else None
        if kind is None:
            raise _RefusedError(404, Status.NOT_FOUND, f"no method {path!r} here")
        if scope["method"] != "POST":
            raise _RefusedError(405, Status.UNIMPLEMENTED, f"{scope['method']} is not POST")
        return method, kind

    async def _read_body(self, scope: Any, receive: Any) -> bytes:
        limit = self._max_body
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _RefusedError(429, Status.RESOURCE_EXHAUSTED, f"the body is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _DisconnectedError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _RefusedError(
                    429, Status.RESOURCE_EXHAUSTED, f"the body is over {limit} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _decode(self, scope: Any, kind: str, body: bytes) -> object:
        media = _media_type(_header(scope, b"content-type"))
        expected = _JSON if kind == "unary" else _CONNECT_JSON
        if media != expected:
            raise _RefusedError(
                415,
                Status.INVALID_ARGUMENT,
                f"this {kind} method takes Content-Type {expected.decode()}, got "
                f"{media.decode('latin-1') or 'none'!r}",
            )
        if kind != "unary":
            try:
                body = single_envelope(body)
            except ValueError as exc:
                raise _RefusedError(400, Status.INVALID_ARGUMENT, str(exc)) from None
        try:
            request = _json_decode(body) if body.strip() else {}
        except DECODE_ERRORS as exc:
            raise _RefusedError(
                400, Status.INVALID_ARGUMENT, f"the body is not JSON: {exc}"
            ) from None
        if not isinstance(request, dict):
            raise _RefusedError(
                400, Status.INVALID_ARGUMENT, f"the request must be a JSON object, got {body!r:.80}"
            )
        return request

    @staticmethod
    def _metadata(scope: Any) -> dict[str, str] | None:
        value = _header(scope, b"traceparent")
        if value is None:
            return None
        try:
            text = value.decode("ascii")
            parse_traceparent(text)
        except ValueError:  # UnicodeDecodeError too: per W3C, start a new trace
            return None
        return {"traceparent": text.strip()}

    async def _unary(
        self,
        send: Any,
        method: str,
        request: object,
        metadata: dict[str, str] | None,
        seconds: float | None,
    ) -> None:
        response: object = None
        try:
            with trio.CancelScope(deadline=_deadline(seconds)) as deadline:
                response = await self._channel.call(method, request, metadata=metadata)
            if deadline.cancelled_caught:
                raise rpc.RpcError(Status.DEADLINE_EXCEEDED, _TIMED_OUT)
            body = _json_encode(response)
        except rpc.RpcError as exc:
            await _send_error(send, http_status(exc.code), exc.code, exc.message, exc.details)
            return
        except (TypeError, ValueError, OverflowError) as exc:
            await _send_error(send, 500, Status.INTERNAL, f"can't encode the response: {exc}")
            return
        await _send_json(send, 200, body)

    async def _stream(
        self,
        send: Any,
        method: str,
        request: object,
        metadata: dict[str, str] | None,
        seconds: float | None,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", _CONNECT_JSON)],
            }
        )
        error: tuple[Status, str, Mapping[str, str]] | None = None
        try:
            with trio.CancelScope(deadline=_deadline(seconds)) as deadline:
                async with self._channel.call_stream(method, request, metadata=metadata) as items:
                    async for item in items:
                        chunk = envelope(0, _json_encode(item))
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if deadline.cancelled_caught:
                error = (Status.DEADLINE_EXCEEDED, _TIMED_OUT, {})
        except rpc.RpcError as exc:
            error = (exc.code, exc.message, exc.details)
        except (TypeError, ValueError, OverflowError) as exc:
            error = (Status.INTERNAL, f"can't encode an item: {exc}", {})
        await send({"type": "http.response.body", "body": end_stream(error), "more_body": False})


def _deadline(seconds: float | None) -> float:
    return trio.current_time() + seconds if seconds is not None else float("inf")


async def _cancel_on_disconnect(receive: Any, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the client goes away (ASGI's ``http.disconnect``)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _send_error(
    send: Any,
    status: int,
    code: Status,
    message: str,
    details: Mapping[str, str] | None = None,
) -> None:
    await _send_json(send, status, error_body(code, message, details))


async def _send_json(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", _JSON), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
