"""Bad input on a real loopback socket (issue #3): each case checks the same three things.

(a) the bad connection gets GOAWAY with the right code (or is closed) and the server logs the
reason; (b) a well-behaved client calling on its own connection -- started before the bad
one, calling during and after -- has no failed call; (c) no task is left behind: the server
ends with no connection, no call, and no task but its accept loop.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import msgspec
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.protocol import (
    Cancel,
    Connection,
    Error,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    Hello,
    Ping,
    Request,
    Response,
    Role,
    Settings,
)
from trio_micro.protocol._frames import MAGIC, MAX_FRAME_SIZE_LIMIT, PREFACE
from trio_micro.rpc._transport import HIGH_WATER

from .conftest import address
from .services import (
    Empty,
    GetUserRequest,
    SimpleRequest,
    StreamingRequest,
    TestService,
)

_encoder = FrameEncoder(max_frame_size=MAX_FRAME_SIZE_LIMIT)
_EMPTY = msgspec.msgpack.encode(Empty())
_SLEEP = "grpc.testing.TestService/sleep"
_CALLS_AROUND = 5  # good calls before the bad client connects, and again after it is gone


def frame(value: Frame) -> bytes:
    """Encode any frame, with none of the sender's checks (ids, limits, state)."""
    return _encoder.encode(value)


def raw_frame(body: object) -> bytes:
    data = msgspec.msgpack.encode(body)
    return struct.pack(">I", len(data)) + data


def hello() -> bytes:
    """A client's preface + HELLO."""
    return Connection(Role.CLIENT).initiate()


def request(stream_id: int, method: str = _SLEEP, payload: bytes = _EMPTY, **kw: object) -> bytes:
    return frame(Request(stream_id, method, payload, **kw))  # type: ignore[arg-type]


@dataclass
class GoodClient:
    """Calls (unary and server-stream, alternately; ``pause`` between) until cancelled."""

    stub: TestService
    server: rpc.Server
    pause: float = 0.0
    ok: int = 0
    failures: list[BaseException | str] = field(default_factory=list)
    max_queued: int = 0
    _progress: trio.Event = field(default_factory=trio.Event)

    async def run(self) -> None:
        while True:
            try:
                if self.ok % 2:
                    user = await self.stub.get_user(GetUserRequest(self.ok))
                    if user.user_id != self.ok:
                        self.failures.append(f"wrong answer {user!r}")
                else:
                    items = [
                        item.index
                        async for item in self.stub.streaming_output_call(StreamingRequest(3))
                    ]
                    if items != [0, 1, 2]:
                        self.failures.append(f"wrong items {items!r}")
            except Exception as exc:
                self.failures.append(exc)
            self.ok += 1
            self.max_queued = max(self.max_queued, self.server.statistics().queued_bytes)
            self._progress.set()
            self._progress = trio.Event()
            await trio.sleep(self.pause)

    async def wait_calls(self, n: int) -> None:
        """Wait until ``n`` more calls have completed."""
        target = self.ok + n
        while self.ok < target:
            await self._progress.wait()


@dataclass
class Scenario:
    server: rpc.Server
    service: TestService
    good: GoodClient
    logs: list[dict[str, object]]

    async def connect(self) -> trio.SocketStream:
        return await trio.open_tcp_stream(*self.server.address)

    def logged(self, event: str) -> dict[str, object]:
        found = [entry for entry in self.logs if entry["event"] == event]
        assert found, [entry["event"] for entry in self.logs]
        return found[0]


def server_task_names() -> list[str]:
    names: list[str] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task.name.startswith("trio_micro.rpc._server."):
            names.append(task.name.rpartition(".")[2])
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return sorted(names)


async def eventually(predicate: Callable[[], bool]) -> None:
    # Polls: the server has no event for "that connection is gone" (bounded by fail_after).
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.001)


