"""The health service: Check, Watch, unknown services, and the order of a drain."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_micro import rpc
from trio_micro.rpc import HealthCheckRequest as Req
from trio_micro.rpc import HealthStatus

from .conftest import address
from .services import Empty, TestService

SERVING = HealthStatus.SERVING
NOT_SERVING = HealthStatus.NOT_SERVING


async def test_check_reports_every_service_and_the_server_serving(channel: rpc.Channel) -> None:
    health = channel.stub(rpc.HealthService)
    assert (await health.check(Req(""))).status is SERVING
    assert (await health.check(Req("grpc.testing.TestService"))).status is SERVING


async def test_check_of_an_unknown_service_is_not_found(channel: rpc.Channel) -> None:
    with pytest.raises(rpc.RpcError) as info:
        await channel.stub(rpc.HealthService).check(Req("nope"))
    assert info.value.code is rpc.Status.NOT_FOUND
    assert "'nope'" in info.value.message


async def test_check_of_a_huge_service_name_is_invalid_argument(channel: rpc.Channel) -> None:
    with pytest.raises(rpc.RpcError) as info:
        await channel.stub(rpc.HealthService).check(Req("x" * 5000))
    assert info.value.code is rpc.Status.INVALID_ARGUMENT


async def test_watch_of_an_unknown_service_streams_service_unknown(
    channel: rpc.Channel,
) -> None:
    stream = channel.stub(rpc.HealthService).watch(Req("nope"))
    async with stream:
        first = await stream.__anext__()
    assert first.status is HealthStatus.SERVICE_UNKNOWN


async def test_watch_sees_a_status_change(server: rpc.Server, channel: rpc.Channel) -> None:
    assert server.health is not None
    seen: list[HealthStatus] = []
    stream = channel.stub(rpc.HealthService).watch(Req("grpc.testing.TestService"))
    async with stream:
        async for item in stream:
            seen.append(item.status)
            if len(seen) == 1:
                server.health.set_status("grpc.testing.TestService", NOT_SERVING)
            else:
                break
    assert seen == [SERVING, NOT_SERVING]


async def test_set_status_refuses_service_unknown(server: rpc.Server) -> None:
    assert server.health is not None
    with pytest.raises(ValueError, match="SERVICE_UNKNOWN"):
        server.health.set_status("", HealthStatus.SERVICE_UNKNOWN)
    with pytest.raises(TypeError):
        server.health.set_status("", "SERVING")  # type: ignore[arg-type]


async def test_watchers_hear_not_serving_before_the_goaway_and_their_stream_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = TestService()
    async with (
        rpc.open_server([service], host="127.0.0.1", port=0) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        seen: list[HealthStatus] = []
        shutdown_started = trio.Event()

        async def watch() -> None:
            stream = channel.stub(rpc.HealthService).watch(Req(""))
            async with stream:
                async for item in stream:
                    seen.append(item.status)
                    if len(seen) == 1:
                        shutdown_started.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await shutdown_started.wait()
            # A call in flight keeps the connection draining, not closed.
            nursery.start_soon(channel.stub(TestService).hold, Empty())
            await service.started.wait()
            nursery.start_soon(server.shutdown)
            await trio.testing.wait_all_tasks_blocked()
            # The watch ended (its stream is over) while the server still drains.
            assert seen == [SERVING, NOT_SERVING]
            assert server.statistics().shutting_down
            assert server.statistics().health_watches == 0
            service.release.set()
        assert server.health is not None
        assert not server.health.serving


async def test_a_check_against_a_draining_server_says_not_serving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = TestService()
    async with (
        rpc.open_server([service], host="127.0.0.1", port=0) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        health = channel.stub(rpc.HealthService)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.stub(TestService).hold, Empty())
            await service.started.wait()
            await health.check(Req(""))  # connected before the GOAWAY
            assert server.health is not None
            await server.health.shutdown()  # the first step of Server.shutdown
            assert (await health.check(Req(""))).status is NOT_SERVING
            server.health.set_status("", SERVING)  # ignored once shut down
            assert (await health.check(Req(""))).status is NOT_SERVING
            service.release.set()


async def test_health_false_serves_no_health_service() -> None:
    async with rpc.open_server([TestService()], host="127.0.0.1", port=0, health=False) as server:
        assert server.health is None
        assert "trio_micro.health" not in server.services
