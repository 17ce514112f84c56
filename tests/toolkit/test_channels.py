from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import trio_micro.toolkit
from trio_micro.toolkit import open_broadcast, open_fan_out, open_merge, receive_batch

from .helpers import prefilled

# -- helpers ---------------------------------------------------------------------------


class ListReceiveChannel(trio.abc.ReceiveChannel[int]):
    """A channel that is not a memory channel: no receive_nowait, no concurrent receive."""

    def __init__(self, items: list[int], error: Exception | None = None) -> None:
        self._items = list(items)
        self._error = error
        self._busy = False
        self.closed = False

    async def receive(self) -> int:
        if self._busy:
            raise trio.BusyResourceError("another task is already receiving")
        self._busy = True
        try:
            await trio.lowlevel.checkpoint()
        finally:
            self._busy = False
        if self.closed:
            raise trio.ClosedResourceError
        if self._items:
            return self._items.pop(0)
        if self._error is not None:
            raise self._error
        raise trio.EndOfChannel

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


def unchecked(value: object) -> Any:
    """Pass a deliberately wrong argument past the type checker."""
    return value


async def double(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return 2 * x


def many_items(kind: str) -> Any:
    """A source of the given kind that never blocks: counting up, or 10,000 buffered items."""
    if kind == "iterable":
        return itertools.count()
    if kind == "memory channel":
        return prefilled(10_000)

    async def endless() -> AsyncIterator[int]:
        for item in itertools.count():
            yield item

    return endless()


async def collect(channel: trio.MemoryReceiveChannel[Any]) -> list[Any]:
    return [item async for item in channel]


async def send_forever(send_channel: trio.MemorySendChannel[int], sent: list[int]) -> None:
    """Send 0, 1, 2, ... until the channel breaks; BrokenResourceError propagates."""
    for i in itertools.count():
        await send_channel.send(i)
        sent.append(i)


async def expect_broken(send_channel: trio.MemorySendChannel[int], outcome: list[str]) -> None:
    try:
        await send_forever(send_channel, [])
    except trio.BrokenResourceError:
        outcome.append("broken")


# -- exports ---------------------------------------------------------------------------


def test_channel_patterns_are_exported_from_the_toolkit() -> None:
    for name in ("open_broadcast", "open_fan_out", "open_merge", "receive_batch"):
        assert name in trio_micro.toolkit.__all__
        assert getattr(trio_micro.toolkit, name) is not None


# -- open_fan_out: results -------------------------------------------------------------


@given(
    items=st.lists(st.integers(), max_size=200),
    workers=st.integers(1, 8),
    buffer=st.integers(0, 8),
)
async def test_fan_out_output_is_a_permutation_of_fn_of_the_input(
    items: list[int], workers: int, buffer: int
) -> None:
    async with open_fan_out(items, double, workers=workers, buffer=buffer) as results:
        got = await collect(results)
    assert Counter(got) == Counter(2 * x for x in items)


@pytest.mark.parametrize("kind", ["iterable", "memory channel", "async iterable", "channel"])
async def test_fan_out_reads_every_kind_of_source(kind: str) -> None:
    items = list(range(300))
    source: Any
    if kind == "iterable":
        source = iter(items)
    elif kind == "memory channel":
        send_channel, source = trio.open_memory_channel[int](len(items))
        with send_channel:
            for item in items:
                send_channel.send_nowait(item)
    elif kind == "async iterable":

        async def generate() -> AsyncIterator[int]:
            for item in items:
                await trio.lowlevel.checkpoint()
                yield item

        source = generate()
    else:
        source = ListReceiveChannel(items)  # raises BusyResourceError if pulls overlap
    async with open_fan_out(source, double, workers=4) as results:
        got = await collect(results)
    assert sorted(got) == [2 * x for x in items]


async def test_fan_out_delivers_results_in_completion_order(autojump_clock: object) -> None:
    async def sleep_for(seconds: int) -> int:
        await trio.sleep(seconds)
        return seconds

    async with open_fan_out([3, 1, 2], sleep_for, workers=3) as results:
        assert await collect(results) == [1, 2, 3]


async def test_fan_out_runs_exactly_workers_calls_at_once() -> None:
    running = 0
    peak = 0
    release = trio.Event()

    async def hold(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return x

    async with open_fan_out(range(10), hold, workers=3) as results:
        await trio.testing.wait_all_tasks_blocked()
        assert running == 3
        release.set()
        assert len(await collect(results)) == 10
    assert peak == 3


async def test_fan_out_results_end_when_the_input_is_empty() -> None:
    async with open_fan_out([], double, workers=2) as results:
        with pytest.raises(trio.EndOfChannel):
            await results.receive()


async def test_fan_out_results_end_when_the_source_channel_closes() -> None:
    send_channel, receive_channel = trio.open_memory_channel[int](0)
    async with (
        trio.open_nursery() as nursery,
        open_fan_out(receive_channel, double, workers=2) as results,
    ):

        async def produce() -> None:
            async with send_channel:
                for i in range(5):
                    await send_channel.send(i)

        nursery.start_soon(produce)
        assert sorted(await collect(results)) == [0, 2, 4, 6, 8]


# -- open_fan_out: closing paths --------------------------------------------------------


async def test_fan_out_leaving_the_block_cancels_work_in_progress() -> None:
    cancelled: list[int] = []

    async def never_finish(x: int) -> int:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(x)
            raise
        raise AssertionError("unreachable")

    async with open_fan_out(range(10), never_finish, workers=2):
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(cancelled) == [0, 1]


async def test_fan_out_leaving_the_block_closes_the_source_channel(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    send_channel, receive_channel = trio.open_memory_channel[int](0)
    outcome: list[str] = []
    nursery.start_soon(expect_broken, send_channel, outcome)
    async with open_fan_out(receive_channel, double, workers=2) as results:
        await results.receive()
    with trio.fail_after(10):
        await trio.testing.wait_all_tasks_blocked()
    assert outcome == ["broken"]


async def test_fan_out_consumer_closing_results_breaks_the_upstream_producer(
    autojump_clock: object,
) -> None:
    send_channel, receive_channel = trio.open_memory_channel[int](0)
    with trio.fail_after(10):
        async with (
            trio.open_nursery() as nursery,
            open_fan_out(receive_channel, double, workers=3) as results,
        ):
            outcome: list[str] = []
            nursery.start_soon(expect_broken, send_channel, outcome)
            await results.receive()
            results.close()
            await trio.testing.wait_all_tasks_blocked()
            # Still inside the block: the workers stopped by themselves.
            assert outcome == ["broken"]


@pytest.mark.parametrize(
    # buffer=0: the memory and locked workers meet the closed results in the blocking send.
    ("kind", "buffer"),
    [("iterable", 1), ("memory channel", 0), ("async iterable", 0)],
)
async def test_fan_out_consumer_closing_results_stops_the_workers(
    kind: str, buffer: int, autojump_clock: object
) -> None:
    calls = 0

    async def count_calls(x: int) -> int:
        nonlocal calls
        calls += 1
        await trio.lowlevel.checkpoint()
        return x

    with trio.fail_after(10):
        async with open_fan_out(many_items(kind), count_calls, workers=4, buffer=buffer) as results:
            await results.receive()
            results.close()
            await trio.testing.wait_all_tasks_blocked()
            calls_when_closed = calls
            await trio.sleep(1)
            assert calls == calls_when_closed


def stuck_on_one_and_two(cancelled: list[int]) -> Callable[[int], Awaitable[int]]:
    """An ``fn`` that returns its item after a checkpoint, but never returns for 1 and 2."""

    async def fn(x: int) -> int:
        await trio.lowlevel.checkpoint()
        if x not in (1, 2):
            return x
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(x)
            raise
        raise AssertionError("unreachable")

    return fn


@pytest.mark.parametrize("kind", ["iterable", "memory channel", "async iterable"])
async def test_fan_out_consumer_closing_results_cancels_calls_in_progress(kind: str) -> None:
    cancelled: list[int] = []

    # The third worker fills the buffer and waits in send, so it sees the close.
    fn = stuck_on_one_and_two(cancelled)
    async with open_fan_out(many_items(kind), fn, workers=3, buffer=4) as results:
        await trio.testing.wait_all_tasks_blocked()
        results.close()
        await trio.testing.wait_all_tasks_blocked()
        # Still inside the block: the stuck calls were cancelled by the fan-out itself.
        assert sorted(cancelled) == [1, 2]


@pytest.mark.parametrize("kind", ["iterable", "memory channel", "async iterable"])
async def test_fan_out_worker_finding_results_closed_without_waiting_cancels_the_others(
    kind: str,
) -> None:
    cancelled: list[int] = []
    fn = stuck_on_one_and_two(cancelled)
    # A big buffer: the third worker never waits in send; it meets the close in send_nowait.
    async with open_fan_out(many_items(kind), fn, workers=3, buffer=100_000) as results:
        assert await results.receive() == 0
        results.close()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(cancelled) == [1, 2]


async def test_fan_out_closes_an_async_generator_source_when_leaving() -> None:
    finalized: list[bool] = []

    async def generate() -> AsyncIterator[int]:
        try:
            for i in itertools.count():
                await trio.lowlevel.checkpoint()
                yield i
        finally:
            finalized.append(True)

    async with open_fan_out(generate(), double, workers=2) as results:
        await results.receive()
    assert finalized == [True]


async def test_fan_out_closes_a_generic_source_channel_when_leaving() -> None:
    source = ListReceiveChannel(list(range(1000)))
    async with open_fan_out(source, double, workers=2) as results:
        await results.receive()
    assert source.closed


@pytest.mark.parametrize("kind", ["iterable", "memory channel", "async iterable"])
async def test_fan_out_worker_checkpoints_regularly_when_nothing_blocks(kind: str) -> None:
    calls = 0

    async def no_checkpoint(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    # A big buffer, so only the periodic checkpoint lets the body run again.
    async with open_fan_out(many_items(kind), no_checkpoint, workers=1, buffer=100_000) as rx:
        await rx.receive()
    assert calls < 1_000


async def test_fan_out_is_cancelled_by_an_outer_scope(autojump_clock: object) -> None:
    async def slow(x: int) -> int:
        await trio.sleep(100)
        return x

    with trio.move_on_after(1) as scope:
        async with open_fan_out(range(10), slow, workers=2) as results:
            await collect(results)
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(1)


# -- open_fan_out: errors --------------------------------------------------------------


async def test_fan_out_error_from_fn_surfaces_as_an_exception_group() -> None:
    async def fail_on_three(x: int) -> int:
        await trio.lowlevel.checkpoint()
        if x == 3:
            raise ValueError(x)
        return x

    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="^3$")):
        async with open_fan_out(range(10), fail_on_three, workers=2) as results:
            await collect(results)


async def test_fan_out_error_from_fn_cancels_the_other_workers() -> None:
    cancelled: list[int] = []

    async def fail_or_wait(x: int) -> int:
        if x == 0:
            await trio.testing.wait_all_tasks_blocked()
            raise ValueError(x)
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(x)
            raise
        raise AssertionError("unreachable")

    with pytest.RaisesGroup(ValueError):
        async with open_fan_out(range(3), fail_or_wait, workers=3) as results:
            await collect(results)
    assert sorted(cancelled) == [1, 2]


async def test_fan_out_error_from_the_source_surfaces_as_an_exception_group() -> None:
    def broken_iterable() -> Any:
        yield 1
        raise KeyError("source")

    with pytest.RaisesGroup(KeyError):
        async with open_fan_out(broken_iterable(), double, workers=2) as results:
            await collect(results)


async def test_fan_out_error_from_the_body_surfaces_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with open_fan_out(range(10), double, workers=2):
            raise KeyError("body")


# -- open_fan_out: bad input -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "shown"),
    [
        ({"source": 42}, TypeError, 42),
        ({"source": None}, TypeError, None),
        ({"fn": "double"}, TypeError, "double"),
        ({"workers": 0}, ValueError, 0),
        ({"workers": -3}, ValueError, -3),
        ({"workers": 2.0}, TypeError, 2.0),
        ({"workers": True}, TypeError, True),
        ({"buffer": -1}, ValueError, -1),
        ({"buffer": 1.5}, TypeError, 1.5),
        ({"buffer": float("inf")}, TypeError, float("inf")),
    ],
)
def test_fan_out_rejects_bad_arguments_with_the_value(
    kwargs: dict[str, Any], error: type[Exception], shown: object
) -> None:
    arguments: dict[str, Any] = {"source": [1], "fn": double, "workers": 2, **kwargs}
    source, fn = arguments.pop("source"), arguments.pop("fn")
    with pytest.raises(error, match=re.escape(repr(shown))):
        open_fan_out(source, fn, **arguments)


# -- open_merge ------------------------------------------------------------------------


@given(
    inputs=st.lists(st.lists(st.integers(0, 3), max_size=30), max_size=5),
    buffer=st.integers(0, 4),
)
async def test_merge_output_is_the_union_in_each_inputs_order(
    inputs: list[list[int]], buffer: int
) -> None:
    pairs = [trio.open_memory_channel[tuple[int, int]](0) for _ in inputs]

    async def produce(
        send_channel: trio.MemorySendChannel[tuple[int, int]], index: int, pauses: list[int]
    ) -> None:
        async with send_channel:
            for pause in pauses:
                for _ in range(pause):
                    await trio.lowlevel.checkpoint()
                await send_channel.send((index, pause))

    async with trio.open_nursery() as nursery:
        for index, (pauses, (send_channel, _)) in enumerate(zip(inputs, pairs, strict=True)):
            nursery.start_soon(produce, send_channel, index, pauses)
        async with open_merge(*(rx for _, rx in pairs), buffer=buffer) as merged:
            got = await collect(merged)
    assert Counter(got) == Counter((i, p) for i, pauses in enumerate(inputs) for p in pauses)
    for index, pauses in enumerate(inputs):
        assert [p for i, p in got if i == index] == pauses


async def test_merge_ends_only_when_all_inputs_end() -> None:
    tx_a, rx_a = trio.open_memory_channel[int](1)
    tx_b, rx_b = trio.open_memory_channel[int](1)
    async with open_merge(rx_a, rx_b) as merged:
        tx_a.close()
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            merged.receive_nowait()
        await tx_b.send(7)
        assert await merged.receive() == 7
        tx_b.close()
        with pytest.raises(trio.EndOfChannel):
            await merged.receive()


async def test_merge_of_no_channels_ends_at_once() -> None:
    no_channels: list[trio.MemoryReceiveChannel[int]] = []
    async with open_merge(*no_channels) as merged:
        with pytest.raises(trio.EndOfChannel):
            await merged.receive()


async def test_merge_reads_a_generic_receive_channel() -> None:
    tx, rx = trio.open_memory_channel[int](3)
    with tx:
        for i in (10, 11, 12):
            tx.send_nowait(i)
    async with open_merge(ListReceiveChannel([1, 2, 3]), rx) as merged:
        got = await collect(merged)
    assert sorted(got) == [1, 2, 3, 10, 11, 12]


@pytest.mark.parametrize("receive_first", [True, False])
async def test_merge_consumer_closing_breaks_every_producer(
    receive_first: bool, autojump_clock: object
) -> None:
    # Having received an item, its forwarder meets the closed channel in send_nowait;
    # having received nothing, every forwarder holds an item and waits in the blocking send.
    tx_a, rx_a = trio.open_memory_channel[int](0)
    tx_b, rx_b = trio.open_memory_channel[int](0)
    outcome: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, open_merge(rx_a, rx_b) as merged:
            nursery.start_soon(expect_broken, tx_a, outcome)
            nursery.start_soon(expect_broken, tx_b, outcome)
            if receive_first:
                await merged.receive()
            else:
                await trio.testing.wait_all_tasks_blocked()
            merged.close()
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == ["broken", "broken"]


async def test_merge_leaving_the_block_closes_the_inputs(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    tx_a, rx_a = trio.open_memory_channel[int](0)
    generic = ListReceiveChannel([1, 2, 3])
    outcome: list[str] = []
    nursery.start_soon(expect_broken, tx_a, outcome)
    async with open_merge(rx_a, generic) as merged:
        await merged.receive()
    with trio.fail_after(10):
        await trio.testing.wait_all_tasks_blocked()
    assert outcome == ["broken"]
    assert generic.closed


async def test_merge_error_from_an_input_surfaces_as_an_exception_group() -> None:
    failing = ListReceiveChannel([1], error=OSError("input failed"))
    with pytest.RaisesGroup(OSError):
        async with open_merge(failing) as merged:
            await collect(merged)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "shown"),
    [
        ((42,), {}, TypeError, "42"),
        (([],), {}, TypeError, "[]"),
        ((), {"buffer": -2}, ValueError, "-2"),
        ((), {"buffer": "8"}, TypeError, "'8'"),
    ],
)
def test_merge_rejects_bad_arguments_with_the_value(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], shown: str
) -> None:
    with pytest.raises(error, match=re.escape(shown)):
        open_merge(*args, **kwargs)


