"""Tests for ``FastReceiveChannel`` and the fast ``async for`` of fan-out, merge and amap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio

from trio_micro.observe import open_task_monitor
from trio_micro.toolkit import (
    FastReceiveChannel,
    amap,
    open_fan_out,
    open_merge,
    receive_batch,
)
from trio_micro.toolkit._receive import CONSUMER_BUDGET

from .helpers import prefilled


async def identity(x: int) -> int:
    return x


async def test_async_for_yields_every_buffered_item_in_order() -> None:
    channel = FastReceiveChannel(prefilled(300))
    assert [item async for item in channel] == list(range(300))


async def test_async_for_waits_for_items_that_are_not_buffered_yet() -> None:
    send_channel, receive_channel = trio.open_memory_channel[int](0)

    async def produce() -> None:
        async with send_channel:
            for i in range(5):
                await trio.lowlevel.checkpoint()
                await send_channel.send(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        got = [item async for item in FastReceiveChannel(receive_channel)]
    assert got == list(range(5))


@asynccontextmanager
async def bare(n: int) -> AsyncIterator[FastReceiveChannel[int]]:
    yield FastReceiveChannel(prefilled(n))


def fast_sources() -> dict[str, Callable[[int], AbstractAsyncContextManager[Any]]]:
    return {
        "FastReceiveChannel": bare,
        "open_fan_out": lambda n: open_fan_out(range(n), identity, workers=4),
        "open_merge": lambda n: open_merge(prefilled(n // 2), prefilled(n - n // 2), buffer=256),
        "amap": lambda n: amap(identity, range(n), limit=4),
    }


@pytest.mark.parametrize("name", list(fast_sources()))
async def test_a_consumer_that_never_blocks_still_lets_the_loop_run(name: str) -> None:
    # The monitor's clock counts the items consumed, so a "blocked step" is a step of
    # the consumer that took more than CONSUMER_BUDGET items without a schedule point.
    consumed = 0
    async with (
        open_task_monitor(block_threshold=CONSUMER_BUDGET + 0.5, clock=lambda: consumed) as monitor,
        fast_sources()[name](5_000) as results,
    ):
        async for _ in results:
            consumed += 1
    assert consumed == 5_000
    stats = monitor.statistics()
    assert stats.blocked_steps == 0
    assert stats.longest_step >= CONSUMER_BUDGET // 2  # it does drain in batches


async def test_a_cancelled_consumer_takes_no_further_item() -> None:
    channel = FastReceiveChannel(prefilled(10))
    iterator = aiter(channel)
    assert await anext(iterator) == 0
    with trio.CancelScope() as scope:
        scope.cancel()
        await anext(iterator)
    assert scope.cancelled_caught
    assert channel.statistics().current_buffer_used == 9


async def test_it_delegates_to_the_wrapped_memory_channel() -> None:
    inner = prefilled(3)
    channel = FastReceiveChannel(inner)
    assert channel.channel is inner
    assert channel.receive_nowait() == 0
    assert await channel.receive() == 1
    other = channel.clone()
    assert isinstance(other, FastReceiveChannel)
    assert other.receive_nowait() == 2
    other.close()
    with channel:
        assert channel.statistics().open_receive_channels == 1
    assert channel.statistics().open_receive_channels == 0
    with pytest.raises(trio.ClosedResourceError):
        channel.receive_nowait()


async def test_aclose_closes_the_wrapped_channel() -> None:
    channel = FastReceiveChannel(prefilled(1))
    await channel.aclose()
    assert channel.statistics().open_receive_channels == 0


async def test_async_for_over_a_closed_channel_raises_closed_resource_error() -> None:
    channel = FastReceiveChannel(prefilled(1))
    channel.close()
    with pytest.raises(trio.ClosedResourceError):
        await anext(aiter(channel))


def test_only_a_memory_receive_channel_can_be_wrapped() -> None:
    send_channel, _ = trio.open_memory_channel[int](0)
    with pytest.raises(TypeError, match="MemoryReceiveChannel"):
        FastReceiveChannel(send_channel)  # type: ignore[arg-type]


async def test_receive_batch_takes_a_fast_channel() -> None:
    assert await receive_batch(FastReceiveChannel(prefilled(5)), 3) == [0, 1, 2]


async def test_fan_out_results_feed_a_merge_and_a_second_fan_out() -> None:
    async with (
        open_fan_out(range(100), identity, workers=3) as first,
        open_fan_out(first, identity, workers=2) as second,
        open_merge(second) as merged,
    ):
        assert sorted([item async for item in merged]) == list(range(100))
