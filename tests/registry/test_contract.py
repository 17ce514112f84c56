"""The behaviour every registry backend shares, run against each of them.

Each test takes the ``registry`` fixture (parametrized over the backends) and ``clock``:
an autojump ``MockClock`` for the memory backend, real time (``None``) for etcd, whose TTLs
run in the etcd process. Waits are bounded with ``trio.fail_after`` and wait for a
condition (the next watch item), never for a fixed time, except where holding a
registration past its TTL is the point.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro.registry import (
    DuplicateRegistrationError,
    Endpoint,
    EtcdRegistry,
    Registry,
    RegistryClient,
)

TTL = 2.0  # etcd's minimum lease TTL
HELD_TTL = 30.0  # a lease that outlives a test's waits even with a starved keep-alive
WAIT = 10.0  # bound on anything that should happen "soon" (real time for etcd)
A = "10.0.0.1:50051"
B = "10.0.0.2:50051"


def addresses(endpoints: list[Endpoint]) -> list[str]:
    return [endpoint.address for endpoint in endpoints]


async def next_set(updates: AsyncGenerator[list[Endpoint], None]) -> list[str]:
    with trio.fail_after(WAIT):
        return addresses(await anext(updates))


def expiry_slack(registry: Registry) -> float:
    # etcd checks for expired leases every 500 ms and revokes them through raft; the
    # registry server expires on time, but its clock and ours are both real.
    if isinstance(registry, EtcdRegistry):
        return 2.0
    return 0.5 if isinstance(registry, RegistryClient) else 0.0


async def test_unknown_service_resolves_to_no_endpoints(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    assert await registry.resolve("nobody-registered-this") == []


async def test_registered_endpoint_resolves_with_its_metadata(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with registry.register("users", A, ttl=TTL, metadata={"zone": "a"}) as registration:
        assert await registry.resolve("users") == [Endpoint(A, {"zone": "a"})]
        assert registration.endpoint == Endpoint(A, {"zone": "a"})
        assert registration.service == "users"
        assert registration.ttl >= TTL


async def test_replicas_resolve_sorted_by_address(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with registry.register("users", B, ttl=TTL), registry.register("users", A, ttl=TTL):
        assert addresses(await registry.resolve("users")) == [A, B]


async def test_exit_deregisters(registry: Registry, clock: trio.testing.MockClock | None) -> None:
    async with registry.register("users", A, ttl=TTL):
        pass
    assert await registry.resolve("users") == []


async def test_error_in_body_deregisters_and_comes_out_unwrapped(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    with pytest.raises(KeyError, match="boom"):
        async with registry.register("users", A, ttl=TTL):
            raise KeyError("boom")
    assert await registry.resolve("users") == []


async def test_cancelled_registration_deregisters(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    with trio.CancelScope() as scope:
        async with registry.register("users", A, ttl=TTL):
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert await registry.resolve("users") == []


async def test_registration_outlives_its_ttl_while_held(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with registry.register("users", A, ttl=TTL) as registration:
        await trio.sleep(registration.ttl * 1.5)
        assert addresses(await registry.resolve("users")) == [A]


async def test_dead_replica_disappears_within_its_ttl(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with aclosing(registry.watch("users")) as updates:
        assert await next_set(updates) == []
        async with registry.register("users", A, ttl=TTL) as registration:
            assert await next_set(updates) == [A]
            registration._abandon()  # as if the process died: no renewal, no deregistration
            died_at = trio.current_time()
        assert addresses(await registry.resolve("users")) == [A]
        with trio.fail_after(registration.ttl + expiry_slack(registry) + WAIT):
            assert await next_set(updates) == []
        assert trio.current_time() - died_at <= registration.ttl + expiry_slack(registry)
    assert await registry.resolve("users") == []


async def test_watch_starts_with_the_current_set(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with (
        registry.register("users", A, ttl=TTL, metadata={"v": "1"}),
        aclosing(registry.watch("users")) as updates,
    ):
        with trio.fail_after(WAIT):
            assert await anext(updates) == [Endpoint(A, {"v": "1"})]


async def test_watch_follows_registrations_and_deregistrations(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with aclosing(registry.watch("users")) as updates:
        assert await next_set(updates) == []
        async with registry.register("users", A, ttl=TTL):
            assert await next_set(updates) == [A]
            async with registry.register("users", B, ttl=TTL):
                assert await next_set(updates) == [A, B]
            assert await next_set(updates) == [A]
        assert await next_set(updates) == []


async def test_watch_sees_new_metadata_of_the_same_address(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with aclosing(registry.watch("users")) as updates:
        assert await next_set(updates) == []
        async with registry.register("users", A, ttl=TTL, metadata={"v": "1"}):
            assert await next_set(updates) == [A]
        assert await next_set(updates) == []
        async with registry.register("users", A, ttl=TTL, metadata={"v": "2"}):
            with trio.fail_after(WAIT):
                assert await anext(updates) == [Endpoint(A, {"v": "2"})]


async def test_services_with_a_common_name_prefix_stay_apart(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with (
        registry.register("users", A, ttl=TTL),
        registry.register("users-admin", B, ttl=TTL),
    ):
        assert addresses(await registry.resolve("users")) == [A]
        assert addresses(await registry.resolve("users-admin")) == [B]
        async with aclosing(registry.watch("users")) as updates:
            assert await next_set(updates) == [A]


async def test_duplicate_registration_is_refused(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with registry.register("users", A, ttl=TTL):
        with pytest.raises(DuplicateRegistrationError, match=r"'10\.0\.0\.1:50051'.*'users'"):
            async with registry.register("users", A, ttl=TTL):
                pytest.fail("entered a duplicate registration")  # pragma: no cover
        # The refused duplicate did not disturb the first registration.
        assert addresses(await registry.resolve("users")) == [A]
    assert await registry.resolve("users") == []


async def test_same_address_may_register_again_after_exit(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with registry.register("users", A, ttl=TTL):
        pass
    async with registry.register("users", A, ttl=TTL, metadata={"v": "2"}):
        assert await registry.resolve("users") == [Endpoint(A, {"v": "2"})]


async def test_restarted_replica_replaces_its_dead_entry(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with registry.register("users", A, ttl=TTL, metadata={"v": "1"}) as old:
        old._abandon()
    # The new registration's TTL is longer than the wait below: under machine load a
    # starved keep-alive of a 2 s lease can lose it (real time for etcd and the server),
    # and a keep-alive re-registering after the loss could hide the bug this looks for.
    async with registry.register("users", A, ttl=HELD_TTL, metadata={"v": "2"}):
        assert await registry.resolve("users") == [Endpoint(A, {"v": "2"})]
        # The dead entry's expiry must not take the new registration with it.
        await trio.sleep(old.ttl + expiry_slack(registry))
        assert await registry.resolve("users") == [Endpoint(A, {"v": "2"})]


async def test_equivalent_address_spellings_are_one_endpoint(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    async with registry.register("users", "[0:0::1]:8080", ttl=TTL):
        assert addresses(await registry.resolve("users")) == ["[::1]:8080"]
        with pytest.raises(DuplicateRegistrationError):
            async with registry.register("users", "[::1]:08080", ttl=TTL):
                pass  # pragma: no cover


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("localhost", "must look like"),
        (":50051", "must look like"),
        ("host:", "decimal port"),
        ("host:http", "decimal port"),
        ("host:0", r"\[1, 65535\]"),
        ("host:70000", r"\[1, 65535\]"),
        ("::1:50051", "needs brackets"),
        ("[not-ipv6]:50051", "no valid IPv6"),
        ("300.1.1.1:80", "not a valid IPv4"),
        ("bad host:80", "DNS name"),
        ("http://host:80", "without a scheme"),
        ("host:80/path", "without a scheme"),
    ],
)
async def test_malformed_address_is_refused_before_any_io(
    registry: Registry, clock: trio.testing.MockClock | None, address: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        registry.register("users", address)
    assert repr(address) in str(info.value)


@pytest.mark.parametrize("service", ["", "a/b", "users ", "-users", "x" * 129, "usérs"])
async def test_bad_service_name_is_refused(
    registry: Registry, clock: trio.testing.MockClock | None, service: str
) -> None:
    with pytest.raises(ValueError, match="service must be") as info:
        registry.register(service, A)
    assert repr(service) in str(info.value)
    with pytest.raises(ValueError, match="service must be"):
        await registry.resolve(service)
    with pytest.raises(ValueError, match="service must be"):
        async with aclosing(registry.watch(service)) as updates:
            await anext(updates)


async def test_wrong_argument_types_are_refused(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    with pytest.raises(TypeError, match="service must be a str"):
        registry.register(b"users", A)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="address must be a str"):
        registry.register("users", ("10.0.0.1", 50051))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metadata must map str to str"):
        registry.register("users", A, metadata={"weight": 3})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="ttl must be"):
        registry.register("users", A, ttl=True)


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan"), float("inf")])
async def test_bad_ttl_is_refused(
    registry: Registry, clock: trio.testing.MockClock | None, ttl: float
) -> None:
    with pytest.raises(ValueError, match="ttl must be"):
        registry.register("users", A, ttl=ttl)


async def test_registration_and_watch_are_logged(
    registry: Registry, clock: trio.testing.MockClock | None
) -> None:
    with capture_logs() as logs:
        async with aclosing(registry.watch("users")) as updates:
            assert await next_set(updates) == []
            async with registry.register("users", A, ttl=TTL, metadata={"zone": "a"}):
                assert await next_set(updates) == [A]
            assert await next_set(updates) == []
    # The registry server logs its own side (registry.server.*) when it runs in-process.
    events = [
        (entry["event"], entry.get("address"))
        for entry in logs
        if not entry["event"].startswith(("registry.server.", "rpc."))
    ]
    assert events == [
        ("registry.endpoint.registered", A),
        ("registry.endpoint.added", A),
        ("registry.endpoint.deregistered", A),
        ("registry.endpoint.removed", A),
    ]
    added = next(entry for entry in logs if entry["event"] == "registry.endpoint.added")
    assert added["service"] == "users"
    assert added["metadata"] == {"zone": "a"}
