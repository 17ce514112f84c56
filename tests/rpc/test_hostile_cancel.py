"""Issue #15 defect 5: the rapid-reset guard counts cancelled-before-answered calls over
time, whatever the read boundaries. Each CANCEL here is its own write, sent after its
REQUEST's call has started (the server read them in separate reads)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_micro.protocol import Cancel, ErrorCode, Frame
from trio_micro.rpc import _server_connection

from .test_bad_input import frame, goaway, hello, read_to_end, request, scenario

_LIMIT = 20  # the guard's limit, lowered so the test stays fast


@pytest.fixture(autouse=True)
def _small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_server_connection, "_MAX_PREMATURE_CANCELS", _LIMIT)


async def _request_then_cancel(stream: trio.SocketStream, count: int, gap: float) -> None:
    for sid in range(1, count + 1):
        try:
            await stream.send_all(request(sid))
            await trio.sleep(0.001)  # the call starts; the CANCEL comes in a later read
            await stream.send_all(frame(Cancel(sid)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the server hung up
        await trio.sleep(gap)


async def test_cancels_in_later_writes_still_trip_the_guard(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario(pause=0.01) as s:
        stream = await s.connect()
        await stream.send_all(hello())
        frames: list[Frame] = []
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                frames.extend(await read_to_end(stream))

            nursery.start_soon(read)
            await _request_then_cancel(stream, 3 * _LIMIT, gap=0.0)
        assert goaway(frames).code is ErrorCode.ENHANCE_YOUR_CALM
        assert "cancel flood" in str(s.logged("rpc.connection.enhance_your_calm")["reason"])


async def test_occasional_cancels_never_trip_the_guard(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario(pause=0.01, time_limit=600) as s:
        stream = await s.connect()
        await stream.send_all(hello())
        # 3 * _LIMIT cancels, but at most _LIMIT / 2 in any 10 s window.
        await _request_then_cancel(stream, 3 * _LIMIT, gap=20 / _LIMIT)
        await stream.send_all(request(10_000))  # still served: the connection is up
        assert not [e for e in s.logs if e["event"] == "rpc.connection.enhance_your_calm"]
        await stream.aclose()
