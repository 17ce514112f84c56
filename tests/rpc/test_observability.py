"""Trace propagation across calls, the access log, and metadata limits."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack

import msgspec
import pytest
import structlog
import trio
import trio.testing
from structlog.typing import EventDict

from trio_micro import analysis, observe, rpc, testing
from trio_micro.observe import CALL_EVENTS, CALL_RECORD_FIELDS, CallRecord

from .conftest import address
from .raw import RawClient
from .services import (
    Empty,
    GetUserRequest,
    SimpleRequest,
    StreamingRequest,
    TestService,
    User,
)


class WrongUserRequest(msgspec.Struct):
    user_id: str


class LooseTestService(rpc.Service, name="grpc.testing.TestService"):
    """The client's view of TestService with a wrong request type."""

    @rpc.unary
    async def get_user(self, req: WrongUserRequest) -> User:
        raise AssertionError  # pragma: no cover


class CachedUsers(rpc.Service, name="users"):
    @rpc.unary
    async def get_user(self, req: GetUserRequest) -> User:
        if req.user_id >= 0:
            structlog.contextvars.bind_contextvars(cache="hit" if req.user_id % 2 else "miss")
        return User(req.user_id, "Ada")


class Hop(rpc.Service, name="hop"):
    """Logs, then forwards the call to the next hop, if any."""

    def __init__(self) -> None:
        self.next: Callable[[Empty], Awaitable[Empty]] | None = None
        self.spans: list[observe.TraceContext | None] = []

    @rpc.unary
    async def forward(self, req: Empty) -> Empty:
        self.spans.append(observe.current_span())
        structlog.get_logger("app").info("app.hop")
        if self.next is not None:
            await self.next(req)
        return Empty()


class HopA(Hop, name="a"):
    pass


class HopB(Hop, name="b"):
    pass


class HopC(Hop, name="c"):
    pass


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def logs(access_log: testing.AccessLog) -> list[EventDict]:
    """Every record of the test (the plugin's ``access_log`` fixture captures them)."""
    return access_log.entries


@pytest.fixture
def json_log() -> Iterator[io.BytesIO]:
    """JSON lines from ``configure_logging``, as ``trio-micro logs`` would read them."""
    out = io.BytesIO()
    observe.configure_logging(format="json", file=out, level="debug")
    yield out
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
async def logged(service: TestService) -> AsyncIterator[testing.ServiceHarness]:
    async with testing.open_service([service]) as harness:  # the access log is on
        yield harness


@pytest.fixture
def logged_server(logged: testing.ServiceHarness) -> rpc.Server:
    return logged.server


@pytest.fixture
def logged_stub(logged: testing.ServiceHarness) -> TestService:
    return logged.stub(TestService)


def call_records(logs: list[EventDict]) -> list[EventDict]:
    return [entry for entry in logs if entry["event"] in CALL_EVENTS]


def json_records(out: io.BytesIO) -> list[CallRecord]:
    return list(analysis.iter_call_records(out.getvalue().splitlines()))


async def one_record(logs: list[EventDict]) -> EventDict:
    """The one call record, once the server has written it."""
    with trio.fail_after(5):
        [record] = await testing.AccessLog(logs).wait_for_calls(1)
    return record


# --------------------------------------------------------------------------- access log


async def test_access_log_ok(
    logs: list[EventDict], logged_server: rpc.Server, logged_stub: TestService
) -> None:
    await logged_stub.get_user(GetUserRequest(user_id=1))
    [record] = call_records(logs)
    assert record["server"] == address(logged_server)  # the replica that served it
    assert record["event"] == observe.RPC_CALL_COMPLETE
    assert record["log_level"] == "info"
    assert record["service"] == "grpc.testing.TestService"
    assert record["method"] == "get_user"
    assert record["peer"].startswith("127.0.0.1:")
    assert record["code"] == observe.CODE_OK
    assert isinstance(record["duration_ms"], float)
    assert record["duration_ms"] >= 0
    assert len(record["trace_id"]) == 32
    assert len(record["span_id"]) == 16
    assert "parent_span_id" not in record  # called outside any span: the root
    assert "message" not in record
    assert set(record) - {"event", "log_level"} <= set(CALL_RECORD_FIELDS)