def test_merge_rejects_the_same_channel_twice() -> None:
    _, rx = trio.open_memory_channel[int](0)
    with pytest.raises(ValueError, match="only once"):
        open_merge(rx, rx)


# -- open_broadcast --------------------------------------------------------------------


@given(
    items=st.lists(st.integers(), max_size=50),
    pauses=st.lists(st.integers(0, 3), min_size=1, max_size=4),
    buffer=st.integers(0, 3),
)
async def test_broadcast_gives_each_consumer_the_exact_input_sequence(
    items: list[int], pauses: list[int], buffer: int
) -> None:
    tx, rx = trio.open_memory_channel[int](0)
    received: list[list[int]] = [[] for _ in pauses]

    async def produce() -> None:
        async with tx:
            for item in items:
                await tx.send(item)

    async def consume(channel: trio.MemoryReceiveChannel[int], pause: int, into: list[int]) -> None:
        async for item in channel:
            for _ in range(pause):
                await trio.lowlevel.checkpoint()
            into.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with (
            open_broadcast(rx, consumers=len(pauses), buffer=buffer) as outputs,
            trio.open_nursery() as consumers,
        ):
            for output, pause, into in zip(outputs, pauses, received, strict=True):
                consumers.start_soon(consume, output, pause, into)
    assert received == [items] * len(pauses)


