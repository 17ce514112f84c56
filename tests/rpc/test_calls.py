"""Calls over real loopback connections; named after gRPC's interop test cases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
from structlog.testing import capture_logs

from trio_micro import rpc

from .conftest import RecordOutcomes, address
from .services import (
    Empty,
    GetUserRequest,
    SimpleRequest,
    StreamingRequest,
    TestService,
    User,
)


async def test_empty_unary(stub: TestService) -> None:
    assert await stub.empty_call(Empty()) == Empty()


async def test_large_unary(stub: TestService) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    response = await stub.unary_call(SimpleRequest(payload=payload, response_size=2**20))
    assert response.payload == bytes(2**20)
    echoed = await stub.unary_call(SimpleRequest(payload=payload))
    assert echoed.payload == payload


async def test_unary_returns_the_typed_response(stub: TestService) -> None:
    user = await stub.get_user(GetUserRequest(user_id=7))
    assert user == User(7, "user7")


async def test_server_streaming(stub: TestService) -> None:
    items = [item async for item in stub.streaming_output_call(StreamingRequest(200, 10))]
    assert [item.index for item in items] == list(range(200))
    assert all(item.payload == bytes(10) for item in items)


async def test_empty_server_stream(stub: TestService) -> None:
    assert [item async for item in stub.streaming_output_call(StreamingRequest(0))] == []


async def test_status_code_and_message(stub: TestService) -> None:
    with pytest.raises(rpc.RpcError) as info:
        await stub.unary_call(SimpleRequest(status_code=2, status_message="test status message"))
    assert info.value.code is rpc.Status.UNKNOWN
    assert info.value.message == "test status message"
    assert str(info.value) == "UNKNOWN: test status message"


async def test_special_status_message(stub: TestService) -> None:
    message = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"
    with pytest.raises(rpc.RpcError) as info:
        await stub.unary_call(SimpleRequest(status_code=2, status_message=message))
    assert info.value.message == message


async def test_handler_may_fail_with_any_status(stub: TestService) -> None:
    for status in rpc.Status:
        if status is rpc.Status.OK:
            continue
        with pytest.raises(rpc.RpcError) as info:
            await stub.unary_call(SimpleRequest(status_code=status.value, status_message="x"))
        assert info.value.code is status


async def test_unimplemented_method(channel: rpc.Channel) -> None:
    class Narrower(rpc.Service, name="grpc.testing.TestService"):
        @rpc.unary
        async def unimplemented_call(self, req: Empty) -> Empty:
            raise AssertionError  # pragma: no cover

    with pytest.raises(rpc.RpcError) as info:
        await channel.stub(Narrower).unimplemented_call(Empty())
    assert info.value.code is rpc.Status.UNIMPLEMENTED
    assert "unimplemented_call" in info.value.message


async def test_unimplemented_service(channel: rpc.Channel) -> None:
    with pytest.raises(rpc.RpcError) as info:
        await channel.stub(UnimplementedService).unimplemented_call(Empty())
    assert info.value.code is rpc.Status.UNIMPLEMENTED
    assert "grpc.testing.UnimplementedService" in info.value.message


class UnimplementedService(rpc.Service, name="grpc.testing.UnimplementedService"):
    @rpc.unary
    async def unimplemented_call(self, req: Empty) -> Empty:
        raise AssertionError  # pragma: no cover


async def test_custom_metadata(channel: rpc.Channel) -> None:
    stub = channel.stub(TestService, metadata={"x-grpc-test-echo-initial": "test_initial"})
    info = await stub.call_info(Empty())
    # No traceparent: a call made outside any span leaves starting the trace to the server.
    assert info.metadata == {"x-grpc-test-echo-initial": "test_initial"}
    assert info.service == "grpc.testing.TestService"
    assert info.method == "call_info"
    assert info.peer.startswith("127.0.0.1:")
    assert not info.has_deadline


async def test_deadline_is_visible_to_the_handler(stub: TestService) -> None:
    with trio.move_on_after(30):
        info = await stub.call_info(Empty())
    assert info.has_deadline


async def test_invalid_argument_carries_the_field_path(channel: rpc.Channel) -> None:
    class LooseRequest(rpc.Service, name="grpc.testing.TestService"):
        @rpc.unary
        async def get_user(self, req: WrongUserRequest) -> User:
            raise AssertionError  # pragma: no cover

    with pytest.raises(rpc.RpcError) as info:
        await channel.stub(LooseRequest).get_user(WrongUserRequest(user_id="seven"))
    assert info.value.code is rpc.Status.INVALID_ARGUMENT
    assert info.value.message == "Expected `int`, got `str` - at `$.user_id`"
    assert info.value.details == {"field": "$.user_id"}


async def test_a_server_streams_invalid_argument_carries_the_field_path(
    channel: rpc.Channel,
) -> None:
    class LooseRequest(rpc.Service, name="grpc.testing.TestService"):
        @rpc.server_stream
        async def streaming_output_call(self, req: WrongStreamingRequest) -> AsyncIterator[User]:
            raise AssertionError  # pragma: no cover
            yield  # pragma: no cover

    with pytest.raises(rpc.RpcError) as info:
        async for _ in channel.stub(LooseRequest).streaming_output_call(WrongStreamingRequest("x")):
            pass  # pragma: no cover
    assert info.value.code is rpc.Status.INVALID_ARGUMENT
    assert info.value.message == "Expected `int`, got `str` - at `$.count`"
    assert info.value.details == {"field": "$.count"}


class WrongUserRequest(__import__("msgspec").Struct):
    user_id: str


class WrongStreamingRequest(__import__("msgspec").Struct):
    count: str


async def test_internal_error_hides_the_traceback(stub: TestService) -> None:
    with capture_logs() as logs, pytest.raises(rpc.RpcError) as info:
        await stub.crash(Empty())
    assert info.value.code is rpc.Status.INTERNAL
    assert info.value.message == "internal server error"
    crashed = [log for log in logs if log["event"] == "rpc.handler.crashed"]
    assert len(crashed) == 1
    assert crashed[0]["method"] == "crash"
    assert isinstance(crashed[0]["exc_info"], ValueError)


async def test_a_crash_is_logged_with_the_call_it_ended(stub: TestService) -> None:
    with capture_logs() as logs, pytest.raises(rpc.RpcError):
        await stub.crash(Empty())
    [crashed] = [log for log in logs if log["event"] == "rpc.handler.crashed"]
    assert crashed["service"] == "grpc.testing.TestService"
    assert crashed["what"] == "handler raised"
    assert crashed["peer"].startswith("127.0.0.1:")
    assert isinstance(crashed["stream_id"], int)
    assert crashed["stream_id"] > 0
    assert crashed["log_level"] == "error"


async def test_a_response_of_the_wrong_type_is_an_internal_error_and_logged() -> None:
    class WrongAnswer(rpc.Service, name="grpc.testing.TestService"):
        @rpc.unary
        async def empty_call(self, req: Empty) -> Empty:
            return User(1, "one")  # type: ignore[return-value]

    async with (
        rpc.open_server([WrongAnswer()], host="127.0.0.1") as server,
        rpc.open_channel(address(server)) as channel,
    ):
        with capture_logs() as logs, pytest.raises(rpc.RpcError) as info:
            await channel.stub(WrongAnswer).empty_call(Empty())
    assert (info.value.code, info.value.message) == (rpc.Status.INTERNAL, "internal server error")
    [crashed] = [log for log in logs if log["event"] == "rpc.handler.crashed"]
    assert (crashed["method"], crashed["what"], repr(crashed["exc_info"])) == (
        "empty_call",
        "bad response",
        'TypeError("grpc.testing.TestService/empty_call must return a Empty, '
        "got User(user_id=1, name='one', source='test')\")",
    )
    assert crashed["peer"].startswith("127.0.0.1:")


async def test_stub_checks_the_request_type(stub: TestService) -> None:
    with pytest.raises(TypeError, match="GetUserRequest"):
        await stub.get_user(Empty())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="StreamingRequest"):
        stub.streaming_output_call(Empty())  # type: ignore[arg-type]


async def test_concurrent_calls_share_one_connection(server: rpc.Server, stub: TestService) -> None:
    results: list[User] = []

    async def call(user_id: int) -> None:
        results.append(await stub.get_user(GetUserRequest(user_id)))

    async with trio.open_nursery() as nursery:
        for user_id in range(300):
            nursery.start_soon(call, user_id)
    assert sorted(user.user_id for user in results) == list(range(300))
    assert server.statistics().connections == 1


async def test_calls_spread_over_the_pool(server: rpc.Server) -> None:
    async with rpc.open_channel(address(server), pool_size=3) as channel:
        stub = channel.stub(TestService)
        async with trio.open_nursery() as nursery:
            for user_id in range(30):
                nursery.start_soon(stub.get_user, GetUserRequest(user_id))
        assert channel.statistics().ready == 3
        assert server.statistics().connections == 3


async def test_reflection_lists_services_and_schemas(channel: rpc.Channel) -> None:
    response = await channel.stub(rpc.ReflectionService).list_services(rpc.ListServicesRequest())
    services = {service.name: service for service in response.services}
    assert set(services) == {
        "grpc.testing.TestService",
        "trio_micro.health",
        "trio_micro.reflection",
    }
    methods = {method.name: method for method in services["grpc.testing.TestService"].methods}
    assert methods["get_user"].kind == "unary"
    assert methods["get_user"].idempotent
    assert methods["streaming_output_call"].kind == "server_stream"
    schema = methods["get_user"].request_schema
    assert schema["$defs"]["GetUserRequest"]["properties"]["user_id"] == {"type": "integer"}


async def test_server_interceptor_can_reject_and_see_outcome(service: TestService) -> None:
    record = RecordOutcomes()

    class Auth:
        async def intercept(
            self, call: rpc.ServerCall, proceed: Callable[[], Awaitable[None]]
        ) -> None:
            if call.metadata.get("authorization") != "Bearer ok":
                raise rpc.RpcError(rpc.Status.UNAUTHENTICATED, "no token")
            call.metadata["user"] = "alice"
            await proceed()

    async with (
        rpc.open_server([service], host="127.0.0.1", interceptors=[record, Auth()]) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        with pytest.raises(rpc.RpcError) as info:
            await channel.stub(TestService).empty_call(Empty())
        assert info.value.code is rpc.Status.UNAUTHENTICATED
        stub = channel.stub(TestService, metadata={"authorization": "Bearer ok"})
        assert (await stub.call_info(Empty())).metadata["user"] == "alice"
        with capture_logs(), pytest.raises(rpc.RpcError):
            await stub.crash(Empty())
        assert len([item async for item in stub.streaming_output_call(StreamingRequest(3))]) == 3
    outcomes = record.outcomes
    assert [(method, code) for method, _, code in outcomes] == [
        ("empty_call", rpc.Status.UNAUTHENTICATED),
        ("call_info", rpc.Status.OK),
        ("crash", rpc.Status.INTERNAL),
        ("streaming_output_call", rpc.Status.OK),
    ]
    assert outcomes[0][1].startswith("127.0.0.1:")


async def test_a_server_interceptor_that_raises_fails_its_call_alone(
    service: TestService,
) -> None:
    """A bug in an interceptor (any exception but RpcError) is that call's INTERNAL, logged;
    a stream in flight on the same connection goes on, and later calls work."""

    class Buggy:
        async def intercept(
            self, call: rpc.ServerCall, proceed: Callable[[], Awaitable[None]]
        ) -> None:
            if call.metadata.get("boom"):
                raise ValueError("interceptor bug")
            await proceed()

    async with (
        rpc.open_server([service], host="127.0.0.1", interceptors=[Buggy()]) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        stub = channel.stub(TestService)
        stream = stub.streaming_output_call(StreamingRequest(2))
        first = await stream.__anext__()
        with capture_logs() as logs:
            with pytest.raises(rpc.RpcError) as info:
                await channel.stub(TestService, metadata={"boom": "1"}).empty_call(Empty())
            second = await stream.__anext__()
            await stub.empty_call(Empty())
    assert info.value.code is rpc.Status.INTERNAL
    assert (first.index, second.index) == (0, 1)
    crashed = [log for log in logs if log["event"] == "rpc.handler.crashed"]
    assert [log["what"] for log in crashed] == ["interceptor raised"]
    assert not [log for log in logs if log["event"] == "rpc.connection.crashed"]


async def test_client_interceptor_adds_metadata(server: rpc.Server) -> None:
    seen: list[tuple[str, str]] = []

    class AddToken:
        async def intercept(
            self, call: rpc.ClientCall, proceed: Callable[[], Awaitable[None]]
        ) -> None:
            call.metadata["authorization"] = "Bearer ok"
            await proceed()
            seen.append((call.method, call.peer))

    async with rpc.open_channel(address(server), interceptors=[AddToken()]) as channel:
        stub = channel.stub(TestService)
        info = await stub.call_info(Empty())
        items = [item async for item in stub.streaming_output_call(StreamingRequest(2))]
    assert info.metadata == {"authorization": "Bearer ok"}  # no span: no traceparent
    assert len(items) == 2
    assert [method for method, _ in seen] == ["call_info", "streaming_output_call"]
    assert seen[0][1] == address(server)


async def test_client_interceptor_can_refuse(server: rpc.Server) -> None:
    class Refuse:
        async def intercept(
            self, call: rpc.ClientCall, proceed: Callable[[], Awaitable[None]]
        ) -> None:
            raise rpc.RpcError(rpc.Status.PERMISSION_DENIED, "not from here")

    async with rpc.open_channel(address(server), interceptors=[Refuse()]) as channel:
        with pytest.raises(rpc.RpcError) as info:
            await channel.stub(TestService).empty_call(Empty())
    assert info.value.code is rpc.Status.PERMISSION_DENIED


async def test_current_call_outside_a_handler_raises() -> None:
    with pytest.raises(RuntimeError, match="outside of an RPC handler"):
        rpc.current_call()


@pytest.fixture
async def small_frames(server: rpc.Server) -> AsyncIterator[TestService]:
    """A stub on a channel that accepts frames of at most 16 KiB, the smallest limit."""
    async with rpc.open_channel(address(server), max_frame_size=16384) as channel:
        yield channel.stub(TestService)


async def test_a_response_over_the_clients_max_frame_size_is_resource_exhausted(
    small_frames: TestService,
) -> None:
    with pytest.raises(rpc.RpcError) as info, trio.fail_after(5):
        await small_frames.unary_call(SimpleRequest(response_size=20_000))
    assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED
    assert info.value.message.startswith("response too large: RESPONSE frame body is ")
    assert info.value.message.endswith("over the peer's max_frame_size of 16384")


async def test_a_stream_item_over_the_clients_max_frame_size_is_resource_exhausted(
    small_frames: TestService,
) -> None:
    stream = small_frames.streaming_output_call(StreamingRequest(2, size=20_000))
    with pytest.raises(rpc.RpcError) as info, trio.fail_after(5):
        await stream.__anext__()  # the first item is already too large
    assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED
    assert info.value.message.startswith("stream item too large: ITEM frame body is ")


async def test_an_error_over_the_clients_max_frame_size_is_resource_exhausted(
    small_frames: TestService,
) -> None:
    request = SimpleRequest(status_code=rpc.Status.NOT_FOUND.value, status_message="x" * 20_000)
    with pytest.raises(rpc.RpcError) as info, trio.fail_after(5):
        await small_frames.unary_call(request)
    assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED
    assert info.value.message.startswith("error too large: ERROR frame body is ")
