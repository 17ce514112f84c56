"""A lease owns its entry: takeovers are reported to the owner, who registers again.

Issue #15, defect 4: another registrant of the same address (``serve --advertise`` of
someone else's address, or a hostile ``register`` then ``deregister``) must not remove a
live replica for good. The server revokes the replaced lease, so the owner's next
``keep_alive`` answers ``NOT_FOUND`` and its client registers again. Also here: the TTL cap
and the bounds on the server's lease table.
"""

from __future__ import annotations

from contextlib import aclosing

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.registry import (
    MAX_TTL,
    MemoryRegistry,
    RegistryService,
    open_registry_client,
    open_registry_server,
)
from trio_micro.registry import _server as server_module
from trio_micro.registry._server import LeaseRequest, RegisterRequest, ServiceRequest

A = "10.0.0.1:50051"
B = "10.0.0.2:50051"
TTL = 1.0


async def test_the_replaced_owners_keep_alive_answers_not_found(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    owner = await service.register(RegisterRequest("users", A, TTL))
    await service.register(RegisterRequest("users", A, TTL))
    with pytest.raises(rpc.RpcError) as info:
        await service.keep_alive(LeaseRequest(owner.lease_id))
    assert info.value.code is rpc.Status.NOT_FOUND


async def test_the_replaced_owners_deregister_leaves_the_new_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    owner = await service.register(RegisterRequest("users", A, TTL))
    await service.register(RegisterRequest("users", A, TTL))
    await service.deregister(LeaseRequest(owner.lease_id))
    endpoints = (await service.resolve(ServiceRequest("users"))).endpoints
    assert [record.address for record in endpoints] == [A]


async def test_a_takeover_is_logged_by_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    owner = await service.register(RegisterRequest("users", A, TTL))
    with capture_logs() as logs:
        await service.register(RegisterRequest("users", A, TTL))
    replaced = [entry for entry in logs if entry["event"] == "registry.server.replaced"]
    assert [(e["address"], e["lease_id"]) for e in replaced] == [(A, owner.lease_id)]


async def test_a_hijacked_address_is_registered_again_by_its_owner() -> None:
    # Real sockets, so real time: a TTL of 0.3 s renews every 0.1 s.
    ttl = 0.3
    async with (
        open_registry_server(port=0) as server,
        open_registry_client(server.target) as owner,
        open_registry_client(server.target) as intruder,
    ):
        with capture_logs() as logs:
            async with owner.register("users", A, ttl=ttl):
                async with intruder.register("users", A, ttl=ttl):
                    pass  # register, then deregister: the entry is gone for now
                assert await owner.resolve("users") == []
                with trio.fail_after(5):
                    async with aclosing(owner.watch("users")) as updates:
                        async for endpoints in updates:
                            if [e.address for e in endpoints] == [A]:
                                break
    lost = [entry for entry in logs if entry["event"] == "registry.lease.lost"]
    assert [entry["address"] for entry in lost] == [A]


async def test_a_ttl_above_the_cap_is_invalid_argument_at_the_server() -> None:
    service = RegistryService()
    with pytest.raises(rpc.RpcError) as info:
        await service.register(RegisterRequest("users", A, 1e9))
    assert info.value.code is rpc.Status.INVALID_ARGUMENT
    assert "at most 300 seconds" in info.value.message


def test_a_ttl_above_the_cap_is_refused_by_register() -> None:
    with pytest.raises(ValueError, match="ttl must be at most 300 seconds"):
        MemoryRegistry().register("users", A, ttl=MAX_TTL * 2)


async def test_the_cap_itself_is_a_valid_ttl(autojump_clock: trio.testing.MockClock) -> None:
    service = RegistryService()
    grant = await service.register(RegisterRequest("users", A, MAX_TTL))
    assert grant.ttl == MAX_TTL


async def test_registrations_beyond_the_lease_limit_are_resource_exhausted(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "MAX_LEASES", 1)
    service = RegistryService()
    await service.register(RegisterRequest("users", A, TTL))
    with pytest.raises(rpc.RpcError) as info:
        await service.register(RegisterRequest("users", B, TTL))
    assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED


async def test_re_registering_an_owned_address_is_allowed_at_the_lease_limit(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "MAX_LEASES", 1)
    service = RegistryService()
    await service.register(RegisterRequest("users", A, TTL))
    await service.register(RegisterRequest("users", A, TTL))  # replaces: no new lease
    assert len(service._leases) == 1


async def test_expired_leases_are_dropped_by_the_next_register(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    for port in range(1000, 1100):
        await service.register(RegisterRequest("users", f"10.0.0.1:{port}", TTL))
    await trio.sleep(TTL)
    await service.register(RegisterRequest("other", A, TTL))
    assert len(service._leases) == 1


async def test_register_deregister_churn_keeps_the_expiry_heap_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    for _ in range(1000):
        grant = await service.register(RegisterRequest("users", A, MAX_TTL))
        await service.deregister(LeaseRequest(grant.lease_id))
    assert len(service._expiries) <= 2 * len(service._leases) + 64


async def test_a_renewed_lease_outlives_its_first_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = RegistryService()
    grant = await service.register(RegisterRequest("users", A, TTL))
    for _ in range(10):
        await trio.sleep(TTL / 2)
        await service.keep_alive(LeaseRequest(grant.lease_id))
    endpoints = (await service.resolve(ServiceRequest("users"))).endpoints
    assert [record.address for record in endpoints] == [A]