async def test_broadcast_slowest_consumer_applies_backpressure() -> None:
    tx, rx = trio.open_memory_channel[int](0)
    sent: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_forever, tx, sent)
        async with open_broadcast(rx, consumers=2, buffer=2) as (fast, _slow):
            for _ in range(2):
                await fast.receive()
            await trio.testing.wait_all_tasks_blocked()
            # 2 buffered for the slow consumer, 1 more held by the distributor.
            assert len(sent) == 3
            assert fast.statistics().current_buffer_used <= 2
            nursery.cancel_scope.cancel()


async def test_broadcast_drops_a_consumer_that_closes_and_serves_the_rest() -> None:
    tx, rx = trio.open_memory_channel[int](10)
    with tx:
        for i in range(10):
            tx.send_nowait(i)
    async with open_broadcast(rx, consumers=2) as (quitter, stayer):
        quitter.close()
        assert await collect(stayer) == list(range(10))


async def test_broadcast_input_end_ends_every_output() -> None:
    tx, rx = trio.open_memory_channel[int](0)
    tx.close()
    async with open_broadcast(rx, consumers=3) as outputs:
        for output in outputs:
            with pytest.raises(trio.EndOfChannel):
                await output.receive()


async def test_broadcast_closes_the_input_when_every_consumer_is_gone(
    autojump_clock: object,
) -> None:
    tx, rx = trio.open_memory_channel[int](0)
    outcome: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, open_broadcast(rx, consumers=2) as outputs:
            nursery.start_soon(expect_broken, tx, outcome)
            for output in outputs:
                output.close()
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == ["broken"]


