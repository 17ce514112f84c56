"""Client-stream and bidi-stream calls end to end: the (send, receive) pair, half-close,
flow control both ways, errors and cancellation in both directions, no task left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
import trio
import trio.testing

from trio_micro import rpc
from trio_micro.protocol import FrameDecoder
from trio_micro.rpc._transport import Writer

from .conftest import address
from .test_channel import all_tasks


class Num(msgspec.Struct):
    n: int


class Total(msgspec.Struct):
    total: int
    count: int


class Shapes(rpc.Service, name="shapes"):
    def __init__(self) -> None:
        self.read_gate = trio.Event()  # `hold` reads nothing until this is set
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.received: list[int] = []
        self.sent = 0

    @rpc.client_stream
    async def add(self, requests: rpc.RequestStream[Num]) -> Total:
        total = count = 0
        async for item in requests:
            total += item.n
            count += 1
        return Total(total, count)

    @rpc.client_stream
    async def hold(self, requests: rpc.RequestStream[Num]) -> Total:
        self.started.set()
        try:
            await self.read_gate.wait()
            async for item in requests:
                self.received.append(item.n)
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return Total(sum(self.received), len(self.received))

    @rpc.client_stream
    async def first_only(self, requests: rpc.RequestStream[Num]) -> Total:
        item = await requests.receive()
        return Total(item.n, 1)

    @rpc.client_stream
    async def refuse(self, requests: rpc.RequestStream[Num]) -> Total:
        raise rpc.RpcError(rpc.Status.PERMISSION_DENIED, "no uploads")

    @rpc.client_stream
    async def crash(self, requests: rpc.RequestStream[Num]) -> Total:
        raise ValueError("bug")

    @rpc.bidi_stream
    async def double(
        self, requests: rpc.RequestStream[Num], responses: rpc.ResponseSender[Num]
    ) -> None:
        async for item in requests:
            await responses.send(Num(item.n * 2))

    @rpc.bidi_stream
    async def flood(
        self, requests: rpc.RequestStream[Num], responses: rpc.ResponseSender[Num]
    ) -> None:
        self.started.set()
        try:
            while True:
                await responses.send(Num(self.sent))
                self.sent += 1
        except trio.Cancelled:
            self.cancelled.set()
            raise


@pytest.fixture
def shapes() -> Shapes:
    return Shapes()


@pytest.fixture
async def stub(shapes: Shapes) -> AsyncIterator[Shapes]:
    async with (
        rpc.open_server([shapes], host="127.0.0.1", port=0) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        yield channel.stub(Shapes)


async def test_a_client_stream_returns_one_answer_for_many_requests(stub: Shapes) -> None:
    async with stub.add() as (send, receive):
        for n in range(200):
            await send.send(Num(n))
        await send.aclose()
        assert await receive.receive() == Total(sum(range(200)), 200)
        with pytest.raises(trio.EndOfChannel):
            await receive.receive()


async def test_a_bidi_stream_answers_as_requests_arrive(stub: Shapes) -> None:
    async with stub.double() as (send, receive):
        for n in range(3):
            await send.send(Num(n))
            assert await receive.receive() == Num(2 * n)
        await send.aclose()
        assert [x async for x in receive] == []


@pytest.fixture
def eager_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of the frames handed to ``Writer.write_eager`` (both ends: same process)."""
    kinds: list[str] = []
    write_eager = Writer.write_eager

    def spy(self: Writer, data: bytes) -> None:
        kinds.extend(type(frame).__name__ for frame in FrameDecoder().receive_data(data))
        write_eager(self, data)

    monkeypatch.setattr(Writer, "write_eager", spy)
    return kinds


async def test_a_lone_ping_pong_sends_every_item_without_the_writers_round(
    stub: Shapes, eager_writes: list[str]
) -> None:
    async with stub.double() as (send, receive):
        await send.send(Num(0))
        assert await receive.receive() == Num(0)
        eager_writes.clear()
        for n in range(1, 6):
            await send.send(Num(n))
            assert await receive.receive() == Num(2 * n)
        # Each request followed an answer, each answer a wait for the request.
        assert eager_writes == ["Item"] * 10
        await send.aclose()


async def test_a_run_of_sends_goes_through_the_writer(
    stub: Shapes, eager_writes: list[str]
) -> None:
    async with stub.add() as (send, receive):
        eager_writes.clear()
        for n in range(100):
            await send.send(Num(n))
        await send.aclose()
        assert await receive.receive() == Total(sum(range(100)), 100)
    # Only what the other side may be waiting for: CREDIT, the END, the RESPONSE.
    assert "Item" not in eager_writes
    assert "End" in eager_writes
    assert eager_writes[-1] == "Response"


