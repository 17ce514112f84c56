"""The client channel: connecting, failing, reconnecting, closing."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.protocol import Connection, Ping, Role

from .conftest import address
from .services import Empty, GetUserRequest, TestService


async def free_port() -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    return port


def all_tasks() -> list[trio.lowlevel.Task]:
    tasks: list[trio.lowlevel.Task] = []

    def walk(task: trio.lowlevel.Task) -> None:
        tasks.append(task)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return tasks


async def test_refused_connection_is_unavailable_naming_the_address() -> None:
    port = await free_port()
    with capture_logs() as logs:
        async with rpc.open_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(rpc.RpcError) as info:
                await channel.stub(TestService).empty_call(Empty())
    assert info.value.code is rpc.Status.UNAVAILABLE
    assert f"127.0.0.1:{port}" in info.value.message
    assert any(log["event"] == "rpc.channel.connect_failed" for log in logs)


async def test_reconnects_after_server_restart(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    async with rpc.open_server([service], host="127.0.0.1") as server:
        port = server.address[1]
        async with rpc.open_channel(address(server)) as channel:
            stub = channel.stub(TestService)
            assert (await stub.get_user(GetUserRequest(1))).user_id == 1
            await server.shutdown()
            with pytest.raises(rpc.RpcError) as info:
                await stub.get_user(GetUserRequest(2))
            assert info.value.code is rpc.Status.UNAVAILABLE
            async with rpc.open_server([service], host="127.0.0.1", port=port):
                start = trio.current_time()
                while True:  # the channel reconnects in the background, with backoff
                    try:
                        user = await stub.get_user(GetUserRequest(3))
                        break
                    except rpc.RpcError as exc:
                        if exc.code is not rpc.Status.UNAVAILABLE:
                            raise
                        await trio.sleep(0.5)
                assert user.user_id == 3
                assert trio.current_time() - start < 5


async def test_goaway_refused_calls_are_retried_on_a_new_connection(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    # A server that says GOAWAY(last_id=0) right after HELLO: the call is never processed,
    # so the channel retries it elsewhere and finally reports UNAVAILABLE.
    async with (
        rpc.open_server([service], host="127.0.0.1", max_connections=1) as server,
        rpc.open_channel(address(server)) as first,
    ):
        await first.stub(TestService).empty_call(Empty())
        async with rpc.open_channel(address(server)) as second:
            with pytest.raises(rpc.RpcError) as info:
                await second.stub(TestService).empty_call(Empty())
            assert info.value.code is rpc.Status.UNAVAILABLE
            assert "max_connections" in info.value.message
    assert service.calls == 1


async def test_closing_the_channel_fails_pending_calls_with_cancelled(
    server: rpc.Server, service: TestService
) -> None:
    errors: list[rpc.RpcError] = []

    async def call(stub: TestService) -> None:
        with pytest.raises(rpc.RpcError) as info:
            await stub.sleep(Empty())
        errors.append(info.value)

    async with trio.open_nursery() as nursery, rpc.open_channel(address(server)) as channel:
        nursery.start_soon(call, channel.stub(TestService))
        await service.started.wait()
    assert [error.code for error in errors] == [rpc.Status.CANCELLED]
    with trio.fail_after(5):
        await service.cancelled.wait()


async def test_lost_connection_fails_pending_calls_with_unavailable(
    autojump_clock: trio.testing.MockClock, service: TestService
) -> None:
    async with (
        rpc.open_server([service], host="127.0.0.1", grace_period=1) as server,
        rpc.open_channel(address(server)) as channel,
        trio.open_nursery() as nursery,
    ):

        async def call() -> None:
            with pytest.raises(rpc.RpcError) as info:
                await channel.stub(TestService).sleep(Empty())
            assert info.value.code is rpc.Status.UNAVAILABLE

        nursery.start_soon(call)
        await service.started.wait()
        await server.shutdown()


def client_tasks() -> list[str]:
    names = [task.name for task in all_tasks()]
    return [name for name in names if "EndpointPool." in name or "ClientConnection." in name]


async def test_no_task_left_behind_after_close(server: rpc.Server) -> None:
    async with rpc.open_channel(address(server), pool_size=3) as channel:
        stub = channel.stub(TestService)
        await stub.get_user(GetUserRequest(1))
        # Per connection: the slot (reader), the writer and the keepalive timer (on by default).
        assert len(client_tasks()) == 3 * 3
    assert client_tasks() == []


async def test_server_tasks_end_with_the_server(service: TestService) -> None:
    before = len(all_tasks())
    async with (
        rpc.open_server([service], host="127.0.0.1") as server,
        rpc.open_channel(address(server)) as channel,
    ):
        await channel.stub(TestService).get_user(GetUserRequest(1))
    await trio.testing.wait_all_tasks_blocked()
    assert len(all_tasks()) == before


async def test_client_keepalive_drops_a_silent_server(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    pinged = trio.Event()

    async def silent_server(stream: trio.SocketStream) -> None:
        conn = Connection(Role.SERVER)
        async with stream:
            await stream.send_all(conn.initiate())
            while data := await stream.receive_some(65536):
                if any(isinstance(event, Ping) for event in conn.receive_data(data)):
                    pinged.set()  # ... and never answer

    listeners: Sequence[trio.SocketListener] = await nursery.start(trio.serve_tcp, silent_server, 0)
    port = listeners[0].socket.getsockname()[1]
    with capture_logs() as logs:
        async with rpc.open_channel(
            f"127.0.0.1:{port}", keepalive_interval=20, keepalive_timeout=5
        ) as channel:
            stub = channel.stub(TestService)
            with pytest.raises(rpc.RpcError) as info:
                await stub.sleep(Empty())
            assert info.value.code is rpc.Status.UNAVAILABLE
            assert "keepalive" in info.value.message
            assert pinged.is_set()
    assert any(log["event"] == "rpc.channel.keepalive_timeout" for log in logs)
    nursery.cancel_scope.cancel()


async def test_round_robin_cycles() -> None:
    balancer = rpc.RoundRobin()

    class Fake:
        endpoint = rpc.Endpoint("h", 1)
        outstanding = 0

    ready = [Fake(), Fake(), Fake()]
    assert [balancer.pick(ready) for _ in range(5)] == [0, 1, 2, 0, 1]


async def test_custom_balancer_is_used(server: rpc.Server) -> None:
    picks: list[int] = []

    class First:
        def pick(self, ready: Sequence[rpc.Subchannel]) -> int:
            picks.append(len(ready))
            return 0

    async with rpc.open_channel(address(server), pool_size=2, balancer=First()) as channel:
        stub = channel.stub(TestService)
        while channel.statistics().ready < 2:
            await trio.testing.wait_all_tasks_blocked()
        await stub.empty_call(Empty())
    assert picks == [2]


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("127.0.0.1:80", "127.0.0.1", 80),
        ("[::1]:8080", "::1", 8080),
        ("svc.local:1", "svc.local", 1),
    ],
)
def test_endpoint_parse(target: str, host: str, port: int) -> None:
    endpoint = rpc.Endpoint.parse(target)
    assert (endpoint.host, endpoint.port) == (host, port)
    assert str(endpoint) == target
    assert endpoint == rpc.Endpoint(host, port)
    assert hash(endpoint) == hash(rpc.Endpoint(host, port))


@pytest.mark.parametrize("target", ["localhost", "host:", ":80", "host:http", "host:70000"])
def test_endpoint_parse_rejects_bad_addresses(target: str) -> None:
    with pytest.raises(ValueError, match="port"):
        rpc.Endpoint.parse(target)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"pool_size": 0}, ValueError),
        ({"pool_size": True}, TypeError),
        ({"keepalive_interval": -1}, ValueError),
        ({"interceptors": [object()]}, TypeError),
        ({"balancer": object()}, TypeError),
        ({"ssl_context": "yes"}, TypeError),
    ],
)
async def test_open_channel_checks_arguments(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        async with rpc.open_channel("127.0.0.1:1", **kwargs):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_the_in_flight_count_returns_to_zero(channel: rpc.Channel) -> None:
    # It decides whether a lone call's frame is written at once: a count that drifts up
    # would quietly cost every later lone call a scheduling round.
    stub = channel.stub(TestService)
    async with trio.open_nursery() as nursery:
        for user_id in range(10):
            nursery.start_soon(stub.get_user, GetUserRequest(user_id))
    with pytest.raises(rpc.RpcError):
        await stub.crash(Empty())
    with trio.move_on_after(0.01):
        await stub.sleep(Empty())
    assert channel._caller._in_flight == 0