async def test_broadcast_leaving_the_block_closes_the_input(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    tx, rx = trio.open_memory_channel[int](0)
    outcome: list[str] = []
    nursery.start_soon(expect_broken, tx, outcome)
    async with open_broadcast(rx, consumers=2) as (first, _):
        await first.receive()
    with trio.fail_after(10):
        await trio.testing.wait_all_tasks_blocked()
    assert outcome == ["broken"]


async def test_broadcast_error_from_the_input_surfaces_as_an_exception_group() -> None:
    failing = ListReceiveChannel([1], error=OSError("input failed"))
    with pytest.RaisesGroup(OSError):
        async with open_broadcast(failing, consumers=1) as (output,):
            await collect(output)


@pytest.mark.parametrize(
    ("make", "error", "shown"),
    [
        (lambda rx: open_broadcast(unchecked([1, 2]), consumers=2), TypeError, "[1, 2]"),
        (lambda rx: open_broadcast(rx, consumers=0), ValueError, "0"),
        (lambda rx: open_broadcast(rx, consumers=unchecked("2")), TypeError, "'2'"),
        (lambda rx: open_broadcast(rx, consumers=2, buffer=-1), ValueError, "-1"),
    ],
)
def test_broadcast_rejects_bad_arguments_with_the_value(
    make: Callable[[Any], object], error: type[Exception], shown: str
) -> None:
    _, rx = trio.open_memory_channel[int](0)
    with pytest.raises(error, match=re.escape(shown)):
        make(rx)


# -- receive_batch ---------------------------------------------------------------------


async def test_receive_batch_takes_what_is_buffered_up_to_max_items() -> None:
    tx, rx = trio.open_memory_channel[int](10)
    for i in range(7):
        tx.send_nowait(i)
    assert await receive_batch(rx, 5) == [0, 1, 2, 3, 4]
    assert await receive_batch(rx, 5) == [5, 6]


async def test_receive_batch_waits_for_the_first_item(nursery: trio.Nursery) -> None:
    tx, rx = trio.open_memory_channel[int](10)
    got: list[list[int]] = []

    async def receive() -> None:
        got.append(await receive_batch(rx, 10))

    nursery.start_soon(receive)
    await trio.testing.wait_all_tasks_blocked()
    assert got == []
    tx.send_nowait(1)
    await trio.testing.wait_all_tasks_blocked()
    assert got == [[1]]


async def test_receive_batch_takes_from_blocked_senders_too(nursery: trio.Nursery) -> None:
    tx, rx = trio.open_memory_channel[int](0)
    for i in range(3):
        nursery.start_soon(tx.send, i)
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(await receive_batch(rx, 10)) == [0, 1, 2]  # trio shuffles start order


async def test_receive_batch_returns_items_before_the_end_then_raises_end_of_channel() -> None:
    tx, rx = trio.open_memory_channel[int](10)
    tx.send_nowait(1)
    tx.send_nowait(2)
    tx.close()
    assert await receive_batch(rx, 10) == [1, 2]
    with pytest.raises(trio.EndOfChannel):
        await receive_batch(rx, 10)


async def test_receive_batch_is_a_checkpoint_even_when_items_are_ready() -> None:
    tx, rx = trio.open_memory_channel[int](10)
    tx.send_nowait(1)
    with trio.testing.assert_checkpoints():
        await receive_batch(rx, 10)


async def test_receive_batch_cancelled_while_waiting_loses_nothing(
    nursery: trio.Nursery,
) -> None:
    tx, rx = trio.open_memory_channel[int](10)
    scope = trio.CancelScope()
    got: list[list[int]] = []

    async def receive() -> None:
        with scope:
            got.append(await receive_batch(rx, 10))

    nursery.start_soon(receive)
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()
    tx.send_nowait(1)  # arrives in the same tick as the cancellation
    await trio.testing.wait_all_tasks_blocked()
    assert scope.cancelled_caught
    assert got == []
    assert rx.receive_nowait() == 1


async def test_receive_batch_cancelled_before_the_call_takes_nothing() -> None:
    tx, rx = trio.open_memory_channel[int](10)
    tx.send_nowait(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await receive_batch(rx, 10)
    assert rx.receive_nowait() == 1


@given(
    chunks=st.lists(st.lists(st.integers(), max_size=10), max_size=10),
    max_items=st.integers(1, 6),
)
async def test_receive_batch_respects_max_items_and_loses_nothing(
    chunks: list[list[int]], max_items: int
) -> None:
    tx, rx = trio.open_memory_channel[int](10)
    expected = [item for chunk in chunks for item in chunk]
    got: list[int] = []

    async def produce() -> None:
        async with tx:
            for chunk in chunks:
                for item in chunk:
                    await tx.send(item)
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        while True:
            try:
                batch = await receive_batch(rx, max_items)
            except trio.EndOfChannel:
                break
            assert 1 <= len(batch) <= max_items
            got.extend(batch)
    assert got == expected


@pytest.mark.parametrize(
    ("channel_ok", "max_items", "error", "shown"),
    [
        (False, 3, TypeError, "[1, 2]"),
        (True, 0, ValueError, "0"),
        (True, -1, ValueError, "-1"),
        (True, "3", TypeError, "'3'"),
    ],
)
async def test_receive_batch_rejects_bad_arguments_with_the_value(
    channel_ok: bool, max_items: Any, error: type[Exception], shown: str
) -> None:
    _, rx = trio.open_memory_channel[int](1)
    channel: Any = rx if channel_ok else [1, 2]
    with pytest.raises(error, match=re.escape(shown)):
        await receive_batch(channel, max_items)


# -- what the mutation tests asked for (docs/testing.md, "Surviving mutants") --------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda rx: open_fan_out([1], double, workers=0), r"^workers must be >= 1, got 0$"),
        (
            lambda rx: open_fan_out([1], double, workers=1, buffer=-1),
            r"^buffer must be >= 0, got -1$",
        ),
        (
            lambda rx: open_fan_out([1], unchecked(42), workers=1),
            r"^fn must be an async callable, got 42$",
        ),
        (
            lambda rx: open_merge(rx, unchecked(42)),
            r"^receive_channels\[1\] must be a trio receive channel, got 42$",
        ),
        (
            lambda rx: open_broadcast(unchecked(42), consumers=1),
            r"^receive_channel must be a trio receive channel, got 42$",
        ),
        (lambda rx: open_broadcast(rx, consumers=0), r"^consumers must be >= 1, got 0$"),
    ],
)
def test_bad_arguments_are_named_in_the_message(
    make: Callable[[Any], object], message: str
) -> None:
    _, rx = trio.open_memory_channel[int](0)
    with pytest.raises((TypeError, ValueError), match=message):
        make(rx)