async def test_a_bidi_stream_composes_with_a_nursery(stub: Shapes) -> None:
    async with stub.double() as (send, receive):

        async def produce() -> None:
            async with send:
                for n in range(300):
                    await send.send(Num(n))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            doubled = [x.n async for x in receive]
    assert doubled == [2 * n for n in range(300)]


async def test_sending_after_the_half_close_is_refused(stub: Shapes) -> None:
    async with stub.add() as (send, receive):
        await send.aclose()
        with pytest.raises(trio.ClosedResourceError, match="half-close"):
            await send.send(Num(1))
        assert await receive.receive() == Total(0, 0)


async def test_a_wrong_typed_request_is_refused_before_sending(stub: Shapes) -> None:
    async with stub.add() as (send, receive):
        with pytest.raises(TypeError, match="takes Num requests"):
            await send.send(Total(1, 1))  # type: ignore[arg-type]
        await send.aclose()
        assert await receive.receive() == Total(0, 0)


async def test_the_handlers_error_reaches_receive_and_send(stub: Shapes) -> None:
    async with stub.refuse() as (send, receive):
        with pytest.raises(rpc.RpcError) as info:
            await receive.receive()
        assert info.value.code is rpc.Status.PERMISSION_DENIED
        with pytest.raises(rpc.RpcError, match="no uploads"):
            await send.send(Num(1))


async def test_a_crashing_handler_ends_the_call_with_internal(stub: Shapes) -> None:
    async with stub.crash() as (_, receive):
        with pytest.raises(rpc.RpcError) as info:
            await receive.receive()
    assert info.value.code is rpc.Status.INTERNAL


async def test_sending_after_the_server_answered_is_a_broken_resource(stub: Shapes) -> None:
    async with stub.first_only() as (send, receive):
        await send.send(Num(5))
        assert await receive.receive() == Total(5, 1)
        with pytest.raises(trio.BrokenResourceError, match="already ended"):
            await send.send(Num(6))


async def test_a_server_that_stops_reading_holds_the_client_to_its_credit(
    shapes: Shapes, stub: Shapes
) -> None:
    sent = 0
    async with stub.hold() as (send, receive), trio.open_nursery() as nursery:

        async def sender() -> None:
            nonlocal sent
            for n in range(1000):
                await send.send(Num(n))
                sent += 1
            await send.aclose()

        nursery.start_soon(sender)
        await shapes.started.wait()
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert sent == 64  # the server's initial_stream_credit, not more
        shapes.read_gate.set()
        total = await receive.receive()
    assert total == Total(sum(range(1000)), 1000)


async def test_a_client_that_stops_reading_holds_the_server_to_its_credit(
    shapes: Shapes, stub: Shapes
) -> None:
    async with stub.flood() as (_, receive):
        assert await receive.receive() == Num(0)
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert shapes.sent == 64  # the channel's initial_stream_credit
    with trio.fail_after(5):
        await shapes.cancelled.wait()


