"""The order service: CreateOrder checks the user with the user service, across a trace
and under the caller's deadline; bad input and a users outage get clear statuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from examples.orders.service import (
    MAX_QUANTITY,
    CreateOrderRequest,
    GetOrderRequest,
    ListOrdersRequest,
    Order,
    OrderService,
)
from trio_micro import rpc

from .system import (
    USERS,
    StuckUsers,
    address,
    call_records,
    json_log,
    open_orders,
    open_server,
    open_users,
    seeded_users,
)


def create(user_id: int = 1, item: str = "book", quantity: int = 2) -> CreateOrderRequest:
    return CreateOrderRequest(user_id=user_id, item=item, quantity=quantity)


async def test_create_order_stores_it_and_get_order_returns_it(tmp_path: Path) -> None:
    async with (
        open_users(await seeded_users(tmp_path)) as users,
        open_orders(tmp_path, address(users)) as (_, channel),
    ):
        orders = channel.stub(OrderService)
        order = await orders.create_order(create(user_id=3, quantity=5))
        assert order == Order(order_id=1, user_id=3, item="book", quantity=5)
        assert await orders.get_order(GetOrderRequest(order_id=1)) == order


async def test_a_missing_order_is_not_found(tmp_path: Path) -> None:
    async with (
        open_users(await seeded_users(tmp_path)) as users,
        open_orders(tmp_path, address(users)) as (_, channel),
    ):
        with pytest.raises(rpc.RpcError, match="no order with order_id=7") as info:
            await channel.stub(OrderService).get_order(GetOrderRequest(order_id=7))
    assert info.value.code is rpc.Status.NOT_FOUND


async def test_create_order_is_the_parent_span_of_the_get_user_behind_it(tmp_path: Path) -> None:
    with json_log() as log:
        async with (
            open_users(await seeded_users(tmp_path)) as users,
            open_orders(tmp_path, address(users)) as (_, channel),
        ):
            await channel.stub(OrderService).create_order(create())
        records = {r.method: r for r in call_records(log)}
    create_order, get_user = records["create_order"], records["get_user"]
    assert (create_order.service, get_user.service) == ("orders", "users")
    assert create_order.parent_span_id is None  # the test's call is the root
    assert get_user.trace_id == create_order.trace_id is not None
    assert get_user.parent_span_id == create_order.span_id is not None


async def test_a_deadline_on_create_order_cancels_the_get_user_behind_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    stuck = StuckUsers()
    with json_log() as log:
        async with (
            open_server(stuck) as users,
            open_orders(tmp_path, address(users)) as (_, channel),
        ):
            with trio.move_on_after(1) as scope:
                await channel.stub(OrderService).create_order(create())
            assert scope.cancelled_caught
            with trio.fail_after(5):
                await stuck.cancelled.wait()
        records = {r.method: r for r in call_records(log)}
    get_user = records["get_user"]  # the users replica's own access log
    assert get_user.code in {"DEADLINE_EXCEEDED", "CANCELLED"}
    assert get_user.duration_ms <= 1000
    assert get_user.parent_span_id == records["create_order"].span_id


async def test_concurrent_orders_of_a_hot_user_make_one_get_user(tmp_path: Path) -> None:
    with json_log() as log:
        async with (
            open_users(await seeded_users(tmp_path)) as users,
            open_orders(tmp_path, address(users)) as (_, channel),
        ):
            orders = channel.stub(OrderService)
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(orders.create_order, create(user_id=4))
            await orders.create_order(create(user_id=4))  # later: from the cache
        methods = [r.method for r in call_records(log)]
    assert methods.count("create_order") == 21
    assert methods.count("get_user") == 1


async def test_an_unknown_user_is_a_failed_precondition(tmp_path: Path) -> None:
    async with (
        open_users(await seeded_users(tmp_path)) as users,
        open_orders(tmp_path, address(users)) as (orders, channel),
    ):
        with pytest.raises(rpc.RpcError, match=f"no user with user_id={USERS + 1}") as info:
            await channel.stub(OrderService).create_order(create(user_id=USERS + 1))
        assert await orders.db.list_orders(after_id=0, limit=10) == []
    assert info.value.code is rpc.Status.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"user_id": 1, "item": "book", "quantity": -1}, "quantity"),
        ({"user_id": 1, "item": "book", "quantity": 0}, "quantity"),
        ({"user_id": 1, "item": "book", "quantity": MAX_QUANTITY + 1}, "quantity"),
        ({"user_id": 1, "item": "x" * 201, "quantity": 1}, "item"),
        ({"user_id": 1, "item": " ", "quantity": 1}, "item"),
        ({"user_id": 0, "item": "book", "quantity": 1}, "user_id"),
    ],
)
async def test_bad_orders_are_invalid_argument_naming_the_field(
    tmp_path: Path, request_: dict[str, object], field: str
) -> None:
    async with (
        open_users(await seeded_users(tmp_path)) as users,
        open_orders(tmp_path, address(users)) as (orders, channel),
    ):
        with pytest.raises(rpc.RpcError, match=field) as info:
            await channel.call("orders/create_order", request_)
        assert await orders.db.list_orders(after_id=0, limit=10) == []
    assert info.value.code is rpc.Status.INVALID_ARGUMENT


async def test_an_order_larger_than_a_frame_is_refused(tmp_path: Path) -> None:
    async with (
        open_users(await seeded_users(tmp_path)) as users,
        open_orders(tmp_path, address(users)) as (orders, channel),
    ):
        request = {"user_id": 1, "item": "x" * 20_000_000, "quantity": 1}
        with pytest.raises(rpc.RpcError, match="max_frame_size") as info:
            await channel.call("orders/create_order", request)
        assert await orders.db.list_orders(after_id=0, limit=10) == []
    assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED


async def test_users_down_is_unavailable_without_a_hang(tmp_path: Path) -> None:
    async with open_server(StuckUsers()) as gone:
        down = address(gone)  # nobody listens there any more
    async with open_orders(tmp_path, down) as (orders, channel):
        with trio.fail_after(10), pytest.raises(rpc.RpcError, match="users service") as info:
            await channel.stub(OrderService).create_order(create())
        assert await orders.db.list_orders(after_id=0, limit=10) == []
    assert info.value.code is rpc.Status.UNAVAILABLE


async def test_users_not_answering_is_unavailable_after_users_timeout(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with (
        open_server(StuckUsers()) as users,
        open_orders(tmp_path, address(users), users_timeout="2") as (_, channel),
    ):
        start = trio.current_time()
        with pytest.raises(rpc.RpcError, match="did not answer within 2 s") as info:
            await channel.stub(OrderService).create_order(create())  # no deadline
        assert trio.current_time() - start == pytest.approx(2, abs=0.1)
    assert info.value.code is rpc.Status.UNAVAILABLE


async def test_list_orders_streams_a_users_orders_in_id_order(tmp_path: Path) -> None:
    async with (
        open_users(await seeded_users(tmp_path)) as users,
        open_orders(tmp_path, address(users)) as (_, channel),
    ):
        orders = channel.stub(OrderService)
        for user_id in (1, 2, 1, 1):
            await orders.create_order(create(user_id=user_id))
        listed = [o async for o in orders.list_orders(ListOrdersRequest(user_id=1, page_size=2))]
    assert [o.order_id for o in listed] == [1, 3, 4]


async def test_list_orders_follow_waits_for_new_orders(tmp_path: Path) -> None:
    async with (
        open_users(await seeded_users(tmp_path)) as users,
        open_orders(tmp_path, address(users)) as (_, channel),
    ):
        orders = channel.stub(OrderService)
        await orders.create_order(create(user_id=1))
        seen: list[int] = []
        with trio.fail_after(10):
            async for order in orders.list_orders(ListOrdersRequest(follow=True)):
                seen.append(order.order_id)
                if order.order_id == 1:
                    await orders.create_order(create(user_id=2))
                else:
                    break  # closes the stream: the server cancels the handler
    assert seen == [1, 2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"users": ""}, "users must be"),
        ({"users": "x:1", "cache_size": "0"}, "cache_size"),
        ({"users": "x:1", "users_timeout": "inf"}, "users_timeout"),
    ],
)
async def test_open_refuses_bad_options(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        async with OrderService.open(db=tmp_path / "o.db", **options):
            pass  # pragma: no cover
