"""Values msgpack can't encode (an int over 64 bits, a str with a lone surrogate, an
unsupported type) on either side of a real loopback connection: the call that holds one
fails alone -- with INTERNAL when a handler answers it, with TypeError before anything is
sent when the caller does -- and the connection's other calls go on."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro._validate import cannot_encode

from .conftest import RecordOutcomes

BAD_VALUES = [2**64, -(2**63) - 1, "lone \ud800 surrogate", object()]


class Value(msgspec.Struct):
    value: Any = 0


class Unencodable(rpc.Service, name="test.Unencodable"):
    """Answers with whatever value it is told to, by index into ``BAD_VALUES`` (-1: 7)."""

    def __init__(self) -> None:
        self.send_error: list[BaseException] = []

    @rpc.unary
    async def answer(self, req: Value) -> Value:
        return Value(_chosen(req))

    @rpc.unary
    async def refuse(self, req: Value) -> Value:
        # A message built from a file name decoded with os.fsdecode (surrogateescape).
        raise rpc.RpcError(rpc.Status.NOT_FOUND, "no file b\udcff", {"path\udcff": "\udcff"})

    @rpc.server_stream
    async def items(self, req: Value) -> AsyncIterator[Value]:
        yield Value(1)
        yield Value(_chosen(req))

    @rpc.bidi_stream
    async def chat(
        self, requests: rpc.RequestStream[Value], responses: rpc.ResponseSender[Value]
    ) -> None:
        async for req in requests:
            try:
                await responses.send(Value(_chosen(req)))
            except TypeError as exc:  # the handler may carry on: nothing was sent
                self.send_error.append(exc)
                await responses.send(Value("after"))


def _chosen(req: Value) -> object:
    assert isinstance(req.value, int)
    return 7 if req.value < 0 else BAD_VALUES[req.value]


@pytest.fixture
async def served() -> AsyncIterator[tuple[Unencodable, rpc.Channel, RecordOutcomes]]:
    service, seen = Unencodable(), RecordOutcomes()
    async with (
        rpc.open_server([service], host="127.0.0.1", port=0, interceptors=[seen]) as server,
        rpc.open_channel(f"127.0.0.1:{server.address[1]}") as channel,
    ):
        yield service, channel, seen


Served = tuple[Unencodable, rpc.Channel, RecordOutcomes]


def _connection_events(logs: list[MutableMapping[str, Any]]) -> list[object]:
    """What the captured logs say happened to connections (none: the same one went on)."""
    return [
        log["event"]
        for log in logs
        if log["event"] in ("rpc.connection.crashed", "rpc.channel.connected")
        or "connection_lost" in str(log["event"])
    ]


@pytest.mark.parametrize("bad", range(len(BAD_VALUES)))
async def test_a_handler_answer_that_cannot_be_encoded_fails_its_call_alone(
    served: Served, bad: int
) -> None:
    _, channel, _ = served
    stub = channel.stub(Unencodable)
    stream = stub.items(Value(-1))
    first = await stream.__anext__()  # a call in flight on the same connection
    with capture_logs() as logs:
        with pytest.raises(rpc.RpcError) as info:
            await stub.answer(Value(bad))
        assert info.value.code is rpc.Status.INTERNAL
        assert first == Value(1)
        assert await stream.__anext__() == Value(7)
        assert await stub.answer(Value(-1)) == Value(7)
    crashed = [log["what"] for log in logs if log["event"] == "rpc.handler.crashed"]
    assert crashed == ["bad response"]
    assert _connection_events(logs) == []


async def test_an_error_with_a_lone_surrogate_arrives_escaped_and_fails_its_call_alone(
    served: Served,
) -> None:
    _, channel, _ = served
    stub = channel.stub(Unencodable)
    stream = stub.items(Value(-1))
    assert await stream.__anext__() == Value(1)
    with capture_logs() as logs:
        with pytest.raises(rpc.RpcError) as info:
            await stub.refuse(Value(-1))
        assert await stream.__anext__() == Value(7)
    assert info.value.code is rpc.Status.NOT_FOUND
    assert info.value.message == "no file b\\udcff"
    assert info.value.details == {"path\\udcff": "\\udcff"}
    assert _connection_events(logs) == []


async def test_a_stream_item_that_cannot_be_encoded_fails_its_stream_alone(
    served: Served,
) -> None:
    _, channel, _ = served
    stub = channel.stub(Unencodable)
    received = []
    assert await stub.answer(Value(-1)) == Value(7)  # connected before the logs are read
    with capture_logs() as logs:
        stream = stub.items(Value(0))
        received.append(await stream.__anext__())
        with pytest.raises(rpc.RpcError) as info:
            await stream.__anext__()
        assert await stub.answer(Value(-1)) == Value(7)
    assert info.value.code is rpc.Status.INTERNAL
    assert received == [Value(1)]
    crashed = [log["what"] for log in logs if log["event"] == "rpc.handler.crashed"]
    assert crashed == ["bad item"]
    assert _connection_events(logs) == []


async def test_a_bidi_send_that_cannot_be_encoded_raises_type_error_in_the_handler(
    served: Served,
) -> None:
    service, channel, _ = served
    async with channel.stub(Unencodable).chat() as (send, receive):
        await send.send(Value(0))
        assert await receive.receive() == Value("after")
        await send.send(Value(-1))
        assert await receive.receive() == Value(7)
    assert len(service.send_error) == 1
    assert "cannot encode the response" in str(service.send_error[0])


@pytest.mark.parametrize("bad", BAD_VALUES, ids=["big", "small", "surrogate", "object"])
async def test_a_request_that_cannot_be_encoded_is_type_error_before_sending(
    served: Served, bad: object
) -> None:
    _, channel, seen = served
    stub = channel.stub(Unencodable)
    with pytest.raises(TypeError, match=r"cannot encode the request of test\.Unencodable/answer"):
        await stub.answer(Value(bad))
    with pytest.raises(TypeError, match="cannot encode the request"):
        await channel.call("test.Unencodable/answer", {"value": bad})
    with pytest.raises(TypeError, match=r"cannot encode the request of test\.Unencodable/items"):
        await stub.items(Value(bad)).__anext__()
    assert seen.outcomes == []  # nothing was sent
    assert await stub.answer(Value(-1)) == Value(7)


async def test_a_request_item_that_cannot_be_encoded_is_type_error_and_the_call_goes_on(
    served: Served,
) -> None:
    _, channel, _ = served
    async with channel.stub(Unencodable).chat() as (send, receive):
        with pytest.raises(TypeError, match="cannot encode the request item"):
            await send.send(Value(2**64))
        await send.send(Value(-1))
        assert await receive.receive() == Value(7)


def test_the_error_shows_a_bounded_repr_of_the_value() -> None:
    error = cannot_encode("request", {"blob": "x" * 100_000, "n": 2**64}, OverflowError("big"))
    assert isinstance(error, TypeError)
    assert str(error).startswith("cannot encode the request {")
    assert str(error).endswith(": big")
    assert len(str(error)) < 200
