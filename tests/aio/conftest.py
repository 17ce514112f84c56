"""A real trio_micro server in a thread, for the asyncio client's tests (127.0.0.1, port 0),
and a hand-driven asyncio one that answers a chosen call with bytes no server would send."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import pytest
import trio
from msgspec.msgpack import Ext

from trio_micro import aio, rpc
from trio_micro.protocol import (
    CallType,
    Cancel,
    Connection,
    FrameEncoder,
    Item,
    Request,
    Response,
    Role,
    Settings,
)

from .services import AioTestService, Answer, Ask, Probe

T = TypeVar("T")
BOUND = 30.0  # no test may hang; a real failure shows long before this


def run(
    fn: Callable[[], Awaitable[T]],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """``asyncio.run(fn())`` (on ``loop_factory``'s loop if given), bounded by BOUND s."""

    async def bounded() -> T:
        async with asyncio.timeout(BOUND):
            return await fn()

    if loop_factory is None:
        return asyncio.run(bounded())
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(bounded())


@dataclass
class ServerThread:
    target: str
    probe: Probe
    token: trio.lowlevel.TrioToken
    scope: trio.CancelScope
    thread: threading.Thread

    def stop(self) -> None:
        """Shut the server down (gracefully, as on a normal exit) and wait for it."""
        if self.thread.is_alive():
            trio.from_thread.run_sync(self.scope.cancel, trio_token=self.token)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def start_server(
    port: int = 0, *, extra: Sequence[rpc.Service] = (), **options: Any
) -> ServerThread:
    """A trio_micro server in a thread of its own (its own trio run), serving ``extra`` too."""
    probe = Probe()
    started: queue.Queue[tuple[trio.lowlevel.TrioToken, trio.CancelScope, str]] = queue.Queue()

    async def main() -> None:
        service = AioTestService(probe)
        async with rpc.open_server(
            [service, *extra], host="127.0.0.1", port=port, **options
        ) as srv:
            host, bound = srv.address
            with trio.CancelScope() as scope:
                started.put((trio.lowlevel.current_trio_token(), scope, f"{host}:{bound}"))
                await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    token, scope, target = started.get(timeout=30)
    return ServerThread(target, probe, token, scope, thread)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    running = start_server()
    try:
        yield running
    finally:
        running.stop()


def hand_driven(bad: Ext | bytes, *, nth: int = 1) -> Callable[..., Awaitable[None]]:
    """An asyncio server (for ``asyncio.start_server``) speaking the protocol by hand: call
    number ``nth`` (from 1) gets ``bad`` as its answer (a RESPONSE, or an ITEM on a
    server-stream), whatever the client announced; every other call n gets ``Answer(n)``.
    A server-stream answered so stays open and gets one more ``Answer(n)`` item each time a
    later call n comes (until the client cancels it)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(Role.SERVER, settings=Settings(compression=("zlib",)))
        writer.write(conn.initiate())
        answered = 0
        streams: list[int] = []  # server-streams answered well and still open
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, Cancel) and event.id in streams:
                        streams.remove(event.id)
                    if not isinstance(event, Request):
                        continue
                    answered += 1
                    ok = msgspec.msgpack.encode(Answer(value=answered))
                    for open_id in streams:
                        writer.write(conn.send_item(open_id, ok))
                    out = bad if answered == nth else ok
                    if event.call_type is CallType.SERVER_STREAM:
                        conn.send_item(event.id, ok)  # the state machine's books
                        frame: Item | Response = Item(event.id, out)
                        if out is ok:
                            streams.append(event.id)
                    else:
                        conn.send_response(event.id, ok)
                        frame = Response(event.id, out)
                    writer.write(FrameEncoder().encode(frame))
        finally:
            writer.close()

    return serve


async def fails_then_works(
    bad: Ext | bytes, call: Callable[[aio.Channel], Awaitable[object]]
) -> tuple[rpc.RpcError, Answer, bool]:
    """``call``'s error against :func:`hand_driven` (``bad`` answering it), the next unary
    call's answer on the same channel, and whether the channel kept its connection."""
    server = await asyncio.start_server(hand_driven(bad), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        async with aio.open_channel(f"127.0.0.1:{port}", max_frame_size=64 * 1024) as ch:
            before = await ch.connection()
            with pytest.raises(rpc.RpcError) as info:
                await call(ch)
            answer = await ch.stub(AioTestService).echo(Ask())
            return info.value, answer, before is await ch.connection()