@asynccontextmanager
async def scenario(
    *, pause: float = 0.0, time_limit: float = 10.0, **options: object
) -> AsyncIterator[Scenario]:
    service = TestService()
    with capture_logs() as logs, trio.fail_after(time_limit):
        async with rpc.open_server([service], host="127.0.0.1", **options) as server:  # type: ignore[arg-type]
            async with rpc.open_channel(address(server)) as channel, trio.open_nursery() as nursery:
                good = GoodClient(channel.stub(TestService), server, pause)
                nursery.start_soon(good.run)
                await good.wait_calls(_CALLS_AROUND)
                yield Scenario(server, service, good, logs)
                # The bad connection is gone, the good one carries on.
                await eventually(lambda: server.statistics().connections == 1)
                await good.wait_calls(_CALLS_AROUND)
                nursery.cancel_scope.cancel()
            await eventually(lambda: server.statistics().connections == 0)
            assert server.statistics().active_calls == 0
            # A connection's task outlives its statistics by the close of its socket.
            expected = ["_accept_loop", "_serve_prepared"]
            with trio.move_on_after(1):
                await eventually(lambda: server_task_names() == expected)
            assert server_task_names() == expected
    assert good.failures == []


async def read_to_end(stream: trio.SocketStream) -> list[Frame]:
    """Everything the server sent until it closed (or reset) the connection, decoded."""
    data = bytearray()
    with trio.fail_after(5):
        while True:
            try:
                chunk = await stream.receive_some(1 << 16)
            except trio.BrokenResourceError:  # reset: the server closed with input unread
                break
            if not chunk:
                break
            data += chunk
    await stream.aclose()
    assert data.startswith(PREFACE), bytes(data[:32])
    return FrameDecoder(max_frame_size=MAX_FRAME_SIZE_LIMIT).receive_data(data[len(PREFACE) :])


def goaway(frames: list[Frame]) -> GoAway:
    found = [f for f in frames if isinstance(f, GoAway)]
    assert found, frames[-5:]
    return found[-1]


async def check_goaway(
    s: Scenario, stream: trio.SocketStream, code: ErrorCode, event: str, reason: str | None
) -> None:
    """GOAWAY(code) arrives, then the close; ``event`` was logged with ``reason`` in it."""
    await s.good.wait_calls(1)  # the good client calls while the bad one is being handled
    assert goaway(await read_to_end(stream)).code is code
    logged = s.logged(event)
    if reason is not None:
        assert reason in str(logged["reason"])


# ---------------------------------------------------------------------------- the preface


async def test_garbage_instead_of_the_preface() -> None:
    async with scenario() as s:
        stream = await s.connect()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await check_goaway(
            s, stream, ErrorCode.PROTOCOL_ERROR, "rpc.connection.protocol_error", "preface"
        )


async def test_wrong_protocol_version() -> None:
    async with scenario() as s:
        stream = await s.connect()
        await stream.send_all(MAGIC + b"\x00\x02")
        await check_goaway(
            s, stream, ErrorCode.UNSUPPORTED_VERSION, "rpc.connection.protocol_error", "version 2"
        )


async def test_silent_client_hits_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario(pause=0.1, handshake_timeout=2) as s:
        stream = await s.connect()
        start = trio.current_time()
        await check_goaway(
            s, stream, ErrorCode.HANDSHAKE_TIMEOUT, "rpc.connection.handshake_timeout", None
        )
        assert trio.current_time() - start == pytest.approx(2, abs=0.2)
        assert s.logged("rpc.connection.handshake_timeout")["handshake_timeout"] == 2


async def test_hello_sent_twice() -> None:
    async with scenario() as s:
        stream = await s.connect()
        await stream.send_all(hello() + frame(Hello(1, Settings())))
        await check_goaway(
            s, stream, ErrorCode.PROTOCOL_ERROR, "rpc.connection.protocol_error", "HELLO sent twice"
        )


# ---------------------------------------------------------------------------- framing


async def test_frame_over_max_frame_size_is_rejected_from_its_length_header() -> None:
    async with scenario() as s:
        stream = await s.connect()
        # Only the 4-byte header of a 1 GiB frame: GOAWAY must come without the body.
        await stream.send_all(hello() + struct.pack(">I", 1 << 30))
        await check_goaway(
            s, stream, ErrorCode.FRAME_SIZE_ERROR, "rpc.connection.protocol_error", "1073741824"
        )


