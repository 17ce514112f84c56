"""The registry server's lease arithmetic, driven in-process under an autojump clock.

The contract tests hold a registration for 1.5 TTLs over real sockets; these hold one for
many TTLs without real time passing, so a keep-alive that stops extending the lease shows as
a watcher seeing the replica vanish.
"""

from __future__ import annotations

from contextlib import aclosing

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.registry import RegistryService, open_registry_server
from trio_micro.registry._server import LeaseRequest, RegisterRequest, ServiceRequest

TTL = 1.0
A = "10.0.0.1:50051"


async def test_a_lease_kept_alive_stays_registered_across_many_ttls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    seen: list[tuple[float, list[str]]] = []

    async def watch() -> None:
        updates = service.watch(ServiceRequest("users"))
        async with aclosing(updates):  # type: ignore[type-var]
            async for endpoint_set in updates:
                addresses = [record.address for record in endpoint_set.endpoints]
                seen.append((trio.current_time(), addresses))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        grant = await service.register(RegisterRequest("users", A, TTL))
        # Renew at ttl/3, as the registry client does, for 6 TTLs.
        for _ in range(18):
            await trio.sleep(TTL / 3)
            response = await service.keep_alive(LeaseRequest(grant.lease_id))
            assert response.ttl == TTL
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [addresses for _, addresses in seen] == [[], [A]]


async def test_a_lease_not_kept_alive_expires_after_its_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    grant = await service.register(RegisterRequest("users", A, TTL))
    start = trio.current_time()
    await trio.sleep(TTL * 0.9)
    await service.keep_alive(LeaseRequest(grant.lease_id))  # extends to 1.9 TTL
    await trio.sleep(TTL * 0.9)  # 1.8 TTL: alive only thanks to the keep-alive
    assert [r.address for r in (await service.resolve(ServiceRequest("users"))).endpoints] == [A]
    await trio.sleep(TTL * 0.2)  # 2.0 TTL: past the extended expiry
    assert trio.current_time() - start == pytest.approx(2 * TTL)
    assert (await service.resolve(ServiceRequest("users"))).endpoints == []
    with pytest.raises(rpc.RpcError) as info:
        await service.keep_alive(LeaseRequest(grant.lease_id))
    assert info.value.code is rpc.Status.NOT_FOUND


async def test_a_replaced_lease_is_forgotten_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A client that re-registers the same address every half TTL: each new lease replaces
    # (revokes) the previous one, so only the owner of the address stays in memory.
    service = RegistryService()
    for _ in range(20):
        await service.register(RegisterRequest("users", A, TTL))
        await trio.sleep(TTL / 2)
    assert len(service._leases) == 1
    endpoints = (await service.resolve(ServiceRequest("users"))).endpoints
    assert [record.address for record in endpoints] == [A]


async def test_a_bad_registration_is_invalid_argument_with_the_reason() -> None:
    service = RegistryService()
    with pytest.raises(rpc.RpcError) as info:
        await service.register(RegisterRequest("users", A, -1.0))
    assert info.value.code is rpc.Status.INVALID_ARGUMENT
    assert info.value.message == "ttl must be a finite number > 0 (seconds), got -1.0"


async def test_a_lease_expires_exactly_at_its_ttl(autojump_clock: trio.testing.MockClock) -> None:
    service = RegistryService()
    await service.register(RegisterRequest("users", A, TTL))
    await trio.sleep(TTL)
    assert (await service.resolve(ServiceRequest("users"))).endpoints == []


async def test_an_expiry_is_logged_with_the_service_and_address(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    await service.register(RegisterRequest("users", A, TTL))
    await trio.sleep(TTL)
    with capture_logs() as logs:
        await service.resolve(ServiceRequest("users"))
    assert [(e["event"], e["service"], e["address"]) for e in logs] == [
        ("registry.server.expired", "users", A)
    ]


async def test_close_ends_every_watch(autojump_clock: trio.testing.MockClock) -> None:
    service = RegistryService()
    updates = service.watch(ServiceRequest("users"))
    async with aclosing(updates):  # type: ignore[type-var]
        with trio.fail_after(1):
            assert (await anext(updates)).endpoints == []
            service.close()
            with pytest.raises(StopAsyncIteration):
                await anext(updates)


async def test_the_registry_server_exposes_the_service_it_serves() -> None:
    async with open_registry_server(port=0) as server:
        assert isinstance(server.service, RegistryService)
        resolved = await server.service.resolve(ServiceRequest("users"))
        assert resolved.endpoints == []
