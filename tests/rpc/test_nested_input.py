"""Deeply nested msgpack (issue #15, defect 3): 5 KB of one-element arrays is deeper than the
recursion limit. It fails the one call that carries it, never the connection or its other calls.
"""

from __future__ import annotations

import msgspec
import pytest
import trio

from trio_micro import rpc
from trio_micro.protocol import (
    CallType,
    Connection,
    Error,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    Item,
    Request,
    Response,
    Role,
)
from trio_micro.protocol._frames import MAX_FRAME_SIZE_LIMIT, PREFACE

from ..nested import NESTED_REQUEST, DeepService, Shallow, ShallowClient
from .conftest import address
from .services import GetUserRequest, TestService, User

_GOOD_CALLS = 20
_encoder = FrameEncoder(max_frame_size=MAX_FRAME_SIZE_LIMIT)


def _request(stream_id: int, method: str, payload: bytes) -> bytes:
    kind = CallType.SERVER_STREAM if method.startswith("streaming") else CallType.UNARY
    wire_name = f"grpc.testing.TestService/{method}"
    return _encoder.encode(Request(stream_id, wire_name, payload, call_type=kind))


@pytest.mark.parametrize("method", ["get_user", "streaming_output_call"])
async def test_a_nested_request_fails_its_call_alone_on_a_real_socket(
    server: rpc.Server, method: str
) -> None:
    half = _GOOD_CALLS // 2
    bad_id = 2 * half + 1
    ids = [2 * i + 1 for i in range(_GOOD_CALLS + 1) if i != half]  # stream ids must increase
    good = [
        _request(sid, "get_user", msgspec.msgpack.encode(GetUserRequest(i)))
        for i, sid in enumerate(ids)
    ]
    data = b"".join(
        [
            Connection(Role.CLIENT).initiate(),
            *good[:half],
            _request(bad_id, method, NESTED_REQUEST),
            *good[half:],
        ]
    )
    stream = await trio.open_tcp_stream(*server.address)
    decoder = FrameDecoder(max_frame_size=MAX_FRAME_SIZE_LIMIT)
    with trio.fail_after(10):
        await stream.send_all(data)
        received = b""
        while len(received) < len(PREFACE):
            received += await stream.receive_some()
        frames = decoder.receive_data(received[len(PREFACE) :])
        while sum(isinstance(f, Response | Error) for f in frames) < _GOOD_CALLS + 1:
            chunk = await stream.receive_some()
            assert chunk, frames[-3:]
            frames += decoder.receive_data(chunk)
    await stream.aclose()
    (error,) = [f for f in frames if isinstance(f, Error)]
    assert (error.id, error.code) == (bad_id, rpc.Status.INVALID_ARGUMENT)
    assert "nested too deeply" in error.message
    users = [
        msgspec.msgpack.decode(f.payload, type=User) for f in frames if isinstance(f, Response)
    ]
    assert sorted(user.user_id for user in users) == list(range(_GOOD_CALLS))
    assert not [f for f in frames if isinstance(f, GoAway | Item)]


async def test_a_nested_response_is_internal_for_its_call_and_the_channel_lives() -> None:
    async with (
        rpc.open_server([DeepService(), TestService()], host="127.0.0.1", port=0) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        stub = channel.stub(ShallowClient)
        with pytest.raises(rpc.RpcError, match="bad response") as info:
            await stub.answer(Shallow())
        assert info.value.code is rpc.Status.INTERNAL
        with pytest.raises(rpc.RpcError, match="bad stream item") as info:
            async for _ in stub.items(Shallow()):
                pass  # pragma: no cover
        assert info.value.code is rpc.Status.INTERNAL
        assert await channel.stub(TestService).get_user(GetUserRequest(7)) == User(7, "user7")
