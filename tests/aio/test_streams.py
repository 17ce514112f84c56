"""trio_micro.aio: client- and bidi-stream calls against a real trio_micro server (run by
trio in a thread, 127.0.0.1 port 0); each test runs its own bounded ``asyncio.run``."""

from __future__ import annotations

import asyncio
import inspect
from typing import cast

import pytest

from trio_micro import aio, rpc
from trio_micro.protocol import DEFAULT_MAX_FRAME_SIZE, Connection, Role, Settings

from .conftest import ServerThread, run, start_server
from .services import AioTestService, Answer, Ask


def test_client_stream_sends_past_the_servers_credit_and_gets_one_answer(
    server: ServerThread,
) -> None:
    async def main() -> tuple[int, type[BaseException]]:
        async with aio.open_channel(server.target) as channel:
            call = channel.stub(AioTestService).total()
            # The runtime object is aio's; a type checker sees rpc.StreamCall's methods.
            assert isinstance(cast(object, call), aio.StreamCall)
            async with call as (send, receive):
                for n in range(300):  # the server grants 64 at a time
                    await send.send(Ask(value=n))
                await send.aclose()
                answer = await receive.receive()
                with pytest.raises(aio.EndOfChannel) as info:
                    await receive.receive()  # a client-stream has one answer
            return answer.value, info.type

    assert run(main) == (sum(range(300)), aio.EndOfChannel)


def test_bidi_stream_flows_both_ways_past_both_credit_windows(server: ServerThread) -> None:
    async def main() -> list[int]:
        async with aio.open_channel(server.target, initial_stream_credit=4) as channel:
            async with channel.stub(AioTestService).chat() as (send, receive):

                async def feed() -> None:
                    async with send:  # half-closes on exit
                        for n in range(300):
                            await send.send(Ask(value=n))

                feeding = asyncio.create_task(feed())
                try:
                    got = [answer.value async for answer in receive]
                    await feeding
                finally:
                    feeding.cancel()  # a no-op once it is done
            return got

    assert run(main) == list(range(300))


def test_a_server_error_mid_client_stream_reaches_receive_and_send(server: ServerThread) -> None:
    async def main() -> tuple[rpc.RpcError, rpc.RpcError]:
        async with aio.open_channel(server.target) as channel:
            async with channel.stub(AioTestService).total() as (send, receive):
                for value in (1, 2, -1):
                    await send.send(Ask(value=value))
                with pytest.raises(rpc.RpcError) as received:
                    await receive.receive()
                with pytest.raises(rpc.RpcError) as sent:
                    await send.send(Ask(value=3))
            return received.value, sent.value

    received, sent = run(main)
    assert (received.code, received.message) == (rpc.Status.ABORTED, "stopped at 3")
    assert sent.code is rpc.Status.ABORTED


def test_a_server_error_mid_bidi_stream_ends_the_iteration_with_it(server: ServerThread) -> None:
    seen: list[int] = []

    async def main() -> None:
        async with (
            aio.open_channel(server.target) as channel,
            channel.stub(AioTestService).chat() as (send, receive),
        ):
            await send.send(Ask(value=7, size=3))
            await send.send(Ask(value=-1))
            async for answer in receive:
                seen.append(answer.value)  # noqa: PERF401 (the answers before the error)

    with pytest.raises(rpc.RpcError) as info:
        run(main)
    assert (seen, info.value.code) == ([7, 7, 7], rpc.Status.ABORTED)


