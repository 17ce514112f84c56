from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from examples.user_service.cache import TTLCache
from examples.user_service.database import UserDatabase, UserRow
from examples.user_service.service import (
    CreateUserRequest,
    GetUserRequest,
    ImportSummary,
    ListUsersRequest,
    UpdateUserRequest,
    UserService,
)
from trio_micro import rpc, testing


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[UserDatabase]:
    async with UserDatabase(tmp_path / "users.db") as database:
        await database.seed(100)
        yield database


@pytest.fixture
async def users(db: UserDatabase) -> AsyncIterator[UserService]:
    cache: TTLCache[int, UserRow | None] = TTLCache(max_size=1000, ttl=60)
    service = UserService(db, cache)
    async with testing.open_service([service], access_log=False) as harness:
        yield harness.stub(UserService)


async def test_get_user_comes_from_database_then_cache(users: UserService) -> None:
    first = await users.get_user(GetUserRequest(user_id=7))
    second = await users.get_user(GetUserRequest(user_id=7))
    assert first.source == "database"
    assert second.source == "cache"
    assert (first.user_id, first.email) == (7, "user7@example.com")
    assert (second.name, second.email) == (first.name, first.email)


async def test_article_workload_100_concurrent_requests_over_10_ids_query_the_db_10_times(
    users: UserService, db: UserDatabase
) -> None:
    reads_before = db.statistics().reads
    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(users.get_user, GetUserRequest(user_id=i % 10 + 1))
    assert db.statistics().reads - reads_before == 10


async def test_missing_user_is_not_found(users: UserService) -> None:
    with pytest.raises(rpc.RpcError) as exc:
        await users.get_user(GetUserRequest(user_id=1000))
    assert exc.value.code is rpc.Status.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (GetUserRequest(user_id=-1), "user_id"),
        (CreateUserRequest(name="", email="a@b.co"), "name"),
        (CreateUserRequest(name="Ada", email="not-an-email"), "email"),
        (UpdateUserRequest(user_id=1, name="Ada", email="a@@b"), "email"),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    users: UserService, request_: object, field: str
) -> None:
    method = {
        GetUserRequest: users.get_user,
        CreateUserRequest: users.create_user,
        UpdateUserRequest: users.update_user,
    }[type(request_)]
    with pytest.raises(rpc.RpcError) as exc:
        await method(request_)  # type: ignore[operator]
    assert exc.value.code is rpc.Status.INVALID_ARGUMENT
    assert field in exc.value.message


async def test_update_invalidates_the_cached_user(users: UserService) -> None:
    await users.get_user(GetUserRequest(user_id=3))
    await users.update_user(UpdateUserRequest(user_id=3, name="Grace H.", email="g@h.org"))
    after = await users.get_user(GetUserRequest(user_id=3))
    assert (after.name, after.source) == ("Grace H.", "database")


async def test_created_user_is_visible_even_after_a_cached_miss(users: UserService) -> None:
    with pytest.raises(rpc.RpcError):
        await users.get_user(GetUserRequest(user_id=101))  # caches "no such user"
    created = await users.create_user(CreateUserRequest(name="Barbara", email="b@l.org"))
    assert created.user_id == 101
    assert (await users.get_user(GetUserRequest(user_id=101))).name == "Barbara"


async def test_list_users_streams_every_user_in_pages(users: UserService) -> None:
    ids = [u.user_id async for u in users.list_users(ListUsersRequest(page_size=7))]
    assert ids == list(range(1, 101))


async def test_list_users_honours_after_id_and_limit(users: UserService) -> None:
    ids = [u.user_id async for u in users.list_users(ListUsersRequest(after_id=90, limit=5))]
    assert ids == [91, 92, 93, 94, 95]


async def test_import_users_creates_a_stream_of_users_in_batched_transactions(
    users: UserService,
) -> None:
    async with users.import_users() as (send, receive):
        for i in range(1200):
            await send.send(CreateUserRequest(name=f"New {i}", email=f"new{i}@example.com"))
        await send.aclose()
        summary = await receive.receive()
    assert summary == ImportSummary(1200, 3, 101, 1300)  # batches of IMPORT_BATCH=500
    assert (await users.get_user(GetUserRequest(user_id=1300))).name == "New 1199"


async def test_get_users_answers_each_requested_id_in_order(users: UserService) -> None:
    async with users.get_users() as (send, receive):
        for user_id in (3, 1, 3):
            await send.send(GetUserRequest(user_id=user_id))
            assert (await receive.receive()).user_id == user_id
        await send.send(GetUserRequest(user_id=999))
        with pytest.raises(rpc.RpcError) as info:
            await receive.receive()
    assert info.value.code is rpc.Status.NOT_FOUND