async def test_receive_batch_names_max_items_in_the_message() -> None:
    _, rx = trio.open_memory_channel[int](1)
    with pytest.raises(ValueError, match=r"^max_items must be >= 1, got 0$"):
        await receive_batch(rx, 0)


async def test_receive_batch_reads_a_fast_receive_channel() -> None:
    async with open_merge(prefilled(3), buffer=3) as merged:
        await trio.testing.wait_all_tasks_blocked()
        assert await receive_batch(merged, 10) == [0, 1, 2]


async def test_merge_and_broadcast_buffer_nothing_by_default() -> None:
    _, rx_a = trio.open_memory_channel[int](0)
    _, rx_b = trio.open_memory_channel[int](0)
    async with open_merge(rx_a) as merged, open_broadcast(rx_b, consumers=1) as (out,):
        assert merged.statistics().max_buffer_size == 0
        assert out.statistics().max_buffer_size == 0


@pytest.mark.parametrize("kind", ["iterable", "memory channel", "async iterable"])
async def test_fan_out_with_no_buffer_delivers_every_result(kind: str) -> None:
    # buffer=0: every result goes through the blocking send, not send_nowait.
    items = list(range(100))
    source: Any = iter(items)
    if kind == "memory channel":
        source = prefilled(len(items))
    elif kind == "async iterable":

        async def generate() -> AsyncIterator[int]:
            for item in items:
                yield item

        source = generate()
    async with open_fan_out(source, double, workers=3, buffer=0) as results:
        got = await collect(results)
    assert sorted(got) == [2 * x for x in items]


