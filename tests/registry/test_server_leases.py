"""The registry server's lease arithmetic, driven in-process under an autojump clock.

The contract tests hold a registration for 1.5 TTLs over real sockets; these hold one for
many TTLs without real time passing, so a keep-alive that stops extending the lease shows as
a watcher seeing the replica vanish.
"""

from __future__ import annotations

from contextlib import aclosing
from functools import partial

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.registry import (
    MAX_TTL,
    RegistryServer,
    RegistryService,
    open_registry_server,
    serve_registry,
)
from trio_micro.registry._server import LeaseRequest, RegisterRequest, ServiceRequest

TTL = 1.0
A = "10.0.0.1:50051"
B = "10.0.0.2:50051"


async def watch(service: RegistryService, seen: list[tuple[float, list[str]]]) -> None:
    """Append each endpoint set the service's ``users`` watch yields, with its time."""
    updates = service.watch(ServiceRequest("users"))
    async with aclosing(updates):  # type: ignore[type-var]
        async for endpoint_set in updates:
            addresses = [record.address for record in endpoint_set.endpoints]
            seen.append((trio.current_time(), addresses))


async def test_a_lease_kept_alive_stays_registered_across_many_ttls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    seen: list[tuple[float, list[str]]] = []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, service, seen)
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


# --- warm-up after a restart: a reopened watch keeps its client's last set ----------------


async def first_answer(
    service: RegistryService, request: ServiceRequest
) -> tuple[float, list[str]]:
    """When the first endpoint set of a watch arrives, and its addresses."""
    start = trio.current_time()
    updates = service.watch(request)
    async with aclosing(updates):  # type: ignore[type-var]
        with trio.fail_after(60):
            answer = await anext(updates)
    return trio.current_time() - start, [record.address for record in answer.endpoints]


async def test_a_reopened_watch_of_an_empty_restarted_server_waits_for_a_registration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService(warmup=5.0)
    got: list[tuple[float, list[str]]] = []

    async def watch() -> None:
        got.append(await first_answer(service, ServiceRequest("users", known=True)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(0.4)  # the replica registers again at its next renewal
        await service.register(RegisterRequest("users", A, TTL))
    assert got == [(pytest.approx(0.4), [A])]


async def test_a_reopened_watch_hears_no_endpoints_when_the_warmup_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService(warmup=5.0)
    await trio.sleep(1.0)  # nothing served yet: the warm-up starts with the first call
    assert await first_answer(service, ServiceRequest("users", known=True)) == (
        pytest.approx(5.0),
        [],
    )
    # After the warm-up a reopened watch is answered at once.
    assert await first_answer(service, ServiceRequest("users", known=True)) == (0, [])


async def test_a_registry_servers_warmup_runs_from_when_it_listens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_registry_server(warmup=5.0) as server:
        await trio.sleep(3.0)  # no call yet: the warm-up started with the server anyway
        answer = await first_answer(server.service, ServiceRequest("users", known=True))
    assert answer == (pytest.approx(2.0), [])


@pytest.mark.parametrize(
    ("request_", "warmup"),
    [(ServiceRequest("users"), 5.0), (ServiceRequest("users", known=True), 0.0)],
    ids=["a-first-time-watcher", "warmup-off"],
)
async def test_an_unknown_service_is_answered_at_once(
    autojump_clock: trio.testing.MockClock, request_: ServiceRequest, warmup: float
) -> None:
    service = RegistryService(warmup=warmup)
    assert await first_answer(service, request_) == (0, [])


def test_a_bad_warmup_is_refused_naming_it() -> None:
    with pytest.raises(ValueError) as value_error:
        RegistryService(warmup=-1)
    assert str(value_error.value) == "warmup must be a finite number >= 0 (seconds), got -1"
    with pytest.raises(TypeError) as type_error:
        RegistryService(warmup="5")  # type: ignore[arg-type]
    assert str(type_error.value) == "warmup must be an int or float (seconds), got '5'"


async def resolved(service: RegistryService) -> list[str]:
    return [record.address for record in (await service.resolve(ServiceRequest("users"))).endpoints]


async def test_expiry_goes_on_past_the_item_of_a_deregistered_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    gone = await service.register(RegisterRequest("users", A, TTL / 2))
    await service.register(RegisterRequest("users", B, TTL))
    await service.deregister(LeaseRequest(gone.lease_id))  # its heap item stays, stale
    await trio.sleep(TTL)
    assert await resolved(service) == []


async def test_expiry_goes_on_past_the_item_of_a_renewed_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    renewed = await service.register(RegisterRequest("users", A, TTL / 2))
    await service.register(RegisterRequest("users", B, TTL * 0.6))
    await trio.sleep(TTL * 0.4)
    await service.keep_alive(LeaseRequest(renewed.lease_id))  # now expires at 0.9 TTL
    await trio.sleep(TTL * 0.2)  # 0.6 TTL: A's first item surfaces early, B's is due
    assert await resolved(service) == [A]


async def test_the_expiry_heap_is_compacted_only_past_twice_the_leases_plus_64(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Compaction rebuilds the heap (O(n)); waiting for n + 64 stale items between two
    # rebuilds keeps its cost O(1) per call, and the heap at most 2n + 65 items.
    service = RegistryService()
    for port in range(1000, 1100):
        await service.register(RegisterRequest("live", f"10.0.0.1:{port}", MAX_TTL))
    sizes = []
    for _ in range(300):
        grant = await service.register(RegisterRequest("users", A, MAX_TTL))
        sizes.append(len(service._expiries))
        await service.deregister(LeaseRequest(grant.lease_id))
    assert len(service._leases) == 100
    assert max(sizes) == 2 * 100 + 64 + 1  # 2n + 64 live and stale items, then the new one
    assert sizes[sizes.index(max(sizes)) + 1] == 100 + 1  # rebuilt from the live leases


async def test_deregistering_every_address_of_a_service_forgets_the_service(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    for name in ("users", "orders"):
        grant = await service.register(RegisterRequest(name, A, TTL))
        await service.deregister(LeaseRequest(grant.lease_id))
    assert service._entries == {}


async def test_a_parked_watcher_is_woken_by_a_deregistration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    seen: list[tuple[float, list[str]]] = []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, service, seen)
        grant = await service.register(RegisterRequest("users", A, MAX_TTL))
        await trio.testing.wait_all_tasks_blocked()  # parked until the lease's expiry
        start = trio.current_time()
        await service.deregister(LeaseRequest(grant.lease_id))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert seen[-2:] == [(start, [A]), (start, [])]


async def test_serve_registry_hands_start_the_server_it_runs_on_loopback() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_registry)
        assert isinstance(server, RegistryServer)
        assert server.address[0] == "127.0.0.1"
        other = await nursery.start(serve_registry)  # the default port 0: another free one
        assert other.address[1] != server.address[1]
        nursery.cancel_scope.cancel()


async def test_serve_registry_binds_the_port_it_is_given() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_registry)
        with pytest.raises(OSError):
            await nursery.start(partial(serve_registry, port=server.address[1]))
        nursery.cancel_scope.cancel()


async def test_serve_registry_passes_the_token_on() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_registry, token="s3cret"))
        async with rpc.open_channel(server.target) as channel:
            with pytest.raises(rpc.RpcError) as info, trio.fail_after(10):
                await channel.stub(RegistryService).keep_alive(LeaseRequest(1))
        assert info.value.code is rpc.Status.UNAUTHENTICATED
        nursery.cancel_scope.cancel()
