"""A user's tests of their own service, written only against trio_micro.testing's fixtures
(turned on by ``trio_micro_fixtures = true`` in pyproject.toml) and public names: what
docs/testing.md shows. No import of a private module, nor of this repo's test helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from examples.user_service.cache import TTLCache
from examples.user_service.database import UserDatabase, UserRow
from examples.user_service.service import GetUserRequest, UserService
from trio_micro import rpc, testing


@pytest.fixture
async def rpc_services(tmp_path: Path) -> AsyncIterator[list[rpc.Service]]:
    async with UserDatabase(tmp_path / "users.db") as db:
        await db.seed(20)
        cache: TTLCache[int, UserRow | None] = TTLCache(max_size=100, ttl=60)
        yield [UserService(db, cache)]


@pytest.fixture
def users(rpc_channel: rpc.Channel) -> UserService:
    return rpc_channel.stub(UserService)


async def test_a_second_read_is_a_cache_hit_in_the_access_log(
    users: UserService, access_log: testing.AccessLog
) -> None:
    await users.get_user(GetUserRequest(user_id=7))
    await users.get_user(GetUserRequest(user_id=7))
    with trio.fail_after(5):
        records = await access_log.wait_for_calls(2)
    assert [(r["method"], r["code"], r["cache"]) for r in records] == [
        ("get_user", "OK", "miss"),
        ("get_user", "OK", "hit"),
    ]


async def test_a_missing_user_is_logged_as_not_found(
    users: UserService, access_log: testing.AccessLog
) -> None:
    with pytest.raises(rpc.RpcError) as info:
        await users.get_user(GetUserRequest(user_id=1000))
    assert info.value.code is rpc.Status.NOT_FOUND
    with trio.fail_after(5):
        [record] = await access_log.wait_for_calls(1)
    assert (record["event"], record["code"]) == ("rpc.call.failed", "NOT_FOUND")


async def test_the_service_is_found_in_the_registry(
    rpc_server: rpc.Server, memory_registry: testing.MemoryRegistry
) -> None:
    [endpoint] = await memory_registry.resolve("users")
    assert (endpoint.host, endpoint.port) == rpc_server.address


async def test_the_second_call_fails_when_told_to(
    users: UserService, fault_injector: testing.FaultInjector
) -> None:
    fault_injector.fail(rpc.Status.INTERNAL, "disk on fire", method="get_user", nth=2)
    await users.get_user(GetUserRequest(user_id=1))
    with pytest.raises(rpc.RpcError) as info:
        await users.get_user(GetUserRequest(user_id=1))
    assert (info.value.code, info.value.message) == (rpc.Status.INTERNAL, "disk on fire")
    assert (await users.get_user(GetUserRequest(user_id=1))).user_id == 1


async def test_the_channel_retries_a_call_refused_as_unavailable(
    users: UserService, fault_injector: testing.FaultInjector
) -> None:
    fault_injector.fail(rpc.Status.UNAVAILABLE, method="get_user", nth=1)
    assert (await users.get_user(GetUserRequest(user_id=1))).user_id == 1
    assert fault_injector.calls == [("users", "get_user")] * 2


async def test_a_dropped_connection_fails_the_call_as_unavailable(
    users: UserService, fault_injector: testing.FaultInjector
) -> None:
    # Every get_user, not only the first: get_user is idempotent, so the channel retries a
    # call whose connection broke, and a retry that found the channel reconnected (the
    # retry's jittered backoff against the reconnect's) would succeed.
    fault_injector.drop_connection(method="get_user")
    with pytest.raises(rpc.RpcError) as info:
        await users.get_user(GetUserRequest(user_id=1))
    assert info.value.code is rpc.Status.UNAVAILABLE
    assert ("users", "get_user") in fault_injector.calls


async def test_a_slow_handler_meets_the_deadline_in_mock_time(
    users: UserService,
    fault_injector: testing.FaultInjector,
    access_log: testing.AccessLog,
    autojump_clock: trio.testing.MockClock,
) -> None:
    fault_injector.delay(30, method="get_user")
    start = trio.current_time()
    with trio.move_on_after(1) as scope:
        await users.get_user(GetUserRequest(user_id=1))
    assert scope.cancelled_caught
    with trio.fail_after(5):
        [record] = await access_log.wait_for_calls(1)
    assert record["code"] == "DEADLINE_EXCEEDED"
    assert trio.current_time() - start < 30  # the handler's delay was cut short