async def test_frame_just_over_a_configured_max_frame_size() -> None:
    async with scenario(max_frame_size=16384) as s:
        stream = await s.connect()
        await stream.send_all(hello() + struct.pack(">I", 16385) + bytes(100))
        await check_goaway(
            s, stream, ErrorCode.FRAME_SIZE_ERROR, "rpc.connection.protocol_error", "16385"
        )


async def test_truncated_frame_then_close() -> None:
    async with scenario() as s:
        stream = await s.connect()
        await stream.send_all(hello() + request(1)[:-3])
        await stream.send_eof()  # half-close: we can still read the GOAWAY
        await check_goaway(
            s,
            stream,
            ErrorCode.PROTOCOL_ERROR,
            "rpc.connection.protocol_error",
            "middle of a frame",
        )


async def test_frame_of_an_unknown_kind() -> None:
    async with scenario() as s:
        stream = await s.connect()
        await stream.send_all(hello() + raw_frame([99, 1, b"x"]))
        await check_goaway(
            s,
            stream,
            ErrorCode.PROTOCOL_ERROR,
            "rpc.connection.protocol_error",
            "unknown frame kind 99",
        )


# ---------------------------------------------------------------------------- not UTF-8


def with_bad_utf8(data: bytes, marker: bytes) -> bytes:
    """``data`` with ``marker`` (a string's tail, once in it) replaced by non-UTF-8 bytes."""
    assert data.count(marker) == 1
    return data.replace(marker, b"\xff\xfe" + marker[2:])


@pytest.mark.parametrize(
    "bad",
    [
        with_bad_utf8(request(1, "grpc.testing.TestService/sleep\x01\x02"), b"\x01\x02"),
        with_bad_utf8(request(1, metadata={"x-key\x01\x02": "v"}), b"\x01\x02"),
        with_bad_utf8(request(1, metadata={"x-key": "v\x01\x02"}), b"\x01\x02"),
    ],
    ids=["method", "metadata-key", "metadata-value"],
)
async def test_a_frame_string_that_is_not_utf8(bad: bytes) -> None:
    async with scenario() as s:
        stream = await s.connect()
        await stream.send_all(hello() + bad)
        await check_goaway(
            s, stream, ErrorCode.PROTOCOL_ERROR, "rpc.connection.protocol_error", "UTF-8"
        )


async def test_a_request_field_that_is_not_utf8_fails_only_its_call() -> None:
    async with scenario() as s:
        stream = await s.connect()
        payload = msgspec.msgpack.encode(SimpleRequest(status_message="m\x01\x02"))
        bad = with_bad_utf8(request(1, "grpc.testing.TestService/unary_call", payload), b"\x01\x02")
        await stream.send_all(hello() + bad + request(3, "grpc.testing.TestService/empty_call"))
        decoder = FrameDecoder(max_frame_size=MAX_FRAME_SIZE_LIMIT)
        data = b""
        with trio.fail_after(5):
            while not data.startswith(PREFACE):
                data += await stream.receive_some()
            frames = decoder.receive_data(data[len(PREFACE) :])
            while not any(getattr(f, "id", None) == 3 for f in frames):
                frames += decoder.receive_data(await stream.receive_some())
        (error,) = [f for f in frames if isinstance(f, Error)]
        assert (error.id, error.code) == (1, rpc.Status.INVALID_ARGUMENT)
        assert "UTF-8" in error.message or "utf-8" in error.message
        assert [f.id for f in frames if isinstance(f, Response)] == [3]  # the connection lives
        assert not [f for f in frames if isinstance(f, GoAway)]
        await stream.aclose()


# ---------------------------------------------------------------------------- streams


async def test_request_reusing_a_live_stream_id() -> None:
    async with scenario() as s:
        stream = await s.connect()
        await stream.send_all(hello() + request(1))
        await s.service.started.wait()  # stream 1 is live: its handler sleeps
        await stream.send_all(request(1))
        await check_goaway(
            s, stream, ErrorCode.PROTOCOL_ERROR, "rpc.connection.protocol_error", "still open"
        )
        assert s.service.cancelled.is_set()  # the live call went with its connection


