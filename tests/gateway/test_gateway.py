"""The Connect gateway against a real trio_micro server, over real sockets (127.0.0.1,
port 0), with httpx as the HTTP client. The cases follow the Connect protocol reference
(docs/interop.md lists the sections): unary JSON, server-streaming enveloped JSON, the
error JSON and its HTTP statuses, Connect-Timeout-Ms, and the bad input around them."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import msgspec
import pytest
import trio

from trio_micro import gateway, observe, rpc

from ..nested import NESTED_JSON


class Ask(msgspec.Struct):
    value: int = 0
    code: int = 0


class Answer(msgspec.Struct):
    value: int
    trace_id: str = ""
    deadline_ms: float = -1.0


class Seen:
    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()


class Svc(rpc.Service, name="gw.Test"):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    @rpc.unary
    async def echo(self, req: Ask) -> Answer:
        span = observe.current_span()
        call = rpc.current_call()
        left = -1.0 if call.deadline == math.inf else (call.deadline - trio.current_time()) * 1e3
        if req.code:
            raise rpc.RpcError(rpc.Status(req.code), f"code {req.code}", {"why": "asked"})
        return Answer(req.value, span.trace_id if span else "", left)

    @rpc.unary
    async def slow(self, req: Ask) -> Answer:
        self.seen.started.set()
        try:
            await trio.sleep_forever()
        finally:
            self.seen.cancelled.set()
        raise AssertionError("unreachable")  # pragma: no cover

    @rpc.server_stream
    async def count(self, req: Ask) -> AsyncIterator[Answer]:
        self.seen.started.set()
        try:
            for i in range(abs(req.value)):
                yield Answer(i)
            if req.code:
                raise rpc.RpcError(rpc.Status(req.code), "stopped")
            if req.value < 0:
                await trio.sleep_forever()
        finally:
            self.seen.cancelled.set()


@asynccontextmanager
async def gateway_for(seen: Seen, **options: object) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        rpc.open_server([Svc(seen)], host="127.0.0.1", port=0) as server,
        rpc.open_channel(f"127.0.0.1:{server.address[1]}") as channel,
        trio.open_nursery() as nursery,
    ):
        host, port = await nursery.start(
            functools.partial(gateway.serve_gateway, channel, **options)  # type: ignore[arg-type]
        )
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client:
            yield client
        nursery.cancel_scope.cancel()


JSON = {"content-type": "application/json"}
STREAM = {"content-type": "application/connect+json"}


def envelope(message: bytes, flags: int = 0) -> bytes:
    return bytes([flags]) + len(message).to_bytes(4, "big") + message


def envelopes(body: bytes) -> list[tuple[int, object]]:
    out = []
    while body:
        flags, length = body[0], int.from_bytes(body[1:5], "big")
        out.append((flags, json.loads(body[5 : 5 + length])))
        body = body[5 + length :]
    return out


async def test_unary_json_post_returns_the_response() -> None:
    async with gateway_for(Seen(), routes=gateway.routes_of([Svc])) as client:
        reply = await client.post("/gw.Test/echo", content=b'{"value": 7}', headers=JSON)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["value"] == 7


async def test_routes_come_from_reflection_by_default() -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/echo", json={"value": 3})
    assert (reply.status_code, reply.json()["value"]) == (200, 3)


async def test_a_charset_parameter_in_the_content_type_is_accepted() -> None:
    async with gateway_for(Seen()) as client:
        headers = {"content-type": "application/json; charset=utf-8"}
        reply = await client.post("/gw.Test/echo", content=b'{"value": 1}', headers=headers)
    assert reply.status_code == 200


async def test_an_empty_body_is_the_default_request() -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/echo", content=b"", headers=JSON)
    assert reply.json()["value"] == 0


# The spec's "Error Codes" table: every code, raised by a handler, gets its HTTP status.
SPEC_HTTP_STATUS = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}


@pytest.mark.parametrize("status", [s for s in rpc.Status if s is not rpc.Status.OK])
async def test_a_handler_error_is_connect_error_json_with_the_specs_http_status(
    status: rpc.Status,
) -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/echo", json={"code": int(status)})
    body = reply.json()
    assert reply.headers["content-type"] == "application/json"
    assert body["code"] == status.name.lower().replace("cancelled", "canceled")
    assert reply.status_code == SPEC_HTTP_STATUS[body["code"]]
    assert body["message"] == f"code {int(status)}"
    (detail,) = body["details"]
    assert (detail["type"], detail["debug"]) == ("trio_micro.rpc.ErrorDetails", {"why": "asked"})


async def test_an_unknown_route_is_404_with_connect_error_json() -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/nope", json={})
    assert reply.status_code == 404
    assert reply.json()["code"] == "not_found"


async def test_a_get_is_405() -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.get("/gw.Test/echo")
    assert (reply.status_code, reply.json()["code"]) == (405, "unimplemented")


async def test_a_body_that_is_not_json_is_invalid_argument() -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/echo", content=b"{nope", headers=JSON)
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_argument")


async def test_a_body_nested_too_deeply_is_invalid_argument_and_the_gateway_lives() -> None:
    body = ('{"value": 1, "x": ' + NESTED_JSON + "}").encode()
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/echo", content=body, headers=JSON)
        again = await client.post("/gw.Test/echo", json={"value": 2})
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_argument")
    assert "recursion" in reply.json()["message"]
    assert (again.status_code, again.json()["value"]) == (200, 2)


async def test_json_that_is_not_an_object_is_invalid_argument() -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/echo", content=b"[1, 2]", headers=JSON)
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_argument")


async def test_a_field_of_the_wrong_type_is_the_servers_invalid_argument() -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/echo", json={"value": "seven"})
    body = reply.json()
    assert (reply.status_code, body["code"]) == (400, "invalid_argument")
    assert body["details"][0]["debug"] == {"field": "$.value"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/proto", ""])
async def test_a_wrong_content_type_is_415(content_type: str) -> None:
    async with gateway_for(Seen()) as client:
        headers = {"content-type": content_type} if content_type else {}
        reply = await client.post("/gw.Test/echo", content=b"{}", headers=headers)
    assert reply.status_code == 415
    assert reply.json()["code"] == "invalid_argument"


async def test_a_body_over_the_limit_is_refused() -> None:
    async with gateway_for(Seen(), max_body_size=1024) as client:
        reply = await client.post("/gw.Test/echo", content=b" " * 2000 + b"{}", headers=JSON)
    assert (reply.status_code, reply.json()["code"]) == (429, "resource_exhausted")


async def test_a_chunked_body_over_the_limit_is_refused() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 500

    async with gateway_for(Seen(), max_body_size=1024) as client:
        reply = await client.post("/gw.Test/echo", content=chunks(), headers=JSON)
    assert (reply.status_code, reply.json()["code"]) == (429, "resource_exhausted")


async def test_connect_timeout_ms_is_sent_as_the_deadline() -> None:
    async with gateway_for(Seen()) as client:
        headers = {**JSON, "connect-timeout-ms": "5000"}
        reply = await client.post("/gw.Test/echo", content=b"{}", headers=headers)
    assert 0 < reply.json()["deadline_ms"] <= 5000


async def test_connect_timeout_ms_cancels_a_slow_handler() -> None:
    seen = Seen()
    async with gateway_for(seen) as client:
        headers = {**JSON, "connect-timeout-ms": "200"}
        reply = await client.post("/gw.Test/slow", content=b"{}", headers=headers)
        with trio.fail_after(10):
            await seen.cancelled.wait()
    assert (reply.status_code, reply.json()["code"]) == (504, "deadline_exceeded")


@pytest.mark.parametrize("value", ["soon", "-1", "12345678901", ""])
async def test_a_bad_connect_timeout_ms_is_invalid_argument(value: str) -> None:
    async with gateway_for(Seen()) as client:
        headers = {**JSON, "connect-timeout-ms": value}
        reply = await client.post("/gw.Test/echo", content=b"{}", headers=headers)
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_argument")


async def test_traceparent_is_continued_by_the_handlers_span() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {**JSON, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/echo", content=b"{}", headers=headers)
    assert reply.json()["trace_id"] == trace_id


async def test_an_invalid_traceparent_starts_a_new_trace() -> None:
    headers = {**JSON, "traceparent": "garbage"}
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/echo", content=b"{}", headers=headers)
    assert reply.status_code == 200
    assert len(reply.json()["trace_id"]) == 32


async def test_server_stream_is_enveloped_json_ending_in_end_stream() -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.post(
            "/gw.Test/count", content=envelope(b'{"value": 3}'), headers=STREAM
        )
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/connect+json"
    assert envelopes(reply.content) == [
        (0, {"value": 0, "trace_id": "", "deadline_ms": -1.0}),
        (0, {"value": 1, "trace_id": "", "deadline_ms": -1.0}),
        (0, {"value": 2, "trace_id": "", "deadline_ms": -1.0}),
        (2, {}),
    ]


async def test_a_server_stream_error_is_in_the_end_stream_message() -> None:
    async with gateway_for(Seen()) as client:
        body = envelope(b'{"value": 1, "code": 10}')
        reply = await client.post("/gw.Test/count", content=body, headers=STREAM)
    assert reply.status_code == 200  # streaming errors travel in the end-stream message
    *items, (flags, end) = envelopes(reply.content)
    assert (len(items), flags) == (1, 2)
    assert end == {"error": {"code": "aborted", "message": "stopped"}}


async def test_connect_timeout_ms_ends_a_server_stream_with_deadline_exceeded() -> None:
    seen = Seen()
    async with gateway_for(seen) as client:
        headers = {**STREAM, "connect-timeout-ms": "200"}
        reply = await client.post(
            "/gw.Test/count", content=envelope(b'{"value": -1}'), headers=headers
        )
    *_, (flags, end) = envelopes(reply.content)
    assert flags == 2
    assert end["error"]["code"] == "deadline_exceeded"  # type: ignore[index]
    assert seen.cancelled.is_set()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\x00",
        envelope(b"{}", flags=1),
        envelope(b"{}") + envelope(b"{}"),
        b"\x00\x00\x00\x00\x09{}",
    ],
    ids=["empty", "short", "compressed", "two-messages", "truncated"],
)
async def test_a_bad_streaming_envelope_is_invalid_argument(body: bytes) -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/count", content=body, headers=STREAM)
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_argument")


async def test_a_server_stream_with_the_unary_content_type_is_415() -> None:
    async with gateway_for(Seen()) as client:
        reply = await client.post("/gw.Test/count", content=b"{}", headers=JSON)
    assert reply.status_code == 415


async def test_a_client_disconnecting_mid_stream_cancels_the_handler() -> None:
    seen = Seen()
    async with gateway_for(seen) as client:
        # A raw socket, so that "the client goes away" is exactly a close after one item.
        url = client.base_url
        body = envelope(b'{"value": -2}')
        head = (
            f"POST /gw.Test/count HTTP/1.1\r\nHost: {url.host}\r\n"
            f"Content-Type: application/connect+json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        stream = await trio.open_tcp_stream(str(url.host), int(url.port or 0))
        with trio.fail_after(10):
            await stream.send_all(head.encode() + body)
            received = b""
            while b'"value":0' not in received:
                received += await stream.receive_some()
        await stream.aclose()
        with trio.fail_after(10):
            await seen.cancelled.wait()
    assert received.startswith(b"HTTP/1.1 200")


async def test_a_client_disconnecting_during_a_unary_call_cancels_the_handler() -> None:
    seen = Seen()
    async with gateway_for(seen) as client:
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                await client.post("/gw.Test/slow", content=b"{}", headers=JSON)

            nursery.start_soon(call)
            with trio.fail_after(10):
                await seen.started.wait()
            nursery.cancel_scope.cancel()  # httpx drops the connection
        with trio.fail_after(10):
            await seen.cancelled.wait()
