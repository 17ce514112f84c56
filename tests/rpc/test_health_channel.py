"""Channels that watch health (open_channel(health_check=...)) skip NOT_SERVING endpoints."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio
import trio.testing

from trio_micro import rpc

from .replicas import Empty, ReplicaService, address, wait_until


async def _servers(
    stack: AsyncExitStack, *services: ReplicaService, **options: bool
) -> list[rpc.Server]:
    return [
        await stack.enter_async_context(
            rpc.open_server([s], host="127.0.0.1", port=0, **options)  # type: ignore[arg-type]
        )
        for s in services
    ]


async def test_a_not_serving_endpoint_gets_no_calls_until_it_serves_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ReplicaService("a"), ReplicaService("b")
    async with AsyncExitStack() as stack:
        servers = await _servers(stack, a, b)
        channel = await stack.enter_async_context(
            rpc.open_channel([address(s) for s in servers], health_check="")
        )
        await wait_until(lambda: channel.statistics().ready == 2)
        health = servers[0].health
        assert health is not None
        health.set_status("", rpc.HealthStatus.NOT_SERVING)
        await wait_until(lambda: channel.statistics().ready == 1)
        stub = channel.stub(ReplicaService)
        names = {(await stub.whoami(Empty())).name for _ in range(20)}
        assert names == {"b"}
        health.set_status("", rpc.HealthStatus.SERVING)
        await wait_until(lambda: channel.statistics().ready == 2)


async def test_calls_fail_fast_when_every_endpoint_is_not_serving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with AsyncExitStack() as stack:
        [server] = await _servers(stack, ReplicaService("a"))
        channel = await stack.enter_async_context(
            rpc.open_channel(address(server), health_check="replica")
        )
        await wait_until(lambda: channel.statistics().ready == 1)
        assert server.health is not None
        server.health.set_status("replica", rpc.HealthStatus.NOT_SERVING)
        await wait_until(lambda: channel.statistics().ready == 0)
        with pytest.raises(rpc.RpcError) as info:
            await channel.stub(ReplicaService).whoami(Empty())
        assert info.value.code is rpc.Status.UNAVAILABLE
        assert "NOT_SERVING" in info.value.message


async def test_a_server_without_health_counts_as_serving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with AsyncExitStack() as stack:
        [server] = await _servers(stack, ReplicaService("a"), health=False)
        channel = await stack.enter_async_context(
            rpc.open_channel(address(server), health_check="")
        )
        assert (await channel.stub(ReplicaService).whoami(Empty())).name == "a"
        await trio.testing.wait_all_tasks_blocked()
        assert channel.statistics().ready == 1


async def test_health_check_must_be_a_str() -> None:
    with pytest.raises(TypeError, match="health_check"):
        async with rpc.open_channel("127.0.0.1:1", health_check=1):  # type: ignore[arg-type]
            pass  # pragma: no cover
