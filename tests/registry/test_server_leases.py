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
    with pytest.raises(ValueError, match="warmup must be a finite number >= 0"):
        RegistryService(warmup=-1)
    with pytest.raises(TypeError, match="warmup must be an int or float"):
        RegistryService(warmup="5")  # type: ignore[arg-type]
