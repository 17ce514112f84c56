"""Channel.call / Channel.call_stream: calls by name with plain values, for tools."""

from __future__ import annotations

import pytest
import trio

from trio_micro import observe, rpc

from .services import TestService

GET_USER = "grpc.testing.TestService/get_user"


async def test_call_returns_plain_values(channel: rpc.Channel) -> None:
    assert await channel.call(GET_USER, {"user_id": 7}) == {
        "user_id": 7,
        "name": "user7",
        "source": "test",
    }


async def test_call_bad_field_is_invalid_argument_naming_it(channel: rpc.Channel) -> None:
    with pytest.raises(rpc.RpcError) as info:
        await channel.call(GET_USER, {"user_id": "seven"})
    assert info.value.code is rpc.Status.INVALID_ARGUMENT
    assert info.value.details == {"field": "$.user_id"}


async def test_call_unknown_method_is_unimplemented(channel: rpc.Channel) -> None:
    with pytest.raises(rpc.RpcError) as info:
        await channel.call("grpc.testing.TestService/nope", {})
    assert info.value.code is rpc.Status.UNIMPLEMENTED


async def test_call_status_from_handler(channel: rpc.Channel) -> None:
    request = {"status_code": 5, "status_message": "ñot found"}
    with pytest.raises(rpc.RpcError) as info:
        await channel.call("grpc.testing.TestService/unary_call", request)
    assert info.value.code is rpc.Status.NOT_FOUND
    assert info.value.message == "ñot found"


@pytest.mark.parametrize("method", ["get_user", "/get_user", "svc/", ""])
async def test_call_malformed_method_name(channel: rpc.Channel, method: str) -> None:
    with pytest.raises(ValueError, match="<service>/<method>"):
        await channel.call(method, {})


async def test_call_method_not_a_string(channel: rpc.Channel) -> None:
    with pytest.raises(TypeError, match="method must be a str"):
        await channel.call(42, {})  # type: ignore[arg-type]


async def test_untyped_flags_must_be_bools(channel: rpc.Channel) -> None:
    with pytest.raises(TypeError, match="idempotent"):
        await channel.call(GET_USER, {}, idempotent="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bidi"):
        channel.stream_call(GET_USER, bidi="no")  # type: ignore[arg-type]


def test_untyped_method_info_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        rpc.MethodInfo.untyped(GET_USER, "sideways")  # type: ignore[arg-type]


async def test_call_unencodable_request(channel: rpc.Channel) -> None:
    with pytest.raises(TypeError):
        await channel.call(GET_USER, {"user_id": object()})
    with pytest.raises(TypeError, match="cannot encode"):
        channel.call_stream(GET_USER, {"x": object()})


async def test_call_carries_metadata_and_deadline(channel: rpc.Channel) -> None:
    with trio.fail_after(30), observe.start_span() as span:
        info = await channel.call(
            "grpc.testing.TestService/call_info", {}, metadata={"who": "tool"}
        )
    assert info["metadata"]["who"] == "tool"
    assert observe.parse_traceparent(info["metadata"]["traceparent"]).span_id == span.span_id
    assert info["has_deadline"] is True


async def test_call_stream_yields_plain_items(channel: rpc.Channel) -> None:
    method = "grpc.testing.TestService/streaming_output_call"
    items = [item async for item in channel.call_stream(method, {"count": 3})]
    assert items == [{"index": i, "payload": b""} for i in range(3)]


async def test_call_cancellation_reaches_the_server(
    channel: rpc.Channel, service: TestService
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.call, "grpc.testing.TestService/sleep", {})
        await service.started.wait()
        nursery.cancel_scope.cancel()
    with trio.fail_after(5):
        await service.cancelled.wait()