def test_a_cancelled_caller_cancels_the_call_and_the_connection_carries_on(
    server: ServerThread,
) -> None:
    async def main() -> tuple[bool, int]:
        async with aio.open_channel(server.target) as channel:
            stub = channel.stub(AioTestService)
            before = await channel.connection()

            async def caller() -> None:
                async with stub.hold() as (send, receive):
                    await send.send(Ask())
                    await receive.receive()  # never answered

            task = asyncio.create_task(caller())
            await asyncio.to_thread(server.probe.started.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.to_thread(server.probe.cancelled.wait, 10)
            answer = await stub.echo(Ask(value=4))
            return await channel.connection() is before, answer.value

    assert run(main) == (True, 4)
    assert server.probe.cancelled.is_set()


def test_leaving_the_block_without_the_answer_cancels_the_handler(server: ServerThread) -> None:
    async def main() -> tuple[bool, int]:
        async with aio.open_channel(server.target) as channel:
            stub = channel.stub(AioTestService)
            async with stub.hold() as (send, _):
                await send.send(Ask())
                await asyncio.to_thread(server.probe.started.wait, 10)
            cancelled = await asyncio.to_thread(server.probe.cancelled.wait, 10)
            return cancelled, (await stub.echo(Ask(value=2))).value

    assert run(main) == (True, 2)


def test_aio_timeout_sends_its_deadline_with_a_stream_call(server: ServerThread) -> None:
    async def main() -> float:
        async with (
            aio.open_channel(server.target) as channel,
            aio.timeout(5.0),
            channel.stub(AioTestService).total() as (send, receive),
        ):
            await send.aclose()
            return (await receive.receive()).deadline_ms

    assert 0 < run(main) <= 5000


def test_an_expired_aio_timeout_cancels_a_stream_call_on_the_server(
    server: ServerThread,
) -> None:
    async def main() -> None:
        async with (
            aio.open_channel(server.target) as channel,
            aio.timeout(0.2),
            channel.stub(AioTestService).chat() as (send, receive),
        ):
            await send.send(Ask(value=1))
            assert (await receive.receive()).value == 1
            await receive.receive()  # the handler waits for the next request

    with pytest.raises(TimeoutError):
        run(main)
    assert server.probe.cancelled.wait(10)


def test_a_server_that_does_not_read_makes_send_wait_for_credit(server: ServerThread) -> None:
    async def main() -> tuple[int, bool, bool]:
        async with aio.open_channel(server.target) as channel:
            sent = 0

            async def sender() -> None:
                nonlocal sent
                async with channel.stub(AioTestService).hold() as (send, _):
                    for n in range(1000):
                        await send.send(Ask(value=n))
                        sent += 1

            task = asyncio.create_task(sender())
            await asyncio.to_thread(server.probe.started.wait, 10)
            await asyncio.sleep(0.2)  # time enough to send far more, were it allowed
            waiting = not task.done()
            task.cancel()  # leaving the block while waiting for credit sends CANCEL
            with pytest.raises(asyncio.CancelledError):
                await task
            cancelled = await asyncio.to_thread(server.probe.cancelled.wait, 10)
            return sent, waiting, cancelled

    assert run(main) == (64, True, True)  # the server's initial_stream_credit, no more


def test_an_item_of_the_wrong_type_is_a_type_error_and_is_not_sent(server: ServerThread) -> None:
    async def main() -> int:
        async with (
            aio.open_channel(server.target) as channel,
            channel.stub(AioTestService).total() as (send, receive),
        ):
            with pytest.raises(TypeError, match="takes Ask requests"):
                await send.send(Answer(1))  # type: ignore[arg-type]
            await send.send(Ask(value=2))  # a sent Answer would fail the call
            await send.aclose()
            return (await receive.receive()).value

    assert run(main) == 2


def test_send_after_the_half_close_is_a_closed_resource_error(server: ServerThread) -> None:
    async def main() -> None:
        async with (
            aio.open_channel(server.target) as channel,
            channel.stub(AioTestService).total() as (send, _),
        ):
            await send.aclose()
            await send.aclose()  # idempotent
            await send.send(Ask())

    with pytest.raises(aio.ClosedResourceError, match="aclose"):
        run(main)


def test_send_after_the_server_answered_is_a_broken_resource_error(server: ServerThread) -> None:
    async def main() -> int:
        async with (
            aio.open_channel(server.target) as channel,
            channel.stub(AioTestService).first() as (send, receive),
        ):
            await send.send(Ask(value=5))
            answer = await receive.receive()  # answered before the half-close
            with pytest.raises(aio.BrokenResourceError):
                await send.send(Ask())
            return answer.value

    assert run(main) == 5


def test_receive_after_aclose_is_a_closed_resource_error_and_cancels_the_call(
    server: ServerThread,
) -> None:
    async def main() -> None:
        async with (
            aio.open_channel(server.target) as channel,
            channel.stub(AioTestService).chat() as (send, receive),
        ):
            await send.send(Ask(value=1))
            await receive.aclose()
            with pytest.raises(aio.ClosedResourceError):
                await receive.receive()
            with pytest.raises(aio.ClosedResourceError, match="cancelled"):
                await send.send(Ask())

    run(main)
    assert server.probe.cancelled.wait(10)


def test_a_stream_call_is_usable_once(server: ServerThread) -> None:
    async def main() -> None:
        async with aio.open_channel(server.target) as channel:
            call = channel.stub(AioTestService).total()
            async with call as (send, _):
                await send.aclose()
            async with call:
                pass

    with pytest.raises(RuntimeError, match="already used"):
        run(main)


def test_stream_calls_work_under_uvloop(server: ServerThread) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[int, list[int]]:
        async with aio.open_channel(server.target) as channel:
            stub = channel.stub(AioTestService)
            async with stub.total() as (send, receive):
                for n in range(100):
                    await send.send(Ask(value=n))
                await send.aclose()
                total = (await receive.receive()).value
            async with stub.chat() as (ask, answers):
                await ask.send(Ask(value=3, size=100))
                await ask.aclose()
                return total, [a.value async for a in answers]

    assert run(main, loop_factory=uvloop.new_event_loop) == (sum(range(100)), [3] * 100)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (aio.StreamCall, rpc.StreamCall),
        (aio.RequestSender, rpc.RequestSender),
        (aio.ResponseReceiver, rpc.ResponseReceiver),
    ],
)
def test_the_aio_stream_types_offer_what_a_type_checker_sees(ours: type, theirs: type) -> None:
    # On a stub, mypy sees the rpc types (the stub is typed as the service class): every
    # method it lets you call must be there, taking the same arguments.
    wanted = {"send", "receive", "aclose", "__aenter__", "__aexit__", "__aiter__", "__anext__"}
    for name in wanted & set(dir(theirs)):
        assert hasattr(ours, name), name
        ours_params = list(inspect.signature(getattr(ours, name)).parameters)
        theirs_params = list(inspect.signature(getattr(theirs, name)).parameters)
        assert len(ours_params) == len(theirs_params) or name == "__aexit__", name