@pytest.mark.parametrize(
    ("request_", "code", "level", "message"),
    [
        (
            SimpleRequest(status_code=rpc.Status.NOT_FOUND.value, status_message="no user 7"),
            "NOT_FOUND",
            "warning",
            "no user 7",
        ),
        (
            SimpleRequest(status_code=rpc.Status.UNAVAILABLE.value, status_message="down"),
            "UNAVAILABLE",
            "warning",
            "down",
        ),
        (
            SimpleRequest(status_code=rpc.Status.DATA_LOSS.value, status_message="gone"),
            "DATA_LOSS",
            "error",
            "gone",
        ),
    ],
)
async def test_access_log_status_from_the_handler(
    logs: list[EventDict],
    logged_stub: TestService,
    request_: SimpleRequest,
    code: str,
    level: str,
    message: str,
) -> None:
    with pytest.raises(rpc.RpcError):
        await logged_stub.unary_call(request_)
    [record] = call_records(logs)
    assert record["event"] == observe.RPC_CALL_FAILED
    assert (record["code"], record["log_level"], record["message"]) == (code, level, message)
    assert record["method"] == "unary_call"
    assert "trace_id" in record


async def test_access_log_internal(logs: list[EventDict], logged_stub: TestService) -> None:
    with pytest.raises(rpc.RpcError):
        await logged_stub.crash(Empty())
    [crashed] = [entry for entry in logs if entry["event"] == "rpc.handler.crashed"]
    [record] = call_records(logs)
    assert record["code"] == "INTERNAL"
    assert record["log_level"] == "error"
    assert record["message"] == "internal server error"
    # the crash report carries the call's trace too, so the two can be joined
    assert crashed["trace_id"] == record["trace_id"]
    assert crashed["span_id"] == record["span_id"]


async def test_access_log_invalid_argument(
    logs: list[EventDict], logged_server: rpc.Server
) -> None:
    async with rpc.open_channel(address(logged_server)) as channel:
        with pytest.raises(rpc.RpcError):
            await channel.stub(LooseTestService).get_user(WrongUserRequest(user_id="seven"))
    [record] = call_records(logs)
    assert record["code"] == "INVALID_ARGUMENT"
    assert record["message"] == "Expected `int`, got `str` - at `$.user_id`"


