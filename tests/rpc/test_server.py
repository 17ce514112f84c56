"""Server behaviour: limits, timeouts, keepalive, shutdown, and bad peers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import msgspec
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.protocol import (
    CallType,
    Connection,
    Error,
    ErrorCode,
    GoAway,
    Hello,
    Ping,
    Pong,
    Response,
    Role,
)

from .conftest import address
from .raw import RawClient
from .services import Empty, GetUserRequest, TestService


def events_named(logs: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [log for log in logs if log["event"] == name]


async def test_serve_with_nursery_start(nursery: trio.Nursery, service: TestService) -> None:
    server: rpc.Server = await nursery.start(
        partial(rpc.serve, [service], host="127.0.0.1", port=0)
    )
    assert server.address[0] == "127.0.0.1"
    async with rpc.open_channel(address(server)) as channel:
        assert (await channel.stub(TestService).get_user(GetUserRequest(3))).user_id == 3
    await server.shutdown()
    assert server.statistics().shutting_down


async def test_server_advertises_max_concurrent_streams(service: TestService) -> None:
    async with rpc.open_server([service], host="127.0.0.1", max_concurrent_streams=7) as server:
        client = await RawClient.connect(server)
        hello = next(e for e in client.events if isinstance(e, Hello))
        assert hello.settings.max_concurrent_streams == 7
        await client.aclose()


async def test_default_stream_limit_is_1000(server: rpc.Server) -> None:
    client = await RawClient.connect(server)
    hello = next(e for e in client.events if isinstance(e, Hello))
    assert hello.settings.max_concurrent_streams == 1000
    await client.aclose()


async def test_callers_at_the_stream_limit_wait(service: TestService) -> None:
    async with (
        rpc.open_server([service], host="127.0.0.1", max_concurrent_streams=2) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        stub = channel.stub(TestService)
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(stub.hold, Empty())
            with trio.fail_after(5):
                while service.running < 2:
                    await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            assert service.running == 2
            service.release.set()
        assert service.max_running == 2


async def test_server_enforces_the_request_deadline(
    autojump_clock: trio.testing.MockClock, service: TestService, server: rpc.Server
) -> None:
    client = await RawClient.connect(server)
    error, seconds = await client.call_with_deadline("grpc.testing.TestService/sleep", 250)
    assert error.code is rpc.Status.DEADLINE_EXCEEDED
    assert seconds == pytest.approx(0.25)
    assert service.cancelled.is_set()
    await client.aclose()


async def test_the_deadline_is_enforced_in_an_interceptor_too(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    class Slow:
        async def intercept(
            self, call: rpc.ServerCall, proceed: Callable[[], Awaitable[None]]
        ) -> None:
            await trio.sleep(10)  # the deadline passes here, before the handler runs
            await proceed()  # pragma: no cover

    async with rpc.open_server([service], host="127.0.0.1", interceptors=[Slow()]) as server:
        client = await RawClient.connect(server)
        error, seconds = await client.call_with_deadline("grpc.testing.TestService/sleep", 250)
        assert (error.code, error.message) == (rpc.Status.DEADLINE_EXCEEDED, "deadline exceeded")
        assert seconds == pytest.approx(0.25)
        assert not service.started.is_set()
        await client.aclose()


async def test_max_inflight_counts_each_call_until_it_ends_and_no_longer(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    async with (
        rpc.open_server([service], host="127.0.0.1", max_inflight=2) as server,
        rpc.open_channel(address(server), retry=None) as channel,
    ):
        stub = channel.stub(TestService)
        for _ in range(3):
            await stub.empty_call(Empty())  # each gives its place back as it ends
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stub.hold, Empty())
            nursery.start_soon(stub.hold, Empty())
            while service.running < 2:  # noqa: ASYNC110 - the two calls are starting
                await trio.sleep(0.01)
            with pytest.raises(rpc.RpcError) as info:
                await stub.empty_call(Empty())
            service.release.set()
        assert info.value.details == {"refused": "max_inflight"}


async def test_call_type_mismatch_is_unimplemented(server: rpc.Server) -> None:
    client = await RawClient.connect(server)
    payload = msgspec.msgpack.encode(Empty())
    await client.stream.send_all(
        client.conn.send_request(
            1, "grpc.testing.TestService/empty_call", payload, call_type=CallType.SERVER_STREAM
        )
    )
    error = await client.receive_until(Error)
    assert isinstance(error, Error)
    assert error.code is rpc.Status.UNIMPLEMENTED
    await client.aclose()


async def test_graceful_shutdown_drains_in_flight_calls_and_refuses_new_ones(
    service: TestService,
) -> None:
    async with rpc.open_server([service], host="127.0.0.1") as server:
        async with rpc.open_channel(address(server)) as channel, trio.open_nursery() as nursery:
            results: list[Empty] = []

            async def hold() -> None:
                results.append(await channel.stub(TestService).hold(Empty()))

            nursery.start_soon(hold)
            await service.started.wait()
            nursery.start_soon(server.shutdown)
            await trio.testing.wait_all_tasks_blocked()
            assert server.statistics().shutting_down
            # No new connections...
            async with rpc.open_channel(address(server)) as late:
                with pytest.raises(rpc.RpcError) as info:
                    await late.stub(TestService).empty_call(Empty())
                assert info.value.code is rpc.Status.UNAVAILABLE
            # ...but the call in flight completes.
            service.release.set()
        assert results == [Empty()]
    assert server.statistics().connections == 0


async def test_shutdown_cancels_calls_left_after_the_grace_period(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    async with (
        rpc.open_server([service], host="127.0.0.1", grace_period=3) as server,
        rpc.open_channel(address(server)) as channel,
        trio.open_nursery() as nursery,
    ):

        async def sleep() -> None:
            with pytest.raises(rpc.RpcError) as info:
                await channel.stub(TestService).sleep(Empty())
            assert info.value.code is rpc.Status.UNAVAILABLE

        nursery.start_soon(sleep)
        await service.started.wait()
        start = trio.current_time()
        with capture_logs() as logs:
            await server.shutdown()
        assert trio.current_time() - start == pytest.approx(3)
        assert service.cancelled.is_set()
        assert events_named(logs, "rpc.server.grace_expired")


async def test_a_call_cut_short_by_shutdown_is_cancelled_not_failed(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    seen: list[BaseException] = []

    class Record:
        async def intercept(
            self, call: rpc.ServerCall, proceed: Callable[[], Awaitable[None]]
        ) -> None:
            try:
                await proceed()
            except BaseException as exc:
                seen.append(exc)
                raise

    async with (
        rpc.open_server(
            [service], host="127.0.0.1", grace_period=1, interceptors=[Record()]
        ) as server,
        rpc.open_channel(address(server)) as channel,
        trio.open_nursery() as nursery,
    ):

        async def sleep() -> None:
            with pytest.raises(rpc.RpcError):  # UNAVAILABLE: the connection closed
                await channel.stub(TestService).sleep(Empty())

        nursery.start_soon(sleep)
        await service.started.wait()
        await server.shutdown()
    # Not this call's cancellation: the handler's Cancelled goes on up, unconverted.
    assert [type(exc) for exc in seen] == [trio.Cancelled]


async def test_handshake_timeout_drops_a_client_that_stalls(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    async with rpc.open_server([service], host="127.0.0.1", handshake_timeout=2) as server:
        with capture_logs() as logs:
            client = await RawClient.connect(server, handshake=False)
            async with client.stream:
                await client.stream.send_all(client.conn.initiate()[:5])  # half a preface
                start = trio.current_time()
                while await client.stream.receive_some(65536):
                    pass
                assert trio.current_time() - start == pytest.approx(2)
        assert events_named(logs, "rpc.connection.handshake_timeout")


async def test_handshake_timeout_drops_a_silent_client_with_goaway(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    async with rpc.open_server([service], host="127.0.0.1", handshake_timeout=2) as server:
        stream = await trio.open_tcp_stream(*server.address)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
        await stream.aclose()
    conn = Connection(Role.CLIENT)
    conn.initiate()
    events = conn.receive_data(received)
    goaway = [e for e in events if isinstance(e, GoAway)]
    assert goaway
    assert goaway[0].code is ErrorCode.HANDSHAKE_TIMEOUT


async def test_server_answers_pings(server: rpc.Server) -> None:
    client = await RawClient.connect(server)
    await client.stream.send_all(client.conn.send_ping(42))
    pong = await client.receive_until(Pong)
    assert pong == Pong(42)
    await client.aclose()


async def test_keepalive_drops_a_dead_peer(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    async with rpc.open_server(
        [service], host="127.0.0.1", keepalive_interval=30, keepalive_timeout=10
    ) as server:
        with capture_logs() as logs:
            client = await RawClient.connect(server)
            start = trio.current_time()
            ping = await client.receive_until(Ping)  # ... and never answer it
            assert trio.current_time() - start == pytest.approx(30)
            assert isinstance(ping, Ping)
            await client.receive_until_closed()
            assert trio.current_time() - start == pytest.approx(40)
            await client.aclose()
        assert events_named(logs, "rpc.connection.keepalive_timeout")


async def test_keepalive_keeps_a_live_peer(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    async with (
        rpc.open_server(
            [service], host="127.0.0.1", keepalive_interval=30, keepalive_timeout=10
        ) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        await trio.sleep(200)  # the channel answers the server's PINGs
        assert (await channel.stub(TestService).get_user(GetUserRequest(1))).user_id == 1
        assert channel.statistics().ready == 1


async def test_ping_flood_gets_enhance_your_calm(
    autojump_clock: trio.testing.MockClock, server: rpc.Server
) -> None:
    with capture_logs() as logs:
        client = await RawClient.connect(server)
        for opaque in range(4):
            await client.stream.send_all(client.conn.send_ping(opaque))
        events = await client.receive_until_closed()
        await client.aclose()
    goaway = [e for e in events if isinstance(e, GoAway)]
    assert goaway[0].code is ErrorCode.ENHANCE_YOUR_CALM
    assert events_named(logs, "rpc.connection.enhance_your_calm")


async def test_idle_timeout_closes_the_connection(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    async with rpc.open_server([service], host="127.0.0.1", idle_timeout=60) as server:
        client = await RawClient.connect(server)
        start = trio.current_time()
        events = await client.receive_until_closed()
        assert trio.current_time() - start == pytest.approx(60)
        assert any(isinstance(e, GoAway) and e.code is ErrorCode.NO_ERROR for e in events)
        await client.aclose()


async def test_max_connections_refuses_extra_ones(service: TestService) -> None:
    async with rpc.open_server([service], host="127.0.0.1", max_connections=1) as server:
        first = await RawClient.connect(server)
        with capture_logs() as logs:
            second = await RawClient.connect(server)
            events = await second.receive_until_closed()
            await second.aclose()
        assert any(isinstance(e, GoAway) for e in events)
        assert events_named(logs, "rpc.connection.refused")[0]["reason"] == "max_connections"
        # The first connection still works.
        payload = msgspec.msgpack.encode(Empty())
        await first.stream.send_all(
            first.conn.send_request(1, "grpc.testing.TestService/empty_call", payload)
        )
        assert isinstance(await first.receive_until(Response), Response)
        await first.aclose()


async def test_a_bad_connection_is_logged_and_does_not_affect_others(
    server: rpc.Server, stub: TestService
) -> None:
    with capture_logs() as logs:
        stream = await trio.open_tcp_stream(*server.address)
        await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
        while await stream.receive_some(65536):
            pass
        await stream.aclose()
    errors = events_named(logs, "rpc.connection.protocol_error")
    assert errors
    assert "preface" in str(errors[0]["reason"])
    assert (await stub.get_user(GetUserRequest(5))).user_id == 5


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"grace_period": -1}, ValueError),
        ({"max_frame_size": "big"}, TypeError),
        ({"no_such_option": 1}, TypeError),
    ],
)
async def test_open_server_raises_a_bad_argument_bare_before_it_starts(
    service: TestService, options: dict[str, object], error: type[Exception]
) -> None:
    with trio.testing.assert_no_checkpoints(), pytest.raises(error):
        async with rpc.open_server([service], host="127.0.0.1", **options):  # type: ignore[arg-type]
            pytest.fail("the body ran")
