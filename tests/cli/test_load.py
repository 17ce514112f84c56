"""The load engine: run_load, LoadResult, PeerCounter, progress."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from rich.console import Console

from trio_micro import rpc
from trio_micro.cli._load import LoadResult, PeerCounter, progress, run_load

from ..rpc.services import TestService


async def _noop(index: int) -> None:
    await trio.lowlevel.checkpoint()


# --- run_load ---------------------------------------------------------------------------


async def test_every_index_is_called_once_in_order(autojump_clock: trio.testing.MockClock) -> None:
    started: list[int] = []

    async def call(index: int) -> None:
        started.append(index)
        await trio.sleep(0.001 * (index % 7))

    result = await run_load(call, total=100, concurrency=8)
    assert started == list(range(100))
    assert (result.calls, result.ok, result.errors, result.failed) == (100, 100, {}, 0)


@pytest.mark.parametrize(("total", "concurrency"), [(50, 1), (50, 7), (5, 20)])
async def test_concurrency_never_exceeds_the_bound(
    autojump_clock: trio.testing.MockClock, total: int, concurrency: int
) -> None:
    running = peak = 0

    async def call(index: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1

    result = await run_load(call, total=total, concurrency=concurrency)
    assert peak == min(total, concurrency)
    assert result.ok == total
    # Calls of 1 s in waves of `concurrency`.
    assert result.elapsed == pytest.approx(math.ceil(total / concurrency))


async def test_runs_a_pool_of_workers_not_a_task_per_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tasks: set[trio.lowlevel.Task] = set()

    async def call(index: int) -> None:
        tasks.add(trio.lowlevel.current_task())
        await trio.sleep(0.01)

    await run_load(call, total=200, concurrency=4)
    assert len(tasks) == 4


async def test_rate_limits_call_starts(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []

    async def call(index: int) -> None:
        starts.append(trio.current_time())
        await trio.sleep(0.001)

    result = await run_load(call, total=51, concurrency=10, rate=10)
    # A bucket of one token (10 ms at 10/s) that starts full: the first call at once,
    # then one every 0.1 s.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.1] * 50)
    assert result.elapsed == pytest.approx(5.0 + 0.001)
    assert result.throughput() == pytest.approx(51 / 5.001)


async def test_high_rate_allows_a_burst_of_ten_milliseconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = await run_load(_noop, total=1_001, concurrency=50, rate=1000)
    # 10 tokens up front, then 1,000 per second: 991 more take 0.991 s.
    assert result.elapsed == pytest.approx(0.991)


async def test_rpc_errors_are_counted_by_code(autojump_clock: trio.testing.MockClock) -> None:
    async def call(index: int) -> None:
        await trio.sleep(0.001)
        if index % 4 == 1:
            raise rpc.RpcError(rpc.Status.UNAVAILABLE, f"replica {index % 3} is gone")
        if index % 4 == 2:
            raise rpc.RpcError(rpc.Status.NOT_FOUND, "no such user")

    result = await run_load(call, total=100, concurrency=1)  # one at a time: ordered
    assert result.calls == 100
    assert result.ok == 50
    assert result.failed == 50
    assert result.errors == {"UNAVAILABLE": 25, "NOT_FOUND": 25}
    # Distinct messages only, at most five.
    assert result.first_errors == [
        "UNAVAILABLE: replica 1 is gone",
        "NOT_FOUND: no such user",
        "UNAVAILABLE: replica 2 is gone",
        "UNAVAILABLE: replica 0 is gone",
    ]
    assert result.latency.count == 50  # latency of successful calls only


async def test_other_exceptions_propagate_and_cancel_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished: list[int] = []

    async def call(index: int) -> None:
        if index == 3:
            raise KeyError("bug")
        await trio.sleep(1)
        finished.append(index)

    with pytest.RaisesGroup(pytest.RaisesExc(KeyError, match="bug")):
        await run_load(call, total=100, concurrency=5)
    assert finished == []  # the calls in flight were cancelled


async def test_progress_callback_after_each_call(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[tuple[int, int]] = []

    async def call(index: int) -> None:
        await trio.sleep(0.01 * index)
        if index % 2:
            raise rpc.RpcError(rpc.Status.INTERNAL, "odd")

    await run_load(call, total=6, concurrency=2, on_progress=lambda d, f: seen.append((d, f)))
    assert seen == [(1, 0), (2, 1), (3, 1), (4, 2), (5, 2), (6, 3)]


async def test_latency_quantiles_come_from_the_sketch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def call(index: int) -> None:
        await trio.sleep((index + 1) / 1000)  # 1 ms .. 100 ms

    result = await run_load(call, total=100, concurrency=100)
    assert result.latency_ms(0) == pytest.approx(1.0)
    assert result.latency_ms(0.5) == pytest.approx(50.0, rel=0.011)
    assert result.latency_ms(0.99) == pytest.approx(99.0, rel=0.011)
    assert result.latency_ms(1) == pytest.approx(100.0)


async def test_empty_run(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[int] = []

    async def call(index: int) -> None:
        calls.append(index)

    result = await run_load(call, total=0, concurrency=3)
    assert calls == []
    assert (result.calls, result.ok, result.errors, result.elapsed) == (0, 0, {}, 0.0)
    assert result.throughput() == 0.0
    assert math.isnan(result.latency_ms(0.5))


async def test_is_a_checkpoint_even_with_nothing_to_do() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await run_load(_noop, total=0, concurrency=1)
    assert scope.cancelled_caught


async def test_cancellation_stops_the_calls_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = 0
    cancelled = 0

    async def call(index: int) -> None:
        nonlocal started, cancelled
        started += 1
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled += 1
            raise

    with trio.move_on_after(5) as scope:
        await run_load(call, total=100, concurrency=7)
    assert scope.cancelled_caught
    assert started == cancelled == 7


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"total": -1}, ValueError, "total must be >= 0"),
        ({"total": 1.5}, TypeError, "total must be an int"),
        ({"total": True}, TypeError, "total must be an int"),
        ({"concurrency": 0}, ValueError, "concurrency must be >= 1"),
        ({"concurrency": None}, TypeError, "concurrency must be an int"),
        ({"rate": 0}, ValueError, "rate must be a finite number > 0"),
        ({"rate": -3.0}, ValueError, "rate must be a finite number > 0"),
        ({"rate": math.inf}, ValueError, "rate must be a finite number > 0"),
        ({"rate": math.nan}, ValueError, "rate must be a finite number > 0"),
        ({"rate": "10"}, TypeError, "rate must be an int or float"),
        ({"on_progress": 3}, TypeError, "on_progress must be a callable"),
    ],
)
async def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    arguments: dict[str, Any] = {"total": 1, "concurrency": 1} | kwargs
    with pytest.raises(error, match=match):
        await run_load(_noop, **arguments)


async def test_call_must_be_callable() -> None:
    with pytest.raises(TypeError, match="call must be an async callable"):
        await run_load(None, total=1, concurrency=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("q", [-0.1, 1.5, math.nan, "0.5", True])
def test_latency_ms_rejects_bad_quantiles(q: Any) -> None:
    result = LoadResult(calls=0, ok=0, errors={}, elapsed=0.0)
    with pytest.raises(ValueError, match=r"q must be a number within \[0, 1\]"):
        result.latency_ms(q)


# --- PeerCounter ------------------------------------------------------------------------


@pytest.fixture
async def servers() -> AsyncIterator[list[str]]:
    async with (
        rpc.open_server([TestService()], host="127.0.0.1", port=0) as one,
        rpc.open_server([TestService()], host="127.0.0.1", port=0) as two,
    ):
        yield [f"{host}:{port}" for host, port in (one.address, two.address)]


async def test_peer_counter_counts_calls_per_server(servers: list[str]) -> None:
    counter = PeerCounter()
    async with rpc.open_channel(
        servers, interceptors=[counter], balancer=rpc.RoundRobin()
    ) as channel:
        for user_id in range(10):
            await channel.call("grpc.testing.TestService/get_user", {"user_id": user_id})
        with pytest.raises(rpc.RpcError):
            await channel.call("grpc.testing.TestService/crash", {})
    assert sorted(counter.counts) == sorted(servers)
    assert sum(counter.counts.values()) == 11
    assert min(counter.counts.values()) >= 5  # round robin over two
    assert sum(counter.failures.values()) == 1


async def test_peer_counter_skips_calls_that_reached_no_server() -> None:
    counter = PeerCounter()
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with rpc.open_channel(f"127.0.0.1:{port}", interceptors=[counter]) as channel:
        with pytest.raises(rpc.RpcError) as info:
            await channel.call("grpc.testing.TestService/get_user", {"user_id": 1})
    assert info.value.code is rpc.Status.UNAVAILABLE
    assert counter.counts == {}


async def test_run_load_against_a_server_counts_peers(servers: list[str]) -> None:
    counter = PeerCounter()
    async with rpc.open_channel(servers, interceptors=[counter]) as channel:

        async def call(index: int) -> object:
            return await channel.call("grpc.testing.TestService/get_user", {"user_id": index})

        with trio.fail_after(30):
            result = await run_load(call, total=200, concurrency=20)
    assert result.ok == 200
    assert sum(counter.counts.values()) == 200
    assert set(counter.counts) <= set(servers)


# --- progress ---------------------------------------------------------------------------


def _console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=100), out


def test_plain_progress_prints_a_line_every_ten_percent() -> None:
    console, out = _console(terminal=False)
    with progress(200, "get_user", console=console) as update:
        for done in range(1, 201):
            update(done, done // 50)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "get_user: 20/200 calls (10%), 0 failed"
    assert lines[-1] == "get_user: 200/200 calls (100%), 4 failed"


def test_plain_progress_of_few_calls_prints_each() -> None:
    console, out = _console(terminal=False)
    with progress(3, "x", console=console) as update:
        for done in (1, 2, 3):
            update(done, 0)
    assert out.getvalue().splitlines() == [
        "x: 1/3 calls (33%), 0 failed",
        "x: 2/3 calls (66%), 0 failed",
        "x: 3/3 calls (100%), 0 failed",
    ]


def test_plain_progress_skips_steps_it_missed() -> None:
    console, out = _console(terminal=False)
    with progress(10_000, "x", console=console) as update:
        update(3_500, 0)  # callers may report coarsely
        update(3_600, 0)
        update(4_000, 0)
    assert out.getvalue().splitlines() == [
        "x: 3,500/10,000 calls (35%), 0 failed",
        "x: 4,000/10,000 calls (40%), 0 failed",
    ]


def test_rich_progress_on_a_terminal() -> None:
    console, out = _console(terminal=True)
    with progress(5_000, "get_user", console=console) as update:
        for done in range(1, 5_001):
            update(done, 7 if done > 100 else 0)
    text = out.getvalue()
    assert "get_user" in text
    assert "5000/5000" in text
    assert "7 failed" in text
    assert "\x1b[" in text  # drawn with terminal control codes


def test_rich_progress_shows_the_last_numbers_on_exit() -> None:
    console, out = _console(terminal=True)
    with progress(5_000, "x", console=console) as update:
        update(1_234, 3)  # not a multiple of the update step
    assert "1234/5000" in out.getvalue()


@pytest.mark.parametrize(("total", "error"), [(-1, ValueError), (2.0, TypeError)])
def test_progress_rejects_a_bad_total(total: Any, error: type[Exception]) -> None:
    console, _ = _console(terminal=False)
    with pytest.raises(error, match="total must be"), progress(total, "x", console=console):
        pass
