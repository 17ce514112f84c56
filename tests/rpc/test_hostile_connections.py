"""Issue #15 defect 2: connections are bounded, the excess is refused at once with a GOAWAY
that says why, and a repeating accept error is logged a line per interval with a count."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.protocol import ErrorCode, Hello

from .conftest import address
from .services import GetUserRequest, TestService
from .test_bad_input import goaway, hello, read_to_end, scenario


async def test_connections_beyond_the_per_peer_limit_get_a_goaway() -> None:
    async with scenario(max_connections_per_peer=3) as s:  # the good client holds one
        held = [await s.connect() for _ in range(2)]
        for stream in held:
            await stream.send_all(hello())
        extra = await s.connect()
        frames = await read_to_end(extra)
        assert isinstance(frames[0], Hello)
        refusal = goaway(frames)
        assert (refusal.code, refusal.last_id) == (ErrorCode.NO_ERROR, 0)
        assert "max_connections_per_peer=3" in refusal.message
        assert s.logged("rpc.connection.refused")["reason"] == "max_connections_per_peer"
        for stream in held:
            await stream.aclose()


async def test_a_client_of_a_full_server_fails_unavailable_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Before: a client of a server out of connections hung until its deadline.
    async with rpc.open_server([TestService()], host="127.0.0.1", max_connections=1) as server:
        squatter = await trio.open_tcp_stream(*server.address)
        await squatter.send_all(hello())
        async with rpc.open_channel(address(server)) as channel:
            start = trio.current_time()
            with trio.fail_after(2), pytest.raises(rpc.RpcError) as caught:
                await channel.stub(TestService).get_user(GetUserRequest(1))
            assert trio.current_time() == start  # virtual time: no wait at all
        assert caught.value.code is rpc.Status.UNAVAILABLE
        assert "max_connections" in caught.value.message
        await squatter.aclose()


async def test_accept_errors_are_logged_a_line_per_interval_with_a_count(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = 0

    async def out_of_descriptors(self: trio.SocketListener) -> trio.SocketStream:
        nonlocal failures
        failures += 1
        await trio.lowlevel.checkpoint()
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(trio.SocketListener, "accept", out_of_descriptors)
    with capture_logs() as logs:
        async with rpc.open_server([TestService()], host="127.0.0.1"):
            await trio.sleep(12)  # 10 attempts a second (the accept backoff)
    lines = [entry for entry in logs if entry["event"] == "rpc.server.accept_failed"]
    assert len(lines) == 3  # at 0, 5 and 10 s: before, about 120 lines
    assert sum(int(line["count"]) for line in lines) >= failures - 20
    assert 49 <= int(lines[1]["count"]) <= 51  # 5 s of attempts, 0.1 s apart
