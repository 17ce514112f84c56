"""Compression on the asyncio client, against the real trio server (127.0.0.1, port 0): bytes
on the wire counted by an asyncio TCP proxy, the channel's and a stub's choice, a bomb from
a hand-driven server failing only its call, and bad arguments refused at open_channel."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from msgspec.msgpack import Ext

from trio_micro import aio, rpc
from trio_micro.protocol import SUPPORTED_COMPRESSION

from .conftest import ServerThread, fails_then_works, run, start_server
from .services import AioTestService, Answer, Ask

BIG = 64 * 1024  # bytes of b"x": squeezes to well under a tenth with zlib


class Counter:
    """Bytes through the proxy, each way."""

    def __init__(self) -> None:
        self.up = 0
        self.down = 0


@asynccontextmanager
async def proxy(target: str) -> AsyncIterator[tuple[str, Counter]]:
    """A TCP proxy to ``target`` counting the bytes it forwards."""
    counter = Counter()
    host, port = target.rsplit(":", 1)

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
        try:
            while data := await src.read(65536):
                if up:
                    counter.up += len(data)
                else:
                    counter.down += len(data)
                dst.write(data)
                await dst.drain()
        except ConnectionError:
            pass
        finally:
            dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", counter


def moved(
    target: str, call: Callable[[aio.Channel], Awaitable[object]], **options: Any
) -> tuple[Counter, object]:
    """The bytes one channel (made with ``options``) moves for ``call``, and its result."""

    async def main() -> tuple[Counter, object]:
        async with proxy(target) as (via, counter):
            async with aio.open_channel(via, **options) as channel:
                result = await call(channel)
            return counter, result

    return run(main)


@pytest.mark.parametrize("encoding", SUPPORTED_COMPRESSION)
def test_a_large_unary_answer_comes_compressed(server: ServerThread, encoding: str) -> None:
    async def call(channel: aio.Channel) -> object:
        return await channel.stub(AioTestService).echo(Ask(value=1, size=BIG))

    counter, answer = moved(server.target, call, compression=encoding)
    assert answer == Answer(1, metadata={"tm-compression": encoding}, payload=b"x" * BIG)
    assert counter.down < BIG / 10


@pytest.mark.parametrize("encoding", SUPPORTED_COMPRESSION)
def test_a_large_request_goes_compressed(server: ServerThread, encoding: str) -> None:
    async def call(channel: aio.Channel) -> object:
        return (await channel.stub(AioTestService).echo(Ask(value=2, blob=b"y" * BIG))).value

    counter, value = moved(server.target, call, compression=encoding)
    assert value == 2
    assert counter.up < BIG / 10


def test_client_stream_items_go_compressed(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> object:
        async with channel.stub(AioTestService).total() as (send, receive):
            for value in (1, 2, 3):
                await send.send(Ask(value=value, blob=b"y" * BIG))
            await send.aclose()
            return (await receive.receive()).value

    counter, total = moved(server.target, call, compression="zlib")
    assert total == 6
    assert counter.up < BIG / 10


def test_server_stream_items_come_compressed_and_are_inflated(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> object:
        stub = channel.stub(AioTestService)
        return [a.payload async for a in stub.count(Ask(value=3, blob=b"z" * BIG))]

    counter, payloads = moved(server.target, call, compression="zlib")
    assert payloads == [b"z" * BIG] * 3
    assert counter.down < BIG / 10


def test_a_stub_choice_overrides_the_channels() -> None:
    # The server compresses answers by default; the stub's "none" turns that off for its
    # calls, which the channel's choice (none given) would not.
    running = start_server(compression="zlib")
    try:

        async def call(channel: aio.Channel) -> object:
            await channel.stub(AioTestService).echo(Ask(size=BIG))
            await channel.stub(AioTestService, compression="none").echo(Ask(size=BIG))
            return None

        counter, _ = moved(running.target, call)
        assert BIG < counter.down < BIG * 1.2  # one answer compressed, one not
    finally:
        running.stop()


def test_an_untyped_calls_choice_compresses_its_request_and_answer(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> object:
        request = {"value": 3, "size": BIG, "blob": b"y" * BIG}
        return await channel.call("aio.Test/echo", request, compression="zlib")

    counter, answer = moved(server.target, call)
    assert answer == {
        "value": 3,
        "deadline_ms": -1.0,
        "metadata": {"tm-compression": "zlib"},
        "payload": b"x" * BIG,
    }
    assert (counter.up < BIG / 10, counter.down < BIG / 10) == (True, True)


def test_an_untyped_calls_choice_overrides_the_channels(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> object:
        request = {"blob": b"y" * BIG}
        await channel.call("aio.Test/echo", request)  # the channel's zlib
        async with channel.stream_call("aio.Test/total", bidi=False, compression="none") as (
            send,
            receive,
        ):
            await send.send(request)
            await send.aclose()
            await receive.receive()
        return None

    counter, _ = moved(server.target, call, compression="zlib")
    assert BIG < counter.up < BIG * 1.2  # one request compressed, one not


def test_below_the_threshold_a_request_goes_as_it_is(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> object:
        return (await channel.stub(AioTestService).echo(Ask(blob=b"y" * BIG))).value

    counter, _ = moved(server.target, call, compression="zlib", compression_threshold=BIG * 2)
    assert counter.up > BIG


BOMB = Ext(1, zlib.compress(b"\0" * 1024 * 1024, 9))  # 1 MiB of zeros in ~1 KB


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (BOMB, rpc.Status.RESOURCE_EXHAUSTED, "past"),  # over max_frame_size (64 KiB)
        (Ext(99, b"?"), rpc.Status.INTERNAL, "not accepted"),  # an encoding nobody announced
        (Ext(1, b"not zlib"), rpc.Status.INTERNAL, "does not inflate"),
    ],
)
def test_a_bad_compressed_answer_fails_only_its_call(
    payload: Ext, status: rpc.Status, words: str
) -> None:
    async def main() -> tuple[rpc.RpcError, Answer, bool]:
        return await fails_then_works(payload, lambda ch: ch.stub(AioTestService).echo(Ask()))

    error, answer, same_connection = run(main)
    assert (error.code, answer.value, same_connection) == (status, 2, True)
    assert words in error.message


def test_a_bomb_in_a_stream_item_fails_only_that_stream() -> None:
    async def consume(channel: aio.Channel) -> object:
        return [item async for item in channel.stub(AioTestService).count(Ask(value=1))]

    async def main() -> tuple[rpc.RpcError, Answer, bool]:
        return await fails_then_works(BOMB, consume)

    error, answer, same_connection = run(main)
    assert (error.code, answer.value, same_connection) == (
        rpc.Status.RESOURCE_EXHAUSTED,
        2,
        True,
    )


@pytest.mark.parametrize(
    ("options", "exc"),
    [
        ({"compression": "lz4"}, ValueError),
        ({"compression": 1}, TypeError),
        ({"compression_threshold": -1}, ValueError),
        ({"compression_threshold": 1.5}, TypeError),
    ],
)
def test_bad_compression_options_raise_at_open_channel(
    options: dict[str, object], exc: type[Exception]
) -> None:
    async def main() -> None:
        async with aio.open_channel("127.0.0.1:1", **options):  # type: ignore[arg-type]
            pass  # pragma: no cover - never connects

    with pytest.raises(exc, match="compression"):
        run(main)


def test_an_unknown_stub_compression_raises(server: ServerThread) -> None:
    async def main() -> None:
        async with aio.open_channel(server.target) as channel:
            channel.stub(AioTestService, compression="lz4")

    with pytest.raises(ValueError, match="lz4"):
        run(main)
