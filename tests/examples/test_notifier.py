"""The notifier: every order notified once, per-user pacing, a refusing downstream
backed off with nothing lost, a broken stream resumed, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from examples.notifier import Notification, Notifier
from examples.orders.service import CreateOrderRequest, ListOrdersRequest, Order, OrderService
from trio_micro import Backoff, rpc

from .system import address, open_orders, open_server, open_users, seeded_users

#: The project folder: the notifier process imports ``examples`` from there.
ROOT = str(Path(__file__).resolve().parents[2])


def orders_of(*user_ids: int) -> list[Order]:
    return [Order(order_id=i, user_id=u, item="pen", quantity=1) for i, u in enumerate(user_ids, 1)]


class FakeOrders:
    """``list_orders(follow=True)`` over a fixed list; the first stream may break."""

    def __init__(self, orders: list[Order], *, break_after: int | None = None) -> None:
        self.orders = orders
        self.break_after = break_after
        self.requests: list[int] = []

    async def list_orders(self, req: ListOrdersRequest) -> AsyncIterator[Order]:
        self.requests.append(req.after_id)
        for order in self.orders:
            if order.order_id <= req.after_id:
                continue
            if self.break_after is not None and order.order_id > self.break_after:
                self.break_after = None
                raise rpc.RpcError(rpc.Status.UNAVAILABLE, "connection lost")
            yield order
        await trio.sleep_forever()


class FakeDownstream:
    """Records what it takes (with the trio time); refuses or blocks as told."""

    def __init__(
        self, *, refuse: int = 0, code: rpc.Status = rpc.Status.RESOURCE_EXHAUSTED
    ) -> None:
        self.refuse = refuse
        self.code = code
        self.taken: list[tuple[int, float]] = []
        self.block: set[int] = set()
        self.delay = 0.0

    async def send(self, notification: Notification) -> None:
        if self.refuse:
            self.refuse -= 1
            raise rpc.RpcError(self.code, "slow down")
        if notification.order_id in self.block:
            await trio.sleep_forever()
        await trio.sleep(self.delay)
        self.taken.append((notification.order_id, trio.current_time()))

    def ids(self) -> list[int]:
        return sorted(order_id for order_id, _ in self.taken)


def notifier(orders: object, downstream: FakeDownstream, **kwargs: object) -> Notifier:
    options: dict[str, object] = {"rate": 100.0, "burst": 10, **kwargs}
    return Notifier(cast(OrderService, orders), downstream, **options)  # type: ignore[arg-type]


async def run_until(n: Notifier, done: Callable[[], bool], *, grace: float = 5.0) -> int:
    """Run ``n`` until ``done()``, then stop it; return its cursor."""
    stop = trio.Event()
    cursor = -1
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            nonlocal cursor
            cursor = await n.run(stop, grace=grace)

        nursery.start_soon(run)
        with trio.fail_after(60):
            while not done():
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.01)
        stop.set()
    return cursor


async def test_every_order_is_notified_once_and_the_cursor_follows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downstream = FakeDownstream()
    n = notifier(FakeOrders(orders_of(1, 2, 3, 1, 2)), downstream)
    cursor = await run_until(n, lambda: n.statistics().sent == 5)
    assert downstream.ids() == [1, 2, 3, 4, 5]
    assert cursor == 5
    assert n.statistics().failed == 0


async def test_a_refusing_downstream_is_retried_after_a_backoff_and_nothing_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downstream = FakeDownstream(refuse=6)
    n = notifier(FakeOrders(orders_of(1, 2, 3)), downstream)
    start = trio.current_time()
    await run_until(n, lambda: n.statistics().sent == 3)
    assert downstream.ids() == [1, 2, 3]
    assert n.statistics().refused == 6
    assert trio.current_time() > start  # it waited between attempts


async def test_a_permanent_downstream_error_is_counted_and_passed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downstream = FakeDownstream(refuse=1, code=rpc.Status.INVALID_ARGUMENT)
    n = notifier(FakeOrders(orders_of(1, 2)), downstream, workers=1)
    cursor = await run_until(n, lambda: n.cursor == 2)
    assert downstream.ids() == [2]
    assert (n.statistics().failed, cursor) == (1, 2)


async def test_each_user_is_paced_to_its_rate(autojump_clock: trio.testing.MockClock) -> None:
    downstream = FakeDownstream()
    n = notifier(FakeOrders(orders_of(1, 1, 1, 1, 2)), downstream, rate=1.0, burst=1)
    start = trio.current_time()
    await run_until(n, lambda: n.statistics().sent == 5)
    times = {order_id: at - start for order_id, at in downstream.taken}
    assert [round(times[i]) for i in (1, 2, 3, 4)] == [0, 1, 2, 3]
    assert times[5] < 1  # another user is not held back by user 1's pace


async def test_a_broken_orders_stream_is_reopened_after_the_last_order_fed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    orders = FakeOrders(orders_of(1, 2, 3, 4), break_after=2)
    downstream = FakeDownstream()
    n = notifier(orders, downstream, backoff=lambda: Backoff(initial=0.5, maximum=1))
    await run_until(n, lambda: n.statistics().sent == 4)
    assert orders.requests == [0, 2]
    assert downstream.ids() == [1, 2, 3, 4]
    assert n.statistics().reconnects == 1


async def test_stop_lets_the_notifications_in_flight_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downstream = FakeDownstream()
    downstream.delay = 2.0
    n = notifier(FakeOrders(orders_of(1, 2, 3)), downstream)
    start = trio.current_time()
    cursor = await run_until(n, lambda: trio.current_time() - start >= 1, grace=5)
    assert downstream.ids() == [1, 2, 3]
    assert cursor == 3
    assert trio.current_time() - start == pytest.approx(2, abs=0.05)


async def test_stop_hands_back_what_does_not_finish_within_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downstream = FakeDownstream()
    downstream.block = {3}
    n = notifier(FakeOrders(orders_of(1, 2, 3, 4)), downstream)
    stopped_at = 0.0

    def done() -> bool:
        nonlocal stopped_at
        stopped_at = trio.current_time()
        return len(downstream.taken) == 3

    cursor = await run_until(n, done, grace=2)
    assert cursor == 2  # order 3 is handed back: a restart from 2 delivers it (and 4 again)
    assert trio.current_time() - stopped_at == pytest.approx(2, abs=0.05)


async def test_it_notifies_the_orders_of_the_real_order_service(tmp_path: Path) -> None:
    async with (
        open_users(await seeded_users(tmp_path)) as users,
        open_orders(tmp_path, address(users)) as (_, channel),
    ):
        orders = channel.stub(OrderService)
        for user_id in (1, 2, 3):
            await orders.create_order(CreateOrderRequest(user_id=user_id, item="ink", quantity=1))
        downstream = FakeDownstream()
        n = Notifier(orders, downstream)
        cursor = await run_until(n, lambda: n.statistics().sent == 3)
    assert (downstream.ids(), cursor) == ([1, 2, 3], 3)


async def test_the_process_stops_on_sigterm_and_saves_its_cursor(tmp_path: Path) -> None:
    state = tmp_path / "cursor.txt"
    state.write_text("0\n")
    async with (
        open_users(await seeded_users(tmp_path)) as users,
        open_orders(tmp_path, address(users)) as (service, _),
        open_server(service) as orders_server,
    ):
        await service.create_order(CreateOrderRequest(user_id=1, item="ink", quantity=1))
        argv = [sys.executable, "-m", "examples.notifier", "--orders", address(orders_server)]
        argv += ["--state", str(state), "--log-file", str(tmp_path / "notifier.jsonl")]
        env = {**os.environ, "PYTHONPATH": ROOT}
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                run = partial(trio.run_process, stdout=subprocess.PIPE, env=env, check=False)
                process = await nursery.start(run, argv)
                out = b""
                log = tmp_path / "notifier.jsonl"
                while not (log.exists() and b"notifier.sent" in log.read_bytes()):
                    await trio.testing.wait_all_tasks_blocked()
                    await trio.sleep(0.05)
                process.send_signal(signal.SIGTERM)
                async for chunk in process.stdout:
                    out += chunk
                await process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert b"notifier following orders" in out
    assert b"notifier stopped: 1 sent" in out
    assert state.read_text() == "1\n"


def test_a_state_file_without_a_cursor_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.notifier.__main__ import main

    state = tmp_path / "cursor.txt"
    state.write_text("not a cursor\n")
    assert main(["--orders", "127.0.0.1:1", "--state", str(state)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("notifier: error: cannot read the state file:")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("option", "value"), [("--workers", "0"), ("--rate", "-1"), ("--grace", "inf")]
)
def test_bad_numbers_are_usage_errors(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.notifier.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--orders", "127.0.0.1:1", option, value])
    assert exit_.value.code == 2
    assert f"got {value!r}" in capsys.readouterr().err
