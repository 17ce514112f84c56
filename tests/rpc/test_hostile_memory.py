"""Issue #15 defect 1: one connection can't pin unbounded server memory. Each test speaks
docs/protocol.md from a plain socket while a well-behaved client calls on its own connection
(which must see no failure; see ``scenario``)."""

from __future__ import annotations

import msgspec
import trio
import trio.testing

from trio_micro.protocol import (
    PREFACE,
    Connection,
    Error,
    Frame,
    FrameDecoder,
    Role,
    Settings,
    Status,
)
from trio_micro.protocol._frames import MAX_FRAME_SIZE_LIMIT

from .services import StreamingRequest
from .test_bad_input import request, scenario

_STREAM = "grpc.testing.TestService/streaming_output_call"
_SLEEP = "grpc.testing.TestService/sleep"


class RawPeer:
    """A client on a plain socket: its preface + HELLO with ``credit``, then raw frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._decoder = FrameDecoder(max_frame_size=MAX_FRAME_SIZE_LIMIT)
        self._buffer = b""
        self.frames: list[Frame] = []

    @classmethod
    async def connect(cls, s: object, *, credit: int) -> RawPeer:
        stream = await s.connect()  # type: ignore[attr-defined]
        hello = Connection(Role.CLIENT, settings=Settings(initial_stream_credit=credit))
        await stream.send_all(hello.initiate())
        return cls(stream)

    async def errors(self, n: int) -> list[Error]:
        """Read until ``n`` ERROR frames have arrived; return them."""
        while sum(isinstance(f, Error) for f in self.frames) < n:
            data = await self.stream.receive_some(1 << 16)
            assert data, self.frames[-5:]
            if self._buffer is not None:
                self._buffer += data
                if len(self._buffer) < len(PREFACE):
                    continue
                data, self._buffer = self._buffer[len(PREFACE) :], None  # type: ignore[assignment]
            self.frames.extend(self._decoder.receive_data(data))
        return [f for f in self.frames if isinstance(f, Error)]


def _stream_request(sid: int, count: int = 10) -> bytes:
    return request(sid, _STREAM, msgspec.msgpack.encode(StreamingRequest(count)), call_type=1)


async def test_a_stream_stalled_for_credit_fails_after_the_stall_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario(pause=0.1, time_limit=100, stall_timeout=20) as s:
        peer = await RawPeer.connect(s, credit=0)
        await peer.stream.send_all(_stream_request(1))  # no deadline, never any CREDIT
        start = trio.current_time()
        [error] = await peer.errors(1)
        assert trio.current_time() - start >= 20
        assert error.code is Status.RESOURCE_EXHAUSTED
        assert error.message == "stream stalled: no CREDIT from the client for 20 s (stall_timeout)"
        assert error.details == {"refused": "stall_timeout"}
        await peer.stream.aclose()


async def test_streams_stalled_beyond_the_limit_fail_at_once() -> None:
    async with scenario(max_stalled_streams=3) as s:
        peer = await RawPeer.connect(s, credit=0)
        await peer.stream.send_all(b"".join(_stream_request(sid) for sid in range(1, 11)))
        errors = await peer.errors(7)  # the other three wait, holding their handlers
        assert {e.code for e in errors} == {Status.RESOURCE_EXHAUSTED}
        assert {e.details["refused"] for e in errors} == {"max_stalled_streams"}
        assert s.server.statistics().active_calls >= 3
        await peer.stream.aclose()


async def test_large_requests_beyond_the_connection_budget_are_refused() -> None:
    budget = 4 << 20
    async with scenario(max_buffered_bytes=budget) as s:
        peer = await RawPeer.connect(s, credit=0)
        # 20 requests of 1 MiB to a method that never answers, no deadline: before the
        # budget, the server held all 20 MiB until the client left.
        pad = msgspec.msgpack.encode({"pad": b"x" * (1 << 20)})
        await peer.stream.send_all(b"".join(request(sid, _SLEEP, pad) for sid in range(1, 21)))
        errors = await peer.errors(17)
        assert {e.code for e in errors} == {Status.RESOURCE_EXHAUSTED}
        assert {e.details["refused"] for e in errors} == {"max_buffered_bytes"}
        held = s.server.statistics().request_bytes
        assert 3 << 20 <= held <= budget
        await peer.stream.aclose()
        while s.server.buffer_budget.used:  # noqa: ASYNC110 - released as the calls end
            await trio.sleep(0.001)


async def test_the_server_budget_caps_all_connections_together() -> None:
    async with scenario(max_server_buffered_bytes=3 << 20) as s:
        pad = msgspec.msgpack.encode({"pad": b"x" * (1 << 20)})
        peers = [await RawPeer.connect(s, credit=0) for _ in range(2)]
        # Each connection's first call always fits; the rest share the 3 MiB: the first
        # connection gets 2 of its 3 calls in, the second only the one that always fits.
        for peer, refused in zip(peers, (1, 2), strict=True):
            await peer.stream.send_all(b"".join(request(sid, _SLEEP, pad) for sid in (1, 3, 5)))
            assert len(await peer.errors(refused)) == refused
        assert s.server.buffer_budget.used <= (3 << 20) + (1 << 20)
        errors = [f for peer in peers for f in peer.frames if isinstance(f, Error)]
        assert {e.details["refused"] for e in errors} == {"max_server_buffered_bytes"}
        for peer in peers:
            await peer.stream.aclose()
