"""How a server-stream handler's failures end the call: the status after the items sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.protocol import CallType, End, Error, Item

from .conftest import RecordOutcomes, address
from .raw import RawClient
from .services import Empty, StreamItem


class FailingStreams(rpc.Service, name="test.FailingStreams"):
    """Server-streams that yield one item and then fail, each in its own way."""

    __test__ = False

    def __init__(self) -> None:
        self.cancelled = trio.Event()

    @rpc.server_stream
    async def refuse(self, req: Empty) -> AsyncIterator[StreamItem]:
        yield StreamItem(0)
        raise rpc.RpcError(rpc.Status.NOT_FOUND, "no more")

    @rpc.server_stream
    async def crash(self, req: Empty) -> AsyncIterator[StreamItem]:
        yield StreamItem(0)
        raise ValueError("secret in this message")

    @rpc.server_stream
    async def bad_item(self, req: Empty) -> AsyncIterator[StreamItem]:
        yield StreamItem(0)
        yield Empty()  # type: ignore[misc]

    @rpc.server_stream
    async def bad_cleanup(self, req: Empty) -> AsyncIterator[StreamItem]:
        try:
            yield Empty()  # type: ignore[misc]
        finally:
            raise ValueError("cleanup failed")

    @rpc.server_stream
    async def hang(self, req: Empty) -> AsyncIterator[StreamItem]:
        yield StreamItem(0)
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled.set()


async def items_then_error(stub: FailingStreams, method: str) -> tuple[int, rpc.RpcError]:
    received = 0
    try:
        async for _ in getattr(stub, method)(Empty()):
            received += 1
    except rpc.RpcError as exc:
        return received, exc
    raise AssertionError(f"{method} ended cleanly after {received} items")


@pytest.mark.parametrize("interceptors", [False, True], ids=["plain", "intercepted"])
async def test_stream_handler_failures_become_the_calls_status(interceptors: bool) -> None:
    record = RecordOutcomes()
    with capture_logs() as logs:
        async with (
            rpc.open_server(
                [FailingStreams()],
                host="127.0.0.1",
                interceptors=[record] if interceptors else [],
            ) as server,
            rpc.open_channel(address(server)) as channel,
        ):
            stub = channel.stub(FailingStreams)
            received, error = await items_then_error(stub, "refuse")
            assert (received, error.code, error.message) == (1, rpc.Status.NOT_FOUND, "no more")
            received, error = await items_then_error(stub, "crash")
            assert (received, error.code) == (1, rpc.Status.INTERNAL)
            assert "secret" not in error.message
            received, error = await items_then_error(stub, "bad_item")
            assert (received, error.code) == (1, rpc.Status.INTERNAL)
    crashes = [log for log in logs if log["event"] == "rpc.handler.crashed"]
    assert [(log["method"], log["what"], repr(log["exc_info"])) for log in crashes] == [
        ("crash", "stream handler raised", "ValueError('secret in this message')"),
        (
            "bad_item",
            "bad item",
            "TypeError('test.FailingStreams/bad_item must yield StreamItem items, got Empty()')",
        ),
    ]
    if interceptors:
        assert [(method, code) for method, _, code in record.outcomes] == [
            ("refuse", rpc.Status.NOT_FOUND),
            ("crash", rpc.Status.INTERNAL),
            ("bad_item", rpc.Status.INTERNAL),
        ]


async def test_deadline_inside_a_stream_handler_ends_the_stream_with_deadline_exceeded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = FailingStreams()
    async with rpc.open_server([service], host="127.0.0.1") as server:
        client = await RawClient.connect(server)
        error, seconds = await client.call_with_deadline(
            "test.FailingStreams/hang", 250, call_type=CallType.SERVER_STREAM
        )
        assert (error.code, error.message) == (rpc.Status.DEADLINE_EXCEEDED, "deadline exceeded")
        assert seconds == pytest.approx(0.25)
        assert service.cancelled.is_set()
        # One item, then the ERROR instead of an END.
        assert [type(e) for e in client.events if isinstance(e, (Item, End, Error))] == [
            Item,
            Error,
        ]
        await client.aclose()


async def test_a_stream_handler_that_fails_as_it_is_closed_is_logged() -> None:
    with capture_logs() as logs:
        async with (
            rpc.open_server([FailingStreams()], host="127.0.0.1") as server,
            rpc.open_channel(address(server)) as channel,
        ):
            received, error = await items_then_error(channel.stub(FailingStreams), "bad_cleanup")
    assert (received, error.code) == (0, rpc.Status.INTERNAL)
    crashes = [log for log in logs if log["event"] == "rpc.handler.crashed"]
    assert [(log["method"], log["what"], repr(log["exc_info"])) for log in crashes[1:]] == [
        ("bad_cleanup", "stream handler raised while closing", "ValueError('cleanup failed')")
    ]
    assert crashes[0]["what"] == "bad item"
