"""Tests for ``open_throttle`` (trio_micro.toolkit._throttle)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from trio_micro.toolkit import FastReceiveChannel, open_fan_out, open_merge, open_throttle

from .helpers import prefilled


class FailingChannel(trio.abc.ReceiveChannel[int]):
    """Yields ``items``, then raises ``error``; records being closed."""

    def __init__(self, items: list[int], error: Exception) -> None:
        self._items = list(items)
        self._error = error
        self.closed = False

    async def receive(self) -> int:
        await trio.lowlevel.checkpoint()
        if self._items:
            return self._items.pop(0)
        raise self._error

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


async def identity(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return x


async def arrivals(paced: FastReceiveChannel[int]) -> list[tuple[int, float]]:
    start = trio.current_time()
    return [(item, round(trio.current_time() - start, 9)) async for item in paced]


async def test_items_come_out_in_order_at_the_rate(autojump_clock: Any) -> None:
    async with open_throttle(prefilled(5), 10) as paced:
        got = await arrivals(paced)
    assert got == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]


async def test_a_burst_comes_out_at_once_then_the_rate(autojump_clock: Any) -> None:
    async with open_throttle(prefilled(6), 10, burst=4) as paced:
        got = await arrivals(paced)
    assert [t for _, t in got] == [0.0, 0.0, 0.0, 0.0, 0.1, 0.2]


@pytest.mark.parametrize(
    ("rate", "burst", "seconds"), [(10, 1, 2.05), (100, 7, 3.305), (3.5, 2, 4.1)]
)
async def test_exactly_floor_rate_times_t_plus_burst_items_pass_in_t_seconds(
    autojump_clock: Any, rate: float, burst: int, seconds: float
) -> None:
    count = 0
    async with open_throttle(prefilled(10_000), rate, burst=burst) as paced:
        with trio.move_on_after(seconds):
            async for _ in paced:
                count += 1
    assert count == math.floor(rate * seconds) + burst


async def test_an_error_of_the_source_reaches_the_consumer_and_closes_the_source() -> None:
    source = FailingChannel([1, 2], ValueError("source broke"))
    got: list[int] = []
    nurseries_before = list(trio.lowlevel.current_task().child_nurseries)
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="source broke")):
        async with open_throttle(source, 1000, burst=10) as paced:
            async for item in paced:
                got.append(item)  # noqa: PERF401 - the items before the error count
    assert got == [1, 2]
    assert source.closed
    assert trio.lowlevel.current_task().child_nurseries == nurseries_before  # no task left


async def test_the_output_ends_when_the_input_ends() -> None:
    send_channel, receive_channel = trio.open_memory_channel[int](1)
    async with open_throttle(receive_channel, 1000, burst=5) as paced:
        await send_channel.send(7)
        await send_channel.aclose()
        assert [item async for item in paced] == [7]


async def test_closing_the_output_closes_the_input_for_its_producer() -> None:
    send_channel, receive_channel = trio.open_memory_channel[int](0)
    async with open_throttle(receive_channel, 1000, burst=5) as paced:
        await send_channel.send(1)  # the pacing task now waits to deliver it
        paced.close()
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BrokenResourceError):
            await send_channel.send(2)


async def test_leaving_the_block_closes_the_input() -> None:
    send_channel, receive_channel = trio.open_memory_channel[int](0)
    async with open_throttle(receive_channel, 1000) as paced:
        assert isinstance(paced, FastReceiveChannel)
    with pytest.raises(trio.BrokenResourceError):
        send_channel.send_nowait(1)


async def test_a_throttle_feeds_a_fan_out_and_takes_a_merge(autojump_clock: Any) -> None:
    async with (
        open_merge(prefilled(10), prefilled(10)) as merged,
        open_throttle(merged, 20, burst=2) as paced,
        open_fan_out(paced, identity, workers=3) as results,
    ):
        start = trio.current_time()
        got = sorted([item async for item in results])
        elapsed = trio.current_time() - start
    assert got == sorted([*range(10), *range(10)])
    assert elapsed == pytest.approx(18 / 20)  # 2 at once, then 18 at 20 per second


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_a_rate_that_is_not_finite_and_positive_is_a_value_error(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        open_throttle(prefilled(1), rate)


@pytest.mark.parametrize("rate", ["10", True, None])
def test_a_rate_that_is_not_a_number_is_a_type_error(rate: object) -> None:
    with pytest.raises(TypeError, match="rate"):
        open_throttle(prefilled(1), rate)  # type: ignore[arg-type]


@pytest.mark.parametrize(("burst", "error"), [(0, ValueError), (-3, ValueError), (1.5, TypeError)])
def test_a_burst_below_one_or_not_an_int_is_refused(burst: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="burst"):
        open_throttle(prefilled(1), 10, burst=burst)  # type: ignore[arg-type]


def test_a_negative_buffer_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="buffer"):
        open_throttle(prefilled(1), 10, buffer=-1)


def test_the_input_must_be_a_receive_channel() -> None:
    with pytest.raises(TypeError, match="receive_channel"):
        open_throttle([1, 2, 3], 10)  # type: ignore[arg-type]