async def test_oversize_metadata() -> None:
    async with scenario(max_metadata_size=1024) as s:
        stream = await s.connect()
        await stream.send_all(hello() + request(1, metadata={"k": "v" * 1024}))
        await check_goaway(
            s, stream, ErrorCode.METADATA_TOO_LARGE, "rpc.connection.protocol_error", "1025"
        )


async def test_too_many_streams() -> None:
    async with scenario(max_concurrent_streams=4) as s:
        stream = await s.connect()
        await stream.send_all(hello() + b"".join(request(i) for i in range(1, 6)))
        await check_goaway(
            s, stream, ErrorCode.TOO_MANY_STREAMS, "rpc.connection.protocol_error", "4"
        )


async def test_frames_after_the_clients_goaway() -> None:
    async with scenario() as s:
        stream = await s.connect()
        await stream.send_all(hello() + frame(GoAway(0)) + request(1))
        await check_goaway(
            s,
            stream,
            ErrorCode.PROTOCOL_ERROR,
            "rpc.connection.protocol_error",
            "after the client's GOAWAY",
        )


async def test_cancel_flood() -> None:
    # "Rapid reset": each REQUEST is cancelled in the same packet, before its handler could
    # run; duplicate CANCELs and CANCELs of finished streams come on top (ignored, cheap).
    async with scenario() as s:
        stream = await s.connect()
        await stream.send_all(hello())
        frames: list[Frame] = []

        async def read() -> None:  # like a real client, read while sending
            frames.extend(await read_to_end(stream))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            for first in range(1, 3001, 100):
                flood = (
                    request(i) + frame(Cancel(i)) * 3 + frame(Cancel(1))
                    for i in range(first, first + 100)
                )
                try:
                    await stream.send_all(b"".join(flood))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # the server has hung up
            await s.good.wait_calls(1)
        assert goaway(frames).code is ErrorCode.ENHANCE_YOUR_CALM
        assert "cancel flood" in str(s.logged("rpc.connection.enhance_your_calm")["reason"])


async def test_ping_flood() -> None:
    async with scenario() as s:
        stream = await s.connect()
        await stream.send_all(hello() + b"".join(frame(Ping(i)) for i in range(10)))
        await check_goaway(
            s, stream, ErrorCode.ENHANCE_YOUR_CALM, "rpc.connection.enhance_your_calm", "ping"
        )


# ---------------------------------------------------------------------------- backpressure


async def test_client_that_stops_reading_keeps_server_memory_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario(
        pause=0.1, time_limit=120, keepalive_interval=30, keepalive_timeout=10
    ) as s:
        stream = await s.connect()
        big = msgspec.msgpack.encode(SimpleRequest(response_size=1 << 20))
        many = msgspec.msgpack.encode(StreamingRequest(count=10_000, size=1 << 16))
        # 200 MiB of unary answers and 10 streams of 640 MiB each, never read.
        unary = b"".join(
            request(i, "grpc.testing.TestService/unary_call", big) for i in range(1, 201)
        )
        streams = b"".join(
            request(i, "grpc.testing.TestService/streaming_output_call", many, call_type=1)
            for i in range(201, 211)
        )
        await stream.send_all(hello() + unary + streams)
        start = trio.current_time()
        # The writer fills the socket buffers, then the queue, then the server stops
        # pulling: the good client keeps sampling the queue meanwhile (every 0.1 s).
        await eventually(lambda: s.server.statistics().connections < 2)
        assert trio.current_time() - start == pytest.approx(40, abs=1)  # keepalive: 30 + 10
        assert s.logged("rpc.connection.keepalive_timeout")
        # One connection's queue, plus at most one more frame, plus the good client's few bytes.
        assert HIGH_WATER < s.good.max_queued <= HIGH_WATER + (1 << 20) + (1 << 16)
        frames = await read_to_end(stream)
        assert sum(isinstance(f, Response) for f in frames) < 200