async def test_access_log_cancelled_by_the_client(
    logs: list[EventDict], service: TestService, logged_stub: TestService
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(logged_stub.sleep, Empty())
        await service.started.wait()
        nursery.cancel_scope.cancel()
    record = await one_record(logs)
    assert record["event"] == observe.RPC_CALL_FAILED
    assert record["code"] == "CANCELLED"
    assert record["method"] == "sleep"


async def test_access_log_deadline_exceeded(
    autojump_clock: trio.testing.MockClock, logs: list[EventDict], logged_server: rpc.Server
) -> None:
    client = await RawClient.connect(logged_server)
    await client.call_with_deadline("grpc.testing.TestService/sleep", 250)
    await client.aclose()
    [record] = call_records(logs)
    assert record["code"] == "DEADLINE_EXCEEDED"
    assert record["duration_ms"] >= 0
    assert "parent_span_id" not in record  # no traceparent: a new trace


async def test_access_log_server_stream(logs: list[EventDict], logged_stub: TestService) -> None:
    items = [item async for item in logged_stub.streaming_output_call(StreamingRequest(3))]
    assert len(items) == 3
    [record] = call_records(logs)
    assert record["event"] == observe.RPC_CALL_COMPLETE
    assert record["method"] == "streaming_output_call"
    assert record["code"] == "OK"


async def test_access_log_server_stream_stopped_early(
    logs: list[EventDict], service: TestService, logged_stub: TestService
) -> None:
    async for item in logged_stub.streaming_output_call(StreamingRequest(1_000_000)):
        if item.index == 2:
            break
    with trio.fail_after(5):
        await service.cancelled.wait()
    record = await one_record(logs)
    assert record["code"] == "CANCELLED"
    assert record["method"] == "streaming_output_call"


async def test_access_log_carries_what_the_handler_bound(logs: list[EventDict]) -> None:
    async with testing.open_service([CachedUsers()]) as harness:
        users = harness.stub(CachedUsers)
        for user_id in (1, 2, -1):
            await users.get_user(GetUserRequest(user_id=user_id))
    assert [record.get("cache") for record in call_records(logs)] == ["hit", "miss", None]


async def test_access_log_goes_first_to_log_what_others_refuse(logs: list[EventDict]) -> None:
    class Refuse:
        async def intercept(
            self, call: rpc.ServerCall, proceed: Callable[[], Awaitable[None]]
        ) -> None:
            raise rpc.RpcError(rpc.Status.UNAUTHENTICATED, "bad token")

    async with testing.open_service([TestService()], interceptors=[Refuse()]) as harness:
        with pytest.raises(rpc.RpcError):
            await harness.stub(TestService).empty_call(Empty())
    [record] = call_records(logs)
    assert (record["code"], record["message"]) == ("UNAUTHENTICATED", "bad token")


async def test_access_log_writes_to_a_given_logger(logged_server: rpc.Server) -> None:
    with structlog.testing.capture_logs() as logs:
        interceptor = rpc.AccessLogInterceptor(logger=structlog.get_logger("access"))
        async with (
            rpc.open_server([TestService()], host="127.0.0.1", interceptors=[interceptor]) as srv,
            rpc.open_channel(address(srv)) as channel,
        ):
            with observe.start_span():
                await channel.stub(TestService).empty_call(Empty())
    # without merge_contextvars the trace fields are still there: the interceptor adds them
    [record] = call_records(logs)
    assert {"trace_id", "span_id", "parent_span_id"} <= set(record)
    assert repr(interceptor) == "rpc.AccessLogInterceptor()"


async def test_access_log_json_lines_feed_the_analysis(json_log: io.BytesIO) -> None:
    async with testing.open_service([CachedUsers(), TestService()]) as harness:
        users = harness.stub(CachedUsers)
        test = harness.stub(TestService)
        for user_id in (1, 3, 5, 2):
            await users.get_user(GetUserRequest(user_id=user_id))
        for _ in range(2):
            with pytest.raises(rpc.RpcError):
                await test.unary_call(SimpleRequest(status_code=rpc.Status.NOT_FOUND.value))
        await test.empty_call(Empty())

    builder = analysis.SummaryBuilder(group_by=("cache",))
    builder.add_json_lines(json_log.getvalue().splitlines())
    summary = builder.build()
    assert summary.input.malformed == {}
    by_method = {(m.service, m.method): m for m in summary.methods()}
    get_user = by_method["users", "get_user"]
    assert (get_user.calls, get_user.errors) == (4, 0)
    assert get_user.fields == {"cache": {"hit": 3, "miss": 1}}
    unary = by_method["grpc.testing.TestService", "unary_call"]
    assert (unary.calls, dict(unary.codes)) == (2, {"NOT_FOUND": 2})
    assert by_method["grpc.testing.TestService", "empty_call"].calls == 1
    assert summary.calls == 7
    assert summary.errors == 2


# --------------------------------------------------------------------------- tracing


async def test_a_three_service_chain_is_one_trace(json_log: io.BytesIO) -> None:
    a, b, c = HopA(), HopB(), HopC()
    log = [rpc.AccessLogInterceptor()]
    async with AsyncExitStack() as stack:
        server_c = await stack.enter_async_context(
            rpc.open_server([c], host="127.0.0.1", interceptors=log)
        )
        to_c = await stack.enter_async_context(rpc.open_channel(address(server_c)))
        b.next = to_c.stub(HopC).forward
        server_b = await stack.enter_async_context(
            rpc.open_server([b], host="127.0.0.1", interceptors=log)
        )
        to_b = await stack.enter_async_context(rpc.open_channel(address(server_b)))
        a.next = to_b.stub(HopB).forward
        server_a = await stack.enter_async_context(
            rpc.open_server([a], host="127.0.0.1", interceptors=log)
        )
        to_a = await stack.enter_async_context(rpc.open_channel(address(server_a)))
        with observe.start_span() as root:  # the caller's span: A's parent
            await to_a.stub(HopA).forward(Empty())

    records = {record.service: record for record in json_records(json_log)}
    assert set(records) == {"a", "b", "c"}
    assert {record.trace_id for record in records.values()} == {root.trace_id}
    assert records["a"].parent_span_id == root.span_id
    assert records["b"].parent_span_id == records["a"].span_id
    assert records["c"].parent_span_id == records["b"].span_id
    # what each handler saw as its current span is what its record says
    for hop, name in ((a, "a"), (b, "b"), (c, "c")):
        [span] = hop.spans
        assert span is not None
        assert (span.trace_id, span.span_id, span.parent_span_id) == (
            records[name].trace_id,
            records[name].span_id,
            records[name].parent_span_id,
        )
    # records the handlers wrote carry the trace too
    app = [
        msgspec.json.decode(line)
        for line in json_log.getvalue().splitlines()
        if b'"app.hop"' in line
    ]
    assert sorted(entry["span_id"] for entry in app) == sorted(
        record.span_id for record in records.values() if record.span_id
    )

    trace = analysis.build_trace(records.values(), root.trace_id)
    assert trace.span_count == 3
    assert [(depth, span.service) for depth, span in trace.walk()] == [
        (0, "a"),
        (1, "b"),
        (2, "c"),
    ]


async def test_calls_outside_a_span_start_new_traces(
    logs: list[EventDict], logged_stub: TestService
) -> None:
    await logged_stub.empty_call(Empty())
    await logged_stub.empty_call(Empty())
    first, second = call_records(logs)
    assert first["trace_id"] != second["trace_id"]


async def test_calls_in_one_span_share_its_trace(
    logs: list[EventDict], logged_stub: TestService
) -> None:
    with observe.start_span() as span:
        await logged_stub.empty_call(Empty())
        async for _ in logged_stub.streaming_output_call(StreamingRequest(1)):
            pass
    records = call_records(logs)
    assert [(r["trace_id"], r["parent_span_id"]) for r in records] == [
        (span.trace_id, span.span_id)
    ] * 2
    assert records[0]["span_id"] != records[1]["span_id"]


async def test_a_traceparent_from_the_caller_is_kept(
    logs: list[EventDict], logged_server: rpc.Server
) -> None:
    # e.g. from an OpenTelemetry-instrumented client, or a newer version of the spec
    incoming = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future"
    async with rpc.open_channel(address(logged_server)) as channel:
        stub = channel.stub(TestService, metadata={"traceparent": incoming})
        info = await stub.call_info(Empty())
    assert info.metadata["traceparent"] == incoming
    [record] = call_records(logs)
    assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record["parent_span_id"] == "00f067aa0ba902b7"


async def test_a_malformed_traceparent_starts_a_new_trace(
    logs: list[EventDict], logged_server: rpc.Server
) -> None:
    async with rpc.open_channel(address(logged_server)) as channel:
        stub = channel.stub(TestService, metadata={"traceparent": "00-not-a-trace-01"})
        await stub.empty_call(Empty())
    [debug] = [entry for entry in logs if entry["event"] == "rpc.trace.bad_traceparent"]
    assert debug["log_level"] == "debug"
    assert "'00-not-a-trace-01'" in debug["reason"]
    [record] = call_records(logs)
    assert record["code"] == "OK"
    assert len(record["trace_id"]) == 32
    assert "parent_span_id" not in record


async def test_handlers_see_their_span_and_others_do_not(
    service: TestService, logged_stub: TestService
) -> None:
    assert observe.current_span() is None
    with observe.start_span() as span:
        info = await logged_stub.call_info(Empty())
        assert observe.current_span() is span  # the call did not change the caller's span
    incoming = observe.parse_traceparent(info.metadata["traceparent"])
    assert (incoming.trace_id, incoming.span_id) == (span.trace_id, span.span_id)


# --------------------------------------------------------------------------- metadata limits


async def test_metadata_over_the_limit_names_both_sizes(service: TestService) -> None:
    async with testing.open_service([service], access_log=False, max_metadata_size=100) as harness:
        channel = harness.channel
        stub = channel.stub(TestService, metadata={"k": "é" * 100})
        with pytest.raises(rpc.RpcError) as info:
            await stub.empty_call(Empty())
    assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED
    assert "201" in info.value.message  # UTF-8 bytes, not characters
    assert "100" in info.value.message
    assert service.calls == 0


@pytest.mark.parametrize(
    ("limit", "metadata"),
    [(0, {}), (16, {}), (100, {"k": "v" * 40}), (100, {"k": "v" * 99})],
)
async def test_a_traceparent_that_would_not_fit_is_left_out(
    service: TestService, limit: int, metadata: dict[str, str]
) -> None:
    async with testing.open_service(
        [service], access_log=False, max_metadata_size=limit
    ) as harness:
        channel = harness.channel
        with observe.start_span():
            info = await channel.stub(TestService, metadata=metadata).call_info(Empty())
    assert info.metadata == metadata


async def test_a_traceparent_that_fits_is_added(service: TestService) -> None:
    async with testing.open_service([service], access_log=False, max_metadata_size=67) as harness:
        channel = harness.channel
        with observe.start_span():
            info = await channel.stub(TestService, metadata={"k": ""}).call_info(Empty())
    assert set(info.metadata) == {"k", "traceparent"}


async def test_calls_outside_a_span_send_no_traceparent_and_the_server_span_is_a_root(
    logs: list[EventDict], logged_stub: TestService
) -> None:
    info = await logged_stub.call_info(Empty())
    assert "traceparent" not in info.metadata
    [record] = call_records(logs)
    assert len(record["trace_id"]) == 32
    assert len(record["span_id"]) == 16
    assert "parent_span_id" not in record