@pytest.mark.parametrize("kind", ["memory channel", "async iterable"])
async def test_fan_out_input_ending_while_a_worker_waits_keeps_the_calls_in_progress(
    kind: str, autojump_clock: object
) -> None:
    async def sleep_for(x: int) -> int:
        await trio.sleep(x)
        return x

    send_channel, receive_channel = trio.open_memory_channel[int](3)

    async def produce() -> None:
        with send_channel:
            for item in (5, 1, 2):
                send_channel.send_nowait(item)
            await trio.sleep(1.5)  # the workers done with 1 and 2 wait for more

    async def generate() -> AsyncIterator[int]:
        async for item in receive_channel:
            yield item

    source: Any = receive_channel if kind == "memory channel" else generate()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with open_fan_out(source, sleep_for, workers=3, buffer=3) as results:
            got = await collect(results)
    assert sorted(got) == [1, 2, 5]


async def test_merge_forwarder_checkpoints_when_nothing_blocks() -> None:
    source = prefilled(10_000)
    async with open_merge(source, buffer=100_000) as merged:
        await merged.receive()
        forwarded = merged.statistics().current_buffer_used
    assert forwarded < 1_000


async def test_broadcast_checkpoints_when_nothing_blocks() -> None:
    source = prefilled(10_000)
    async with open_broadcast(source, consumers=1, buffer=100_000) as (out,):
        await out.receive()
        delivered = out.statistics().current_buffer_used
    assert delivered < 1_000


async def test_every_pattern_keeps_moving_items_after_its_periodic_checkpoint() -> None:
    # 200 items, none of which blocks: each helper passes its checkpoint budget three times.
    async def generate() -> AsyncIterator[int]:
        for item in range(200):
            yield item

    async with open_fan_out(generate(), double, workers=1, buffer=1_000) as results:
        assert await collect(results) == [2 * x for x in range(200)]
    async with open_merge(prefilled(200), buffer=1_000) as merged:
        assert await collect(merged) == list(range(200))
    async with open_broadcast(prefilled(200), consumers=1, buffer=1_000) as (out,):
        assert await collect(out) == list(range(200))


async def test_broadcast_drops_a_consumer_that_closes_while_the_distributor_waits_on_it() -> None:
    async with open_broadcast(prefilled(5), consumers=2) as (first, second):
        assert (await first.receive(), await second.receive()) == (0, 0)
        await trio.testing.wait_all_tasks_blocked()  # the distributor waits to give 1 to first
        first.close()
        assert await collect(second) == [1, 2, 3, 4]
