"""Compression over real sockets: every call shape both ways, the per-channel, per-stub and
per-call choice, and bad compressed input from a hand-driven peer while a well-behaved
client calls alongside and sees zero failures."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import msgspec
import pytest
import trio
from msgspec.msgpack import Ext

from trio_micro import rpc, testing
from trio_micro.protocol import (
    COMPRESSION_HINT,
    CallType,
    Connection,
    Error,
    FrameEncoder,
    Item,
    Request,
    Response,
    Role,
    Settings,
)

from .conftest import address
from .raw import RawClient

# 8 MiB of zeros in 8 KB: inflates past the default max_frame_size (4 MiB).
BOMB = Ext(1, zlib.compress(b"\0" * 8 * 1024 * 1024, 9))
TEXT = b"all work and no play makes jack a dull boy " * 500  # 22 KB, squeezes to < 1 KB


class Blob(msgspec.Struct):
    data: bytes


class Blobs(rpc.Service, name="blobs"):
    @rpc.unary
    async def echo(self, req: Blob) -> Blob:
        return req

    @rpc.server_stream
    async def repeat(self, req: Blob) -> AsyncIterator[Blob]:
        for _ in range(3):
            yield req

    @rpc.client_stream
    async def concat(self, requests: rpc.RequestStream[Blob]) -> Blob:
        return Blob(b"".join([b.data async for b in requests]))

    @rpc.bidi_stream
    async def echo_all(
        self, requests: rpc.RequestStream[Blob], responses: rpc.ResponseSender[Blob]
    ) -> None:
        async for item in requests:
            await responses.send(item)


@asynccontextmanager
async def proxy(server: rpc.Server) -> AsyncIterator[tuple[str, testing.Proxy]]:
    """A TCP proxy to ``server`` counting the bytes it forwards, and its target."""
    async with testing.open_proxy(server.address) as counter:
        host, port = counter.address
        yield f"{host}:{port}", counter


@pytest.fixture
async def server() -> AsyncIterator[rpc.Server]:
    async with rpc.open_server([Blobs()], host="127.0.0.1", port=0) as server:
        yield server


async def every_shape(stub: Blobs) -> None:
    blob = Blob(TEXT)
    assert await stub.echo(blob) == blob
    assert [b async for b in stub.repeat(blob)] == [blob] * 3
    async with stub.concat() as (send, receive):
        await send.send(blob)
        await send.send(blob)
        await send.aclose()
        assert await receive.receive() == Blob(TEXT * 2)
    async with stub.echo_all() as (send, receive):
        await send.send(blob)
        assert await receive.receive() == blob
        await send.aclose()


async def bytes_moved(server: rpc.Server, **channel: str | None) -> testing.Proxy:
    async with (
        proxy(server) as (target, counter),
        rpc.open_channel(target, **channel) as ch,  # type: ignore[arg-type]
    ):
        await every_shape(ch.stub(Blobs))
    return counter


async def test_every_call_shape_compresses_both_ways(server: rpc.Server) -> None:
    plain = await bytes_moved(server)
    zlibbed = await bytes_moved(server, compression="zlib")
    assert plain.bytes_up > 4 * len(TEXT)
    assert plain.bytes_down > 6 * len(TEXT)
    assert zlibbed.bytes_up < plain.bytes_up / 10
    assert zlibbed.bytes_down < plain.bytes_down / 10


async def test_a_stub_and_a_call_override_the_channels_choice(server: rpc.Server) -> None:
    async with (
        proxy(server) as (target, counter),
        rpc.open_channel(target, compression="zlib") as ch,
    ):
        await ch.stub(Blobs, compression="none").echo(Blob(TEXT))
        assert counter.bytes_down > len(TEXT)
        before = counter.bytes_down
        await ch.call("blobs/echo", {"data": TEXT}, compression="zlib")
        assert counter.bytes_down - before < len(TEXT) / 10


async def test_the_servers_default_compresses_answers(server: rpc.Server) -> None:
    async with rpc.open_server([Blobs()], host="127.0.0.1", port=0, compression="zlib") as zs:
        async with proxy(zs) as (target, counter), rpc.open_channel(target) as ch:
            assert await ch.stub(Blobs).echo(Blob(TEXT)) == Blob(TEXT)
        assert counter.bytes_up > len(TEXT) > 10 * counter.bytes_down


THRESHOLD = 200  # bytes: our own, far from the default; under 256, one bin8 header


def sized(size: int) -> Blob:
    """A compressible Blob whose encoded payload is exactly ``size`` bytes."""
    blob = Blob(b"a" * (size - len(msgspec.msgpack.encode(Blob(b"")))))
    assert len(msgspec.msgpack.encode(blob)) == size
    return blob


async def test_a_channels_threshold_decides_which_requests_are_compressed(
    server: rpc.Server,
) -> None:
    async with (
        proxy(server) as (target, counter),
        rpc.open_channel(target, compression="zlib", compression_threshold=THRESHOLD) as ch,
    ):
        stub = ch.stub(Blobs)
        await stub.echo(Blob(b""))  # connected: the handshake's bytes are behind us
        sent = []
        for size in (THRESHOLD - 1, THRESHOLD):
            before = counter.bytes_up
            await stub.echo(sized(size))
            sent.append(counter.bytes_up - before)
    under, at = sent
    assert under > THRESHOLD - 1  # as it is
    assert at < under - THRESHOLD / 2  # one byte more, yet 192 times "a" squeezed


async def test_a_servers_threshold_decides_which_answers_are_compressed() -> None:
    async with (
        rpc.open_server(
            [Blobs()], host="127.0.0.1", port=0, compression="zlib", compression_threshold=THRESHOLD
        ) as zs,
        proxy(zs) as (target, counter),
        rpc.open_channel(target) as ch,
    ):
        stub = ch.stub(Blobs)
        await stub.echo(Blob(b""))
        received = []
        for size in (THRESHOLD - 1, THRESHOLD):
            before = counter.bytes_down
            assert await stub.echo(sized(size)) == sized(size)
            received.append(counter.bytes_down - before)
    under, at = received
    assert under > THRESHOLD - 1
    assert at < under - THRESHOLD / 2


@pytest.mark.parametrize(
    ("threshold", "error"), [(-1, ValueError), ("1024", TypeError), (True, TypeError)]
)
async def test_a_bad_compression_threshold_is_refused(
    server: rpc.Server, threshold: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="compression_threshold"):
        async with rpc.open_channel(address(server), compression_threshold=threshold):  # type: ignore[arg-type]
            pass  # pragma: no cover
    with pytest.raises(error, match="compression_threshold"):
        async with rpc.open_server([Blobs()], port=0, compression_threshold=threshold):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_an_unknown_compression_name_is_a_value_error(server: rpc.Server) -> None:
    with pytest.raises(ValueError, match="unknown compression 'brotli'"):
        async with rpc.open_channel(address(server), compression="brotli"):
            pass  # pragma: no cover
    async with rpc.open_channel(address(server)) as ch:
        with pytest.raises(ValueError, match="unknown compression"):
            ch.stub(Blobs, compression="gzip")
        with pytest.raises(ValueError, match="unknown compression"):
            await ch.call("blobs/echo", {"data": b""}, compression="lz4")
    with pytest.raises(ValueError, match="unknown compression"):
        async with rpc.open_server([Blobs()], port=0, compression="snappy"):
            pass  # pragma: no cover


# -- bad input from a hand-driven peer -------------------------------------------------------


async def alongside_good_client(server: rpc.Server, misbehave: object) -> None:
    """Run ``misbehave()`` while a good client makes compressed calls; assert none failed."""
    failures: list[BaseException] = []
    calls = 0
    progress = trio.Event()
    async with rpc.open_channel(address(server), compression="zlib") as ch:
        stub = ch.stub(Blobs)

        async def good() -> None:
            nonlocal calls
            while True:
                try:
                    assert await stub.echo(Blob(TEXT)) == Blob(TEXT)
                except Exception as exc:  # pragma: no cover - reported below
                    failures.append(exc)
                calls += 1
                progress.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(good)
            with trio.fail_after(10):
                await misbehave()  # type: ignore[operator]
                for _ in range(3):  # the good client carries on
                    progress = trio.Event()
                    await progress.wait()
            nursery.cancel_scope.cancel()
    assert failures == []
    assert calls >= 3


async def raw(server: rpc.Server, compression: tuple[str, ...] = ("zlib",)) -> RawClient:
    client = RawClient(await trio.open_tcp_stream(*server.address))
    client.conn = Connection(Role.CLIENT, settings=Settings(compression=compression))
    await client.stream.send_all(client.conn.initiate())
    while client.conn.remote_settings is None:
        await client.receive()
    return client


def forged(frame: Request | Item) -> bytes:
    return FrameEncoder().encode(frame)


async def bad_request(server: rpc.Server, payload: Ext, **settings: tuple[str, ...]) -> Error:
    client = await raw(server, **settings)
    try:
        # Opened through the state machine (ids, stream count), then the payload forged.
        client.conn.send_request(1, "blobs/echo", b"")
        await client.stream.send_all(forged(Request(1, "blobs/echo", payload)))
        error = await client.receive_until(Error)
        assert isinstance(error, Error)
        # ... and the connection still serves calls.
        ok = msgspec.msgpack.encode(Blob(b"ok"))
        await client.stream.send_all(client.conn.send_request(3, "blobs/echo", ok))
        response = await client.receive_until(Response)
        assert isinstance(response, Response)
        assert response.payload == ok
        return error
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (BOMB, rpc.Status.RESOURCE_EXHAUSTED),  # inflates past max_frame_size
        (Ext(1, b"\x78\x9cnot really zlib"), rpc.Status.INVALID_ARGUMENT),
        (Ext(42, b"whatever"), rpc.Status.UNIMPLEMENTED),  # an encoding nobody announced
    ],
    ids=["bomb", "garbage", "unknown-code"],
)
async def test_a_bad_compressed_request_fails_only_its_call(
    server: rpc.Server, payload: Ext, status: rpc.Status
) -> None:
    async def misbehave() -> None:
        error = await bad_request(server, payload)
        assert error.code is status

    await alongside_good_client(server, misbehave)


async def test_compression_from_a_peer_that_never_negotiated_is_served(
    server: rpc.Server,
) -> None:
    # The server accepts zlib whatever the client announced: what it announced binds only
    # what the *server* sends. Such a client gets its call answered, uncompressed.
    async def misbehave() -> None:
        client = await raw(server, compression=())
        try:
            client.conn.send_request(1, "blobs/echo", b"")
            payload = Ext(1, zlib.compress(msgspec.msgpack.encode(Blob(TEXT))))
            await client.stream.send_all(forged(Request(1, "blobs/echo", payload)))
            response = await client.receive_until(Response)
            assert isinstance(response, Response)
            assert response.payload == msgspec.msgpack.encode(Blob(TEXT))
        finally:
            await client.aclose()

    await alongside_good_client(server, misbehave)


async def test_a_bad_compressed_item_fails_only_its_stream(server: rpc.Server) -> None:
    async def misbehave() -> None:
        client = await raw(server)
        try:
            await client.stream.send_all(
                client.conn.send_request(1, "blobs/concat", b"", call_type=CallType.CLIENT_STREAM)
                + forged(Item(1, BOMB))
            )
            error = await client.receive_until(Error)
            assert isinstance(error, Error)
            assert error.code is rpc.Status.RESOURCE_EXHAUSTED
        finally:
            await client.aclose()

    await alongside_good_client(server, misbehave)


async def test_a_bomb_from_the_server_fails_only_that_call_on_the_client() -> None:
    # A hand-driven server answers call 1 with a bomb and call 2 properly.
    async def fake_server(stream: trio.SocketStream) -> None:
        conn = Connection(Role.SERVER, settings=Settings(compression=("zlib",)))
        await stream.send_all(conn.initiate())
        answered = 0
        while answered < 2:
            for event in conn.receive_data(await stream.receive_some(65536)):
                if isinstance(event, Request):
                    answered += 1
                    conn.send_response(event.id, b"")  # the state machine's bookkeeping
                    if answered == 1:
                        await stream.send_all(FrameEncoder().encode(Response(event.id, BOMB)))
                    else:
                        ok = msgspec.msgpack.encode(Blob(b"ok"))
                        await stream.send_all(FrameEncoder().encode(Response(event.id, ok)))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, fake_server, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        async with rpc.open_channel(f"127.0.0.1:{port}", retry=None) as ch:
            stub = ch.stub(Blobs)
            with pytest.raises(rpc.RpcError) as info:
                await stub.echo(Blob(b""))
            assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED
            assert await stub.echo(Blob(b"")) == Blob(b"ok")
        nursery.cancel_scope.cancel()


def test_the_hint_key_is_plain_metadata() -> None:
    assert COMPRESSION_HINT == "tm-compression"
