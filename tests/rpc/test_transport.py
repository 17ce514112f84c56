"""The Writer's eager path: direct sends when idle, the queue for the rest."""

from __future__ import annotations

import socket

import trio
import trio.testing

from trio_micro.rpc._transport import Writer


async def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )


async def _receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        data += await stream.receive_some(size - len(data))
    return bytes(data)


async def test_write_eager_sends_at_once_when_the_writer_is_idle() -> None:
    left, right = await _socket_pair()
    writer = Writer(left)
    async with left, right, trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await trio.testing.wait_all_tasks_blocked()
        writer.write_eager(b"hello")
        assert writer.pending == 0  # sent without the writer task: nothing queued
        assert await _receive_exactly(right, 5) == b"hello"
        writer.finish()


async def test_write_eager_queues_what_the_socket_does_not_take_in_order() -> None:
    left, right = await _socket_pair()
    writer = Writer(left)
    big = bytes(range(256)) * (1 << 14)  # 4 MiB: more than the socket buffers hold
    async with left, right, trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await trio.testing.wait_all_tasks_blocked()
        writer.write_eager(big)
        assert 0 < writer.pending < len(big)  # the rest waits for the writer
        writer.write_eager(b"tail")  # not idle now: queued behind, never ahead
        received = await _receive_exactly(right, len(big) + 4)
        assert received == big + b"tail"
        writer.finish()


async def test_write_eager_without_a_plain_socket_uses_the_queue() -> None:
    send, receive = trio.testing.memory_stream_pair()
    writer = Writer(send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await trio.testing.wait_all_tasks_blocked()
        writer.write_eager(b"abc")
        assert writer.pending == 3
        assert await receive.receive_some(3) == b"abc"
        writer.finish()


async def _run_capturing(writer: Writer, errors: list[BaseException]) -> None:
    try:
        await writer.run()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        errors.append(exc)


async def test_write_eager_to_a_broken_socket_leaves_the_error_to_the_writer() -> None:
    left, right = await _socket_pair()
    writer = Writer(left)
    errors: list[BaseException] = []
    await right.aclose()
    async with left, trio.open_nursery() as nursery:
        nursery.start_soon(_run_capturing, writer, errors)
        await trio.testing.wait_all_tasks_blocked()
        writer.write_eager(b"x")  # EPIPE: queued, and the writer's send_all raises
        assert writer.pending == 1
    assert isinstance(errors[0], trio.BrokenResourceError)


async def test_write_eager_to_a_closed_socket_leaves_the_error_to_the_writer() -> None:
    left, right = await _socket_pair()
    writer = Writer(left)
    errors: list[BaseException] = []
    async with right, trio.open_nursery() as nursery:
        nursery.start_soon(_run_capturing, writer, errors)
        await trio.testing.wait_all_tasks_blocked()
        left.socket.close()  # fileno() is now -1: never write to a reused descriptor
        writer.write_eager(b"x")
        assert writer.pending == 1
    assert isinstance(errors[0], trio.ClosedResourceError)
