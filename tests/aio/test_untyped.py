"""aio.Channel.call / call_stream / stream_call: untyped calls by name from asyncio, with
plain values, against the real trio server (127.0.0.1, port 0); bad arguments; and a stream
item that does not decode failing its call alone (a hand-driven server sends it)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from trio_micro import aio, rpc
from trio_micro.protocol import DEFAULT_MAX_FRAME_SIZE

from .conftest import ServerThread, fails_then_works, hand_driven, run
from .services import AioTestService, Answer, Ask

T = TypeVar("T")

ECHO = "aio.Test/echo"
COUNT = "aio.Test/count"
GARBAGE = b"\xc1 is no msgpack"  # 0xc1 is the one byte msgpack never uses


def on_channel(server: ServerThread, fn: Callable[[aio.Channel], Awaitable[T]]) -> T:
    """``fn``'s result on a channel to ``server``, in a fresh ``asyncio.run``."""

    async def main() -> T:
        async with aio.open_channel(server.target) as channel:
            return await fn(channel)

    return run(main)


def test_call_returns_plain_values(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> Any:
        return await channel.call(ECHO, {"value": 7})

    assert on_channel(server, call) == {
        "value": 7,
        "deadline_ms": -1.0,
        "metadata": {},
        "payload": b"",
    }


def test_call_bad_field_is_invalid_argument_naming_it(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> Any:
        return await channel.call(ECHO, {"value": "seven"})

    with pytest.raises(rpc.RpcError) as info:
        on_channel(server, call)
    assert (info.value.code, info.value.details) == (
        rpc.Status.INVALID_ARGUMENT,
        {"field": "$.value"},
    )


def test_call_unknown_method_is_unimplemented(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> Any:
        return await channel.call("aio.Test/nope", {})

    with pytest.raises(rpc.RpcError) as info:
        on_channel(server, call)
    assert info.value.code is rpc.Status.UNIMPLEMENTED


def test_call_status_from_the_handler(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> Any:
        return await channel.call("aio.Test/fail", {"value": 3})

    with pytest.raises(rpc.RpcError) as info:
        on_channel(server, call)
    assert (info.value.code, info.value.message, info.value.details) == (
        rpc.Status.NOT_FOUND,
        "no 3",
        {"field": "value"},
    )


def test_call_carries_metadata_and_the_aio_timeout_deadline(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> Any:
        async with aio.timeout(5.0):
            return await channel.call(ECHO, {}, metadata={"who": "script"})

    answer = on_channel(server, call)
    assert answer["metadata"] == {"who": "script"}
    assert 0 < answer["deadline_ms"] <= 5000


def test_an_expired_aio_timeout_ends_the_call_and_cancels_the_handler(
    server: ServerThread,
) -> None:
    async def call(channel: aio.Channel) -> Any:
        async with aio.timeout(0.05):
            return await channel.call("aio.Test/slow", {})

    with pytest.raises(TimeoutError):
        on_channel(server, call)
    assert server.probe.cancelled.wait(10)


def test_a_cancelled_caller_sends_cancel_and_the_channel_carries_on(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> Any:
        task = asyncio.create_task(channel.call("aio.Test/slow", {}))
        await asyncio.to_thread(server.probe.started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await channel.call(ECHO, {"value": 1})

    assert on_channel(server, call)["value"] == 1
    assert server.probe.cancelled.wait(10)


def test_a_request_over_the_servers_frame_size_is_resource_exhausted(
    server: ServerThread,
) -> None:
    async def call(channel: aio.Channel) -> Any:
        return await channel.call(ECHO, {"blob": b"x" * DEFAULT_MAX_FRAME_SIZE})

    with pytest.raises(rpc.RpcError) as info:
        on_channel(server, call)
    assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED


def test_call_stream_yields_plain_items(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> Any:
        stream = channel.call_stream(COUNT, {"value": 3})
        assert isinstance(stream, aio.ResponseStream)
        return [item["value"] async for item in stream]

    assert on_channel(server, call) == [0, 1, 2]


def test_stream_call_sends_and_receives_plain_values(server: ServerThread) -> None:
    async def call(channel: aio.Channel) -> Any:
        async with channel.stream_call("aio.Test/total", bidi=False) as (send, receive):
            for value in (1, 2, 3):
                await send.send({"value": value})
            await send.aclose()
            total = (await receive.receive())["value"]
        async with channel.stream_call("aio.Test/chat", bidi=True) as (send, receive):
            await send.send({"value": 4, "size": 2})
            await send.aclose()
            return total, [answer["value"] async for answer in receive]

    assert on_channel(server, call) == (6, [4, 4])


def test_an_item_that_cannot_be_encoded_is_a_type_error_and_the_call_goes_on(
    server: ServerThread,
) -> None:
    async def call(channel: aio.Channel) -> Any:
        async with channel.stream_call("aio.Test/total", bidi=False) as (send, receive):
            with pytest.raises(TypeError):
                await send.send({"value": object()})
            with pytest.raises(TypeError, match="cannot encode the request item"):
                await send.send({"value": 2**64})
            await send.send({"value": 5})
            await send.aclose()
            return (await receive.receive())["value"]

    assert on_channel(server, call) == 5


# Each bad argument raises before anything is sent.
BAD_ARGUMENTS: list[tuple[Callable[[aio.Channel], object], type[Exception], str]] = [
    (lambda ch: ch.call(42, {}), TypeError, "method must be a str"),  # type: ignore[arg-type]
    (lambda ch: ch.call("echo", {}), ValueError, "<service>/<method>"),
    (lambda ch: ch.call("aio.Test/", {}), ValueError, "<service>/<method>"),
    (lambda ch: ch.call(ECHO, {"value": object()}), TypeError, "object"),
    (lambda ch: ch.call(ECHO, {}, metadata={"k": 1}), TypeError, "metadata"),  # type: ignore[dict-item]
    (lambda ch: ch.call(ECHO, {}, compression="lz4"), ValueError, "lz4"),
    (lambda ch: ch.call(ECHO, {}, compression=1), TypeError, "compression"),  # type: ignore[arg-type]
    (lambda ch: ch.call(ECHO, {}, idempotent="yes"), TypeError, "idempotent"),  # type: ignore[arg-type]
    (lambda ch: ch.call_stream(COUNT, {"x": object()}), TypeError, "cannot encode"),
    (lambda ch: ch.call_stream(COUNT, {"x": 2**64}), TypeError, "cannot encode"),
    (lambda ch: ch.call(ECHO, {"value": 2**64}), TypeError, "cannot encode the request"),
    (lambda ch: ch.call(ECHO, {"value": "\ud800"}), TypeError, "cannot encode the request"),
    (lambda ch: ch.stub(AioTestService).echo(Ask(2**64)), TypeError, "aio.Test/echo"),
    (lambda ch: ch.stub(AioTestService).count(Ask(-(2**63) - 1)).__anext__(), TypeError, "count"),
    (lambda ch: ch.call_stream("/count", {}), ValueError, "<service>/<method>"),
    (lambda ch: ch.stream_call("aio.Test/total", bidi="no"), TypeError, "bidi"),  # type: ignore[arg-type]
    (lambda ch: ch.stream_call(None, bidi=True), TypeError, "method"),  # type: ignore[arg-type]
    (lambda ch: ch.stream_call(ECHO, bidi=True, compression="lz4"), ValueError, "lz4"),
]


@pytest.mark.parametrize(("make", "exc", "words"), BAD_ARGUMENTS)
def test_a_bad_argument_is_refused_before_anything_is_sent(
    server: ServerThread, make: Callable[[aio.Channel], object], exc: type[Exception], words: str
) -> None:
    async def call(channel: aio.Channel) -> object:
        made = make(channel)
        return await made if asyncio.iscoroutine(made) else made

    with pytest.raises(exc, match=words):
        on_channel(server, call)


def test_an_answer_that_does_not_decode_fails_the_call_alone() -> None:
    async def main() -> tuple[rpc.RpcError, Answer, bool]:
        return await fails_then_works(GARBAGE, lambda channel: channel.call(ECHO, {}))

    error, answer, same_connection = run(main)
    assert (error.code, answer.value, same_connection) == (rpc.Status.INTERNAL, 2, True)
    assert error.message.startswith(f"bad response from {ECHO}: ")


def _count(channel: aio.Channel, typed: bool) -> AsyncIterator[Any]:
    if typed:
        return channel.stub(AioTestService).count(Ask(value=1))
    return channel.call_stream(COUNT, {"value": 1})


def _value(answer: Any) -> int:
    return answer.value if isinstance(answer, Answer) else answer["value"]


@pytest.mark.parametrize("typed", [True, False], ids=["stub", "call_stream"])
def test_a_stream_item_that_does_not_decode_fails_that_call_alone(typed: bool) -> None:
    # Call 1: a stream that stays open; call 2: a stream whose item is garbage; call 3: a
    # unary call. The server sends the open stream one more item per later call.
    async def main() -> tuple[rpc.RpcError, list[int], int, bool]:
        server = await asyncio.start_server(hand_driven(GARBAGE, nth=2), "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            async with aio.open_channel(f"127.0.0.1:{port}") as channel:
                before = await channel.connection()
                alive = _count(channel, typed)
                items = [_value(await anext(alive))]
                with pytest.raises(rpc.RpcError) as info:
                    await anext(_count(channel, typed))
                answer = await channel.stub(AioTestService).echo(Ask())
                items += [_value(await anext(alive)), _value(await anext(alive))]
                return info.value, items, answer.value, before is await channel.connection()

    error, items, answer, same_connection = run(main)
    assert (error.code, items, answer, same_connection) == (
        rpc.Status.INTERNAL,
        [1, 2, 3],
        3,
        True,
    )
    assert error.message.startswith(f"bad stream item from {COUNT}: ")


@pytest.mark.parametrize("name", ["call", "call_stream", "stream_call"])
def test_the_untyped_calls_take_the_trio_channels_arguments(name: str) -> None:
    ours = inspect.signature(getattr(aio.Channel, name)).parameters
    theirs = inspect.signature(getattr(rpc.Channel, name)).parameters
    assert [(p.name, p.kind, p.default, p.annotation) for p in ours.values()] == [
        (p.name, p.kind, p.default, p.annotation) for p in theirs.values()
    ]
