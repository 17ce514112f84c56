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
    assert "registry.lease.lost" in [entry["event"] for entry in logs]


async def test_registries_do_not_share_entries() -> None:
    first, second = MemoryRegistry(), MemoryRegistry()
    async with first.register("users", A):
        assert await second.resolve("users") == []
        async with second.register("users", A):
            assert len(await first.resolve("users")) == 1
