"""Bad input on client- and bidi-streams, over real sockets, with a well-behaved client
calling alongside on its own connection: it must see zero failures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import msgspec
import pytest
import trio
import trio.lowlevel

from trio_micro import rpc
from trio_micro.protocol import (
    CallType,
    End,
    Error,
    ErrorCode,
    FrameEncoder,
    GoAway,
    Item,
    Response,
)

from .conftest import address
from .raw import RawClient
from .test_streams import Num, Shapes


class Blob(msgspec.Struct):
    data: bytes


class Blobs(rpc.Service, name="blobs"):
    @rpc.client_stream
    async def size(self, requests: rpc.RequestStream[Blob]) -> Num:
        return Num(sum([len(b.data) async for b in requests]))


@pytest.fixture
async def server() -> AsyncIterator[rpc.Server]:
    async with rpc.open_server(
        [Shapes(), Blobs()], host="127.0.0.1", port=0, max_frame_size=16384
    ) as server:
        yield server


async def alongside(server: rpc.Server, misbehave: Callable[[], Awaitable[None]]) -> None:
    """Run ``misbehave`` while a good client makes bidi calls; assert it never failed."""
    failures: list[BaseException] = []
    done = 0
    target = 3
    reached = trio.Event()
    async with rpc.open_channel(address(server)) as channel:
        stub = channel.stub(Shapes)
        async with trio.open_nursery() as nursery:

            async def good() -> None:
                nonlocal done
                while True:
                    if done >= target:
                        reached.set()
                    try:
                        async with stub.double() as (send, receive):
                            await send.send(Num(done))
                            assert await receive.receive() == Num(2 * done)
                            await send.aclose()
                    except Exception as exc:  # pragma: no cover - reported below
                        failures.append(exc)
                    done += 1
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(good)
            with trio.fail_after(10):
                await reached.wait()  # the good client is under way
                await misbehave()
                target = done + 3
                reached = trio.Event()
                await reached.wait()  # and carries on after the bad peer is gone
            nursery.cancel_scope.cancel()
    assert failures == []


@asynccontextmanager
async def raw_call(
    server: rpc.Server, method: str, call_type: CallType
) -> AsyncIterator[RawClient]:
    """A hand-driven connection with call 1 to ``method`` open."""
    raw = await RawClient.connect(server)
    try:
        await raw.stream.send_all(raw.conn.send_request(1, method, b"", call_type=call_type))
        yield raw
    finally:
        await raw.aclose()


def forge(*frames: Item | End) -> bytes:
    encoder = FrameEncoder()
    return b"".join(encoder.encode(frame) for frame in frames)


async def test_items_after_the_half_close_close_that_connection(server: rpc.Server) -> None:
    async def misbehave() -> None:
        async with raw_call(server, "shapes/hold", CallType.CLIENT_STREAM) as raw:
            await raw.stream.send_all(forge(End(1), Item(1, msgspec.msgpack.encode(Num(1)))))
            goaway = await raw.receive_until(GoAway)
            assert isinstance(goaway, GoAway)
            assert goaway.code is ErrorCode.PROTOCOL_ERROR

    await alongside(server, misbehave)


async def test_a_peer_that_ignores_credit_is_closed_with_a_flow_control_error(
    server: rpc.Server,
) -> None:
    async def misbehave() -> None:
        async with raw_call(server, "shapes/hold", CallType.CLIENT_STREAM) as raw:
            item = Item(1, msgspec.msgpack.encode(Num(1)))
            await raw.stream.send_all(forge(*[item] * 65))  # the server granted 64
            goaway = await raw.receive_until(GoAway)
            assert isinstance(goaway, GoAway)
            assert goaway.code is ErrorCode.FLOW_CONTROL_ERROR

    await alongside(server, misbehave)


async def test_a_wrong_typed_item_ends_the_call_with_invalid_argument(
    server: rpc.Server,
) -> None:
    async def misbehave() -> None:
        async with raw_call(server, "shapes/add", CallType.CLIENT_STREAM) as raw:
            wrong = msgspec.msgpack.encode({"n": "seven"})
            await raw.stream.send_all(forge(Item(1, wrong)))
            error = await raw.receive_until(Error)
            assert isinstance(error, Error)
            assert error.code is rpc.Status.INVALID_ARGUMENT
            assert error.details == {"field": "$.n"}

    await alongside(server, misbehave)


async def test_items_after_the_server_ended_the_call_are_ignored(server: rpc.Server) -> None:
    async def misbehave() -> None:
        async with raw_call(server, "shapes/refuse", CallType.CLIENT_STREAM) as raw:
            await raw.receive_until(Error)
            late = forge(Item(1, msgspec.msgpack.encode(Num(1))), End(1))
            await raw.stream.send_all(late)
            # The connection carries on: a next call on it is answered.
            request = raw.conn.send_request(2, "shapes/add", b"", call_type=CallType.CLIENT_STREAM)
            await raw.stream.send_all(request + raw.conn.send_end(2))
            response = await raw.receive_until(Response)
            assert isinstance(response, Response)
            assert msgspec.msgpack.decode(response.payload) == {"total": 0, "count": 0}

    await alongside(server, misbehave)


async def test_an_item_over_the_servers_frame_size_is_refused_by_the_sender(
    server: rpc.Server,
) -> None:
    async def misbehave() -> None:
        async with (
            rpc.open_channel(address(server)) as channel,
            channel.stub(Blobs).size() as (send, receive),
        ):
            with pytest.raises(rpc.RpcError) as info:
                await send.send(Blob(b"x" * 20000))
            assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED
            await send.send(Blob(b"x" * 100))  # the call is still usable
            await send.aclose()
            assert await receive.receive() == Num(100)

    await alongside(server, misbehave)


async def test_a_stream_called_as_the_wrong_shape_is_unimplemented(server: rpc.Server) -> None:
    async def misbehave() -> None:
        async with raw_call(server, "shapes/add", CallType.BIDI_STREAM) as raw:
            error = await raw.receive_until(Error)
            assert isinstance(error, Error)
            assert error.code is rpc.Status.UNIMPLEMENTED

    await alongside(server, misbehave)