async def test_a_bidi_stream_cancelled_while_waiting_for_credit_stops_counting_as_stalled(
    shapes: Shapes,
) -> None:
    async with (
        rpc.open_server([shapes], host="127.0.0.1", max_stalled_streams=1) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        stub = channel.stub(Shapes)
        for _ in range(2):  # the second stream may wait as the first did: it is alone
            shapes.cancelled = trio.Event()
            async with stub.flood() as (_, receive):
                assert isinstance(await receive.receive(), Num)
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert server.statistics().active_calls == 1  # waiting, not refused
            with trio.fail_after(5):
                await shapes.cancelled.wait()


async def test_leaving_the_block_cancels_the_handler(shapes: Shapes, stub: Shapes) -> None:
    async with stub.hold() as (send, _):
        await send.send(Num(1))
        await shapes.started.wait()
    with trio.fail_after(5):
        await shapes.cancelled.wait()


async def test_a_caller_cancelled_while_receiving_cancels_the_handler(
    autojump_clock: trio.testing.MockClock, shapes: Shapes, stub: Shapes
) -> None:
    # Virtual time: in real time a loaded machine could take the 50 ms to open the call,
    # which then never reaches the handler whose cancellation this waits for.
    with trio.move_on_after(0.05) as scope:
        async with stub.hold() as (_, receive):
            await receive.receive()
    assert scope.cancelled_caught
    with trio.fail_after(5):
        await shapes.cancelled.wait()


async def test_an_exception_in_the_block_propagates_unchanged_and_cancels(
    shapes: Shapes, stub: Shapes
) -> None:
    async def fail_inside() -> None:
        async with stub.hold():
            await shapes.started.wait()
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await fail_inside()
    with trio.fail_after(5):
        await shapes.cancelled.wait()


async def test_the_deadline_covers_both_halves(
    autojump_clock: trio.testing.MockClock, shapes: Shapes, stub: Shapes
) -> None:
    # Virtual time, for the reason given in the test above.
    with pytest.raises(trio.TooSlowError), trio.fail_after(0.1):
        async with stub.hold() as (_, receive):
            await receive.receive()
    with trio.fail_after(5):
        await shapes.cancelled.wait()


async def test_a_stream_call_is_used_once(stub: Shapes) -> None:
    call = stub.add()
    async with call as (send, receive):
        await send.aclose()
        await receive.receive()
    with pytest.raises(RuntimeError, match="already used"):
        async with call:
            pass


async def test_no_task_outlives_stream_calls(shapes: Shapes) -> None:
    before = len(all_tasks())
    async with (
        rpc.open_server([shapes], host="127.0.0.1", port=0) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        stub = channel.stub(Shapes)
        async with stub.double() as (send, receive):
            await send.send(Num(1))
            await receive.receive()
        async with stub.hold() as (send, _):
            await shapes.started.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert len(all_tasks()) == before


class Blob(msgspec.Struct):
    data: bytes


class Sink(rpc.Service, name="sink"):
    """A client stream whose handler reads nothing until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = trio.Event()

    @rpc.client_stream
    async def hold(self, requests: rpc.RequestStream[Blob]) -> Total:
        await self.gate.wait()
        count = 0
        async for _ in requests:
            count += 1
        return Total(count, count)

    @rpc.client_stream
    async def ignore(self, requests: rpc.RequestStream[Blob]) -> Total:
        await self.gate.wait()
        return Total(0, 0)  # the items are never read

    @rpc.unary
    async def echo(self, request: Num) -> Num:
        return request


async def test_items_waiting_to_be_read_fail_their_call_past_the_byte_budget() -> None:
    # Credit lets the client send 64 items of up to max_frame_size each; the byte budget
    # (64 KiB here) bounds what waits for the handler, failing that call only.
    sink = Sink()
    item = Blob(b"x" * (16 * 1024))
    async with (
        rpc.open_server([sink], host="127.0.0.1", port=0, max_buffered_bytes=64 * 1024) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        stub = channel.stub(Sink)
        async with stub.hold() as (send, receive):
            for _ in range(3):
                await send.send(item)
            # The echo follows the items on the same connection: once it is answered, the
            # server has read them. Three items wait, charged: 48 KiB and a little more.
            assert await stub.echo(Num(7)) == Num(7)
            assert 3 * 16 * 1024 < server.statistics().request_bytes < 4 * 16 * 1024
            for _ in range(17):  # 320 KiB in all, within the stream's credit of 64 items
                await send.send(item)
            assert await stub.echo(Num(7)) == Num(7)  # the connection is fine
            assert server.statistics().request_bytes == 0  # refused: the items dropped
            sink.gate.set()
            with pytest.raises(rpc.RpcError) as caught:
                await receive.receive()
        assert caught.value.code is rpc.Status.RESOURCE_EXHAUSTED
        assert caught.value.details == {"refused": "max_buffered_bytes"}
        assert "request items waiting to be read" in caught.value.message
        assert server.statistics().request_bytes == 0
        assert await stub.echo(Num(8)) == Num(8)


async def test_items_the_handler_never_read_give_their_bytes_back_when_the_call_ends() -> None:
    sink = Sink()
    async with (
        rpc.open_server([sink], host="127.0.0.1", port=0) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        stub = channel.stub(Sink)
        async with stub.ignore() as (send, receive):
            for _ in range(3):
                await send.send(Blob(b"x" * 1024))
            assert await stub.echo(Num(7)) == Num(7)  # the server has read the items
            assert server.statistics().request_bytes > 3 * 1024
            sink.gate.set()
            assert await receive.receive() == Total(0, 0)
        assert server.statistics().request_bytes == 0
