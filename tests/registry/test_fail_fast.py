"""Calls over a channel that follows a registry fail fast saying why (issue #15 defect 9):
the registry unreachable, the service without endpoints; and wait for ready waits instead.

A dead registry is a closed port on 127.0.0.1 (connection refused at once); the other
resolvers are in memory, on the autojump clock where no socket is involved.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import pytest
import trio
import trio.testing

from trio_micro import rpc
from trio_micro.registry import (
    Endpoint,
    MemoryRegistry,
    open_registry_client,
    open_registry_server,
)

from ..rpc.replicas import Empty, ReplicaService, address, wait_until
from ._etcd_server import free_port


async def test_a_dead_registry_fails_a_call_fast_naming_it() -> None:
    port = free_port()
    async with rpc.open_channel(f"registry://127.0.0.1:{port}/replica") as channel:
        with trio.fail_after(10), pytest.raises(rpc.RpcError) as info:  # not its 60 s
            with trio.move_on_after(60):
                await channel.stub(ReplicaService).whoami(Empty())
        assert info.value.code is rpc.Status.UNAVAILABLE
        assert info.value.message.startswith(
            f"service 'replica': registry unreachable at 127.0.0.1:{port}: "
        )
        assert channel.resolver_status.state == "unreachable"
        assert str(channel.resolver_status).startswith("unreachable (registry unreachable at")


async def test_a_registry_that_refuses_the_lookup_fails_a_call_with_its_refusal() -> None:
    # A registry protecting its lookups answers a wrong token UNAUTHENTICATED: the call says
    # so with that code (retrying won't help), not UNAVAILABLE "registry unreachable".
    async with (
        open_registry_server(port=0, token="the-token", protect_lookups=True) as server,
        open_registry_client(server.target, token="a-wrong-token") as reg,
        rpc.open_channel("replica", registry=reg) as channel,
    ):
        with trio.fail_after(10), pytest.raises(rpc.RpcError) as info:
            await channel.stub(ReplicaService).whoami(Empty())
    assert info.value.code is rpc.Status.UNAUTHENTICATED
    assert info.value.message == (
        f"service 'replica': the registry at {server.target} refused the lookup: "
        "wrong registry token"
    )


async def test_a_dead_registry_is_waited_for_when_waiting_for_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Virtual time: in real time a loaded machine could spend the 0.2 s before the
    # resolver's first refused connection, and the status would not be "unreachable" yet.
    port = free_port()
    async with rpc.open_channel(f"registry://127.0.0.1:{port}/replica") as channel:
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.2), rpc.wait_for_ready():
            await channel.stub(ReplicaService).whoami(Empty())
        assert channel.resolver_status.state == "unreachable"


class StatusListResolver:
    """A StatusResolver: yields what it is given, then waits forever."""

    def __init__(self, *items: Sequence[Endpoint] | rpc.ResolverStatus) -> None:
        self.items = items
        self.more = trio.Event()

    def watch(self, service: str) -> AsyncGenerator[Sequence[Endpoint], None]:
        raise AssertionError("a channel uses watch_status")  # pragma: no cover

    async def watch_status(
        self, service: str
    ) -> AsyncGenerator[Sequence[Endpoint] | rpc.ResolverStatus, None]:
        for item in self.items:
            yield item
            await self.more.wait()
            self.more = trio.Event()
        await trio.sleep_forever()


async def test_an_unreachable_status_fails_fast_until_the_resolver_answers() -> None:
    async with rpc.open_server([ReplicaService("a")], host="127.0.0.1", port=0) as server:
        resolver = StatusListResolver(
            rpc.ResolverStatus.unreachable("registry unreachable at h:1: down"),
            [Endpoint(address(server))],
        )
        async with rpc.open_channel("replica", registry=resolver) as channel:
            stub = channel.stub(ReplicaService)
            with pytest.raises(rpc.RpcError, match=r"^UNAVAILABLE: service 'replica': registry"):
                await stub.whoami(Empty())
            resolver.more.set()
            with trio.fail_after(10):
                await wait_until(lambda: channel.resolver_status.state == "resolved")
                assert (await stub.whoami(Empty())).name == "a"
            assert str(channel.resolver_status) == "resolved (1 endpoint)"


async def test_a_resolver_that_has_not_answered_is_waited_for_until_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = StatusListResolver()  # never answers
    async with rpc.open_channel("replica", registry=resolver) as channel:
        start = trio.current_time()
        # The caller's deadline cancels the wait (no longer 1 ms before it).
        with pytest.raises(trio.TooSlowError), trio.fail_after(2):
            await channel.stub(ReplicaService).whoami(Empty())
        assert trio.current_time() - start == 2
        assert str(channel.resolver_status) == "resolving"


async def test_a_resolver_that_has_not_answered_is_waited_for_at_most_discovery_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rpc.open_channel(
        "replica", registry=StatusListResolver(), discovery_timeout=3
    ) as channel:
        with pytest.raises(rpc.RpcError, match=r"within discovery_timeout .*resolver: resolving"):
            await channel.stub(ReplicaService).whoami(Empty())


class RaisingResolver:
    """A plain Resolver whose watch fails."""

    async def watch(self, service: str) -> AsyncGenerator[Sequence[Endpoint], None]:
        raise OSError("backend down")
        yield []  # pragma: no cover


async def test_a_failing_watch_is_an_unreachable_resolver(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rpc.open_channel("replica", registry=RaisingResolver()) as channel:
        with pytest.raises(rpc.RpcError, match="the resolver failed: OSError: backend down"):
            await channel.stub(ReplicaService).whoami(Empty())


async def test_no_endpoints_fails_fast_and_a_registered_one_is_found() -> None:
    registry = MemoryRegistry()
    async with (
        rpc.open_server([ReplicaService("a")], host="127.0.0.1", port=0) as server,
        rpc.open_channel("replica", registry=registry) as channel,
    ):
        stub = channel.stub(ReplicaService)
        with pytest.raises(
            rpc.RpcError, match=r"^UNAVAILABLE: service 'replica' has no endpoints$"
        ):
            await stub.whoami(Empty())
        async with registry.register("replica", address(server)):
            with trio.fail_after(10):
                await wait_until(lambda: channel.resolver_status.endpoints == 1)
                assert (await stub.whoami(Empty())).name == "a"


async def test_wait_for_ready_false_in_the_body_fails_fast_on_a_waiting_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rpc.open_channel(
        "replica", registry=MemoryRegistry(), wait_for_ready=True
    ) as channel:
        with pytest.raises(rpc.RpcError, match="has no endpoints"), rpc.wait_for_ready(False):
            await channel.stub(ReplicaService).whoami(Empty())


def test_resolver_status_is_checked_and_printed() -> None:
    assert str(rpc.ResolverStatus("resolving")) == "resolving"
    assert str(rpc.ResolverStatus("resolved", 2)) == "resolved (2 endpoints)"
    assert str(rpc.ResolverStatus.unreachable("why")) == "unreachable (why)"
    with pytest.raises(ValueError, match="state must be"):
        rpc.ResolverStatus("gone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="error must be"):
        rpc.ResolverStatus("unreachable")
    with pytest.raises(ValueError, match="endpoints must be"):
        rpc.ResolverStatus("resolved", -1)
    assert rpc.ResolverStatus.unreachable("why").code is rpc.Status.UNAVAILABLE
    with pytest.raises(ValueError, match="code must be a Status other than OK"):
        rpc.ResolverStatus.unreachable("why", rpc.Status.OK)


async def test_wait_for_ready_refuses_a_non_bool() -> None:
    with pytest.raises(TypeError, match="enabled must be a bool"), rpc.wait_for_ready(1):  # type: ignore[arg-type]
        pass  # pragma: no cover
    with pytest.raises(TypeError, match="wait_for_ready must be a bool"):
        async with rpc.open_channel("127.0.0.1:1", wait_for_ready="yes"):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_a_call_failing_fast_is_a_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A caller retrying in a loop must let the other tasks run (the cluster test's load
    # once made 50,000 failing calls a second and starved its own progress reports).
    async with rpc.open_channel("nobody", registry=MemoryRegistry()) as channel:
        stub = channel.stub(ReplicaService)
        with pytest.raises(rpc.RpcError):  # the resolver's first answer
            await stub.whoami(Empty())
        with trio.testing.assert_checkpoints(), pytest.raises(rpc.RpcError) as info:
            await stub.whoami(Empty())
    assert info.value.message == "service 'nobody' has no endpoints"
