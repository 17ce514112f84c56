"""Deadlines and cancellation across the wire, and flow control of server-streams."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
import trio
import trio.testing

from trio_micro import rpc

from .conftest import address, cancel_sleep_once_started
from .services import Empty, RelayService, StreamingRequest, TestService


async def test_cancel_after_begin(service: TestService, stub: TestService) -> None:
    await cancel_sleep_once_started(service, stub)


async def test_cancel_after_first_response(service: TestService, stub: TestService) -> None:
    stream = stub.streaming_output_call(StreamingRequest(1_000_000))
    async with stream:
        first = await stream.__anext__()
        assert first.index == 0
    with trio.fail_after(5):
        await service.cancelled.wait()
    with pytest.raises(rpc.RpcError) as info:
        await stream.__anext__()
    assert info.value.code is rpc.Status.CANCELLED


async def test_break_out_of_async_for_cancels_the_stream(
    service: TestService, stub: TestService
) -> None:
    async for item in stub.streaming_output_call(StreamingRequest(1_000_000)):
        if item.index == 5:
            break
    with trio.fail_after(5):
        await service.cancelled.wait()


async def test_cancelling_a_waiting_consumer_cancels_the_stream(
    service: TestService, stub: TestService
) -> None:
    service.release = trio.Event()
    with trio.move_on_after(5) as scope:
        async for _ in stub.streaming_output_call(StreamingRequest(1_000_000)):
            scope.cancel()
    with trio.fail_after(5):
        await service.cancelled.wait()


async def test_timeout_on_sleeping_server(
    autojump_clock: trio.testing.MockClock, service: TestService, stub: TestService
) -> None:
    with pytest.raises(trio.TooSlowError), trio.fail_after(0.5):
        await stub.sleep(Empty())
    await service.cancelled.wait()


async def three_hop_chain(
    stack: AsyncExitStack, hop_a: RelayService, hop_b: RelayService, sleeper: TestService
) -> rpc.Channel:
    """Serve ``hop_a -> hop_b -> sleeper`` (one server each); return the channel to hop_a."""
    server_c = await stack.enter_async_context(rpc.open_server([sleeper], host="127.0.0.1"))
    to_c = await stack.enter_async_context(rpc.open_channel(address(server_c)))
    hop_b.next_sleeper = to_c.stub(TestService)
    server_b = await stack.enter_async_context(rpc.open_server([hop_b], host="127.0.0.1"))
    to_b = await stack.enter_async_context(rpc.open_channel(address(server_b)))
    hop_a.next_relay = to_b.stub(RelayService)
    server_a = await stack.enter_async_context(rpc.open_server([hop_a], host="127.0.0.1"))
    return await stack.enter_async_context(rpc.open_channel(address(server_a)))


async def test_deadline_stops_a_three_hop_chain(autojump_clock: trio.testing.MockClock) -> None:
    sleeper = TestService()
    hop_b, hop_a = RelayService(), RelayService()
    async with AsyncExitStack() as stack:
        to_a = await three_hop_chain(stack, hop_a, hop_b, sleeper)

        start = trio.current_time()
        with trio.move_on_after(1) as scope:
            await to_a.stub(RelayService).relay(Empty())
        assert scope.cancelled_caught
        assert trio.current_time() - start == pytest.approx(1, abs=0.01)
        for event in (hop_a.cancelled, hop_b.cancelled, sleeper.cancelled):
            await event.wait()
    # Each hop ran under the caller's deadline (sent as the time left, in whole ms).
    assert hop_a.deadline == pytest.approx(start + 1, abs=0.002)
    assert hop_b.deadline <= hop_a.deadline + 0.001


async def test_cancellation_stops_a_three_hop_chain() -> None:
    sleeper = TestService()
    hop_b, hop_a = RelayService(), RelayService()
    async with AsyncExitStack() as stack:
        to_a = await three_hop_chain(stack, hop_a, hop_b, sleeper)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    await to_a.stub(RelayService).relay(Empty())

                nursery.start_soon(call)
                await sleeper.started.wait()
                nursery.cancel_scope.cancel()
            for event in (hop_a.cancelled, hop_b.cancelled, sleeper.cancelled):
                await event.wait()


async def test_slow_consumer_bounds_what_the_server_produces(
    autojump_clock: trio.testing.MockClock, service: TestService, server: rpc.Server
) -> None:
    credit = 16
    async with rpc.open_channel(address(server), initial_stream_credit=credit) as channel:
        stub = channel.stub(TestService)
        consumed = 0
        async with stub.streaming_output_call(StreamingRequest(10_000_000)) as stream:
            async for item in stream:
                assert item.index == consumed
                consumed += 1
                await trio.sleep(0.01)  # a slow consumer
                assert service.produced - consumed <= credit
                if consumed == 500:
                    break
        # The server did not run ahead: everything it produced fits in the credit window.
        assert service.produced <= consumed + credit
        await service.cancelled.wait()


class RecordErrors:
    """A server interceptor keeping the ``RpcError`` each call's ``proceed`` raised."""

    def __init__(self) -> None:
        self.errors: list[rpc.RpcError] = []

    async def intercept(self, call: rpc.ServerCall, proceed: Callable[[], Awaitable[None]]) -> None:
        try:
            await proceed()
        except rpc.RpcError as exc:
            self.errors.append(exc)
            raise


async def test_a_call_the_client_cancels_ends_as_cancelled_on_the_server() -> None:
    service, record = TestService(), RecordErrors()
    async with (
        rpc.open_server([service], host="127.0.0.1", interceptors=[record]) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        await cancel_sleep_once_started(service, channel.stub(TestService))
        with trio.fail_after(5):
            while not record.errors:  # noqa: ASYNC110 - recorded as the call ends
                await trio.sleep(0.001)
    [error] = record.errors
    assert (error.code, error.message) == (rpc.Status.CANCELLED, "cancelled by the client")


async def test_a_stream_cancelled_while_waiting_for_credit_ends_as_cancelled_on_the_server(
    service: TestService,
) -> None:
    record = RecordErrors()
    async with (
        rpc.open_server([service], host="127.0.0.1", interceptors=[record]) as server,
        rpc.open_channel(address(server), initial_stream_credit=4) as channel,
    ):
        async with channel.stub(TestService).streaming_output_call(StreamingRequest(100)) as s:
            await s.__anext__()
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)  # out of credit
        with trio.fail_after(5):
            await service.cancelled.wait()
            while not record.errors:  # noqa: ASYNC110 - recorded as the call ends
                await trio.sleep(0.001)
    [error] = record.errors
    assert (error.code, error.message) == (rpc.Status.CANCELLED, "cancelled by the client")


async def test_a_server_stream_sends_exactly_its_credit_before_it_waits(
    service: TestService, server: rpc.Server
) -> None:
    async with (
        rpc.open_channel(address(server), initial_stream_credit=4) as channel,
        channel.stub(TestService).streaming_output_call(StreamingRequest(100)) as stream,
    ):
        assert (await stream.__anext__()).index == 0
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert service.produced == 4
