"""MemoryRegistry timing, exact under an autojump MockClock."""

from __future__ import annotations

from contextlib import aclosing

import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro.registry import MemoryRegistry

A = "10.0.0.1:50051"


async def test_renewal_happens_every_third_of_the_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry()
    start = trio.current_time()
    async with registry.register("users", A, ttl=3.0) as registration:
        # Renewals at +1 and +2; dying at +2.5 leaves the entry until +2 + 3.
        await trio.sleep(2.5)
        registration._abandon()
    # Bounded: a lost expiry wake-up would otherwise leave no timer and hang the suite.
    with trio.fail_after(60):
        async with aclosing(registry.watch("users")) as updates:
            assert [e.address for e in await anext(updates)] == [A]
            assert await anext(updates) == []
    assert trio.current_time() - start == 5.0


async def test_expiry_wakes_a_watcher_with_no_other_activity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry()
    async with registry.register("users", A, ttl=6.0) as registration:
        registration._abandon()
    start = trio.current_time()
    with capture_logs() as logs, trio.fail_after(60):
        async with aclosing(registry.watch("users")) as updates:
            assert len(await anext(updates)) == 1
            assert await anext(updates) == []
    assert trio.current_time() - start == 6.0
    assert [entry["event"] for entry in logs] == [
        "registry.endpoint.added",
        "registry.endpoint.expired",
        "registry.endpoint.removed",
    ]
    expired = logs[1]
    assert (expired["service"], expired["address"]) == ("users", A)


async def test_renewal_of_a_held_entry_logs_no_lost_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry()
    with capture_logs() as logs:
        async with registry.register("users", A, ttl=3.0):
            await trio.sleep(10.0)
    assert [entry["event"] for entry in logs] == [
        "registry.endpoint.registered",
        "registry.endpoint.deregistered",
    ]
    assert logs[1] == {
        "event": "registry.endpoint.deregistered",
        "service": "users",
        "address": A,
        "backend": "memory",
        "log_level": "info",
    }


async def test_entry_lost_to_a_blocked_loop_is_put_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry()
    with capture_logs() as logs:
        async with registry.register("users", A, ttl=3.0):
            # Simulate the renewal task being starved past the TTL.
            registry._entries["users"].clear()
            await trio.sleep(1.0)
            assert [e.address for e in await registry.resolve("users")] == [A]
    lost = [entry for entry in logs if entry["event"] == "registry.lease.lost"]
    assert lost == [
        {
            "event": "registry.lease.lost",
            "service": "users",
            "address": A,
            "backend": "memory",
            "log_level": "warning",
        }
    ]


async def test_leaving_after_the_entry_was_lost_removes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry()
    with capture_logs() as logs:
        async with registry.register("users", A, ttl=3.0):
            registry._entries["users"].clear()  # lost, and not yet put back
    assert await registry.resolve("users") == []
    assert "registry.endpoint.deregistered" not in [entry["event"] for entry in logs]


async def test_the_default_ttl_is_ten_seconds() -> None:
    async with MemoryRegistry().register("users", A) as registration:
        assert registration.ttl == 10.0


async def test_a_waiting_watcher_sees_each_change_at_the_instant_it_happens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry()
    seen: list[tuple[float, list[str]]] = []

    async def watcher() -> None:
        async with aclosing(registry.watch("users")) as updates:
            async for endpoints in updates:  # appended as they come: the task is cancelled
                seen.append((trio.current_time(), [e.address for e in endpoints]))  # noqa: PERF401

    # Bounded: a lost wake-up leaves an empty service's watcher with no timer at all.
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher)
            await trio.sleep(1)
            async with registry.register("users", A, ttl=30.0):
                await trio.sleep(1)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert seen == [(0.0, []), (1.0, [A]), (2.0, [])]


async def test_registries_do_not_share_entries() -> None:
    first, second = MemoryRegistry(), MemoryRegistry()
    async with first.register("users", A):
        assert await second.resolve("users") == []
        async with second.register("users", A):
            assert len(await first.resolve("users")) == 1