def test_a_sender_waiting_for_credit_on_a_lost_connection_is_unavailable() -> None:
    running = start_server(grace_period=0.1)

    async def main() -> rpc.Status:
        async with (
            aio.open_channel(running.target) as channel,
            channel.stub(AioTestService).hold() as (send, _),
        ):
            for n in range(64):  # all the server's credit
                await send.send(Ask(value=n))
            stopping = asyncio.create_task(asyncio.to_thread(running.stop))
            with pytest.raises(rpc.RpcError) as info:
                await send.send(Ask())  # waits for credit, then the server is gone
            await stopping
            return info.value.code

    try:
        code = run(main)
    finally:
        running.stop()
    assert code is rpc.Status.UNAVAILABLE  # the grace period ran out


def test_an_item_over_the_servers_frame_size_fails_alone(server: ServerThread) -> None:
    class Big(Ask):
        blob: bytes = b"x" * DEFAULT_MAX_FRAME_SIZE

    async def main() -> tuple[rpc.Status, int]:
        async with (
            aio.open_channel(server.target) as channel,
            channel.stub(AioTestService).total() as (send, receive),
        ):
            with pytest.raises(rpc.RpcError) as info:
                await send.send(Big(value=100))
            await send.send(Ask(value=3))  # the call carries on without it
            await send.aclose()
            return info.value.code, (await receive.receive()).value

    assert run(main) == (rpc.Status.RESOURCE_EXHAUSTED, 3)


class Uploads(rpc.Service, name="aio.Uploads"):
    """Only a stub here: the server below is driven by hand."""

    @rpc.client_stream
    async def put(self, requests: rpc.RequestStream[Answer]) -> Answer:
        raise NotImplementedError  # pragma: no cover


def test_a_sender_waits_while_the_transport_is_paused() -> None:
    # A server that grants far more credit than the sockets' buffers hold, but stops
    # reading after the handshake: the sender must stop when the transport's buffer is
    # full, long before the credit runs out (at most 64 MiB in flight if it did not).
    credit = 4000

    async def main() -> tuple[bool, bool, int]:
        done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = Connection(Role.SERVER, settings=Settings(initial_stream_credit=credit))
            writer.write(conn.initiate())
            conn.receive_data(await reader.read(65536))  # the client's HELLO; then no more
            await done.wait()
            writer.close()

        listener = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        async with (
            listener,
            aio.open_channel(f"127.0.0.1:{port}") as channel,
            channel.stub(Uploads).put() as (send, _),
        ):
            sent = 0

            async def sender() -> None:
                nonlocal sent
                while True:
                    await send.send(Answer(sent, payload=b"x" * 16384))
                    sent += 1

            task = asyncio.create_task(sender())
            last = -1
            while sent != last:  # until the sender stops making progress
                last = sent
                await asyncio.sleep(0.05)
            paused = (await channel.connection()).paused
            waiting = not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            done.set()
            return paused, waiting, sent

    paused, waiting, sent = run(main)
    assert (paused, waiting) == (True, True)
    assert sent < credit
