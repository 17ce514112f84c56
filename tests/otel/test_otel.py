"""The OpenTelemetry bridge, with the SDK's in-memory exporter and metric reader."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import msgspec
import pytest
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from trio_micro import observe, otel, rpc, testing


class Hop(msgspec.Struct):
    fail_with: int = 0  # the status the last hop fails with (0: none)


class HopService(rpc.Service, name="hop"):
    def __init__(self, name: str) -> None:
        self.name = name
        self.next: Callable[[Hop], Awaitable[Hop]] | None = None

    @rpc.unary
    async def forward(self, req: Hop) -> Hop:
        if self.next is not None:
            return await self.next(req)
        if req.fail_with:
            raise rpc.RpcError(rpc.Status(req.fail_with), f"{self.name} says no")
        return req


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[reader])


@pytest.fixture
async def chain(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> AsyncIterator[HopService]:
    """A -> B -> C, each with both interceptors; yields A's stub."""
    hops = [HopService(name) for name in "abc"]
    async with AsyncExitStack() as stack:
        stub: HopService | None = None
        for hop in reversed(hops):
            if stub is not None:
                hop.next = stub.forward
            harness = await stack.enter_async_context(
                testing.open_service(
                    [hop],
                    interceptors=[
                        otel.OtelServerInterceptor(
                            tracer_provider=tracer_provider, meter_provider=meter_provider
                        )
                    ],
                    client_interceptors=[
                        otel.OtelClientInterceptor(
                            tracer_provider=tracer_provider, meter_provider=meter_provider
                        )
                    ],
                )
            )
            stub = harness.stub(HopService)
        assert stub is not None
        yield stub


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    # SimpleSpanProcessor exports a span when it ends: the innermost hop first.
    return [span for span in spans if span.kind is kind][::-1]


async def test_a_three_hop_chain_is_one_trace_with_right_parents(
    chain: HopService, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with tracer_provider.get_tracer("test").start_as_current_span("caller") as root:
        await chain.forward(Hop())
    spans = exporter.get_finished_spans()
    assert len(spans) == 7  # the caller's, and a client and a server span per hop
    assert {span.context.trace_id for span in spans} == {root.get_span_context().trace_id}
    clients, servers = by_kind(spans, SpanKind.CLIENT), by_kind(spans, SpanKind.SERVER)
    parent = root.get_span_context().span_id
    for client, server in zip(clients, servers, strict=True):
        assert client.parent is not None
        assert server.parent is not None
        assert client.parent.span_id == parent
        assert server.parent.span_id == client.context.span_id
        parent = server.context.span_id
    assert [s.name for s in servers] == ["hop/forward"] * 3
    assert servers[0].attributes is not None
    assert servers[0].attributes["rpc.system"] == "trio_micro"
    assert servers[0].attributes["rpc.service"] == "hop"
    assert servers[0].attributes["rpc.method"] == "forward"
    assert servers[0].attributes[otel.STATUS_CODE_ATTRIBUTE] == 0
    assert clients[0].attributes is not None
    assert isinstance(clients[0].attributes["server.port"], int)


async def test_a_client_error_is_an_error_on_the_client_only(
    chain: HopService, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(rpc.RpcError):
        await chain.forward(Hop(fail_with=rpc.Status.NOT_FOUND.value))
    spans = exporter.get_finished_spans()
    [last_server] = [s for s in spans if s.kind is SpanKind.SERVER][:1]  # C ended first
    assert last_server.status.status_code is StatusCode.UNSET
    assert last_server.attributes is not None
    assert last_server.attributes[otel.STATUS_CODE_ATTRIBUTE] == rpc.Status.NOT_FOUND.value
    for client in by_kind(spans, SpanKind.CLIENT):
        assert client.status.status_code is StatusCode.ERROR
        assert client.attributes is not None
        assert client.attributes["error.type"] == "NOT_FOUND"


async def test_a_server_fault_is_an_error_on_both_sides(
    chain: HopService, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(rpc.RpcError):
        await chain.forward(Hop(fail_with=rpc.Status.INTERNAL.value))
    statuses = {span.status.status_code for span in exporter.get_finished_spans()}
    assert statuses == {StatusCode.ERROR}


async def test_without_an_otel_span_the_trio_micro_span_is_the_parent(
    chain: HopService, exporter: InMemorySpanExporter
) -> None:
    with observe.start_span() as ours:
        await chain.forward(Hop())
    spans = exporter.get_finished_spans()
    assert {format(span.context.trace_id, "032x") for span in spans} == {ours.trace_id}
    first_client = by_kind(spans, SpanKind.CLIENT)[0]
    assert first_client.parent is not None
    assert format(first_client.parent.span_id, "016x") == ours.span_id


async def test_the_access_log_names_the_otel_span(
    chain: HopService, exporter: InMemorySpanExporter
) -> None:
    with testing.capture_access_log() as log:
        await chain.forward(Hop())
        with trio.fail_after(5):
            records = await log.wait_for_calls(3)
    servers = {format(s.context.span_id, "016x") for s in exporter.get_finished_spans()}
    assert {record["span_id"] for record in records} <= servers


async def test_durations_are_recorded_per_side(
    chain: HopService, reader: InMemoryMetricReader
) -> None:
    await chain.forward(Hop())
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    servers = points["rpc.server.call.duration"]  # a point per hop: server.port differs
    assert sum(point.count for point in servers) == 3
    assert {point.attributes["rpc.method"] for point in servers if point.attributes} == {"forward"}
    assert sum(point.count for point in points["rpc.client.call.duration"]) == 3


def test_without_the_extra_the_import_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "trio_micro.otel")
    with pytest.raises(ImportError, match=r"pip install 'trio-micro\[otel\]'"):
        importlib.import_module("trio_micro.otel")


async def test_without_an_sdk_the_bridge_steps_aside_and_traces_still_propagate() -> None:
    # No provider passed and none set globally: only the API's own (no-op) providers.
    hop = HopService("a")
    seen: list[observe.TraceContext | None] = []

    class Record:
        async def intercept(
            self, call: rpc.ServerCall, proceed: Callable[[], Awaitable[None]]
        ) -> None:
            seen.append(observe.current_span())
            await proceed()

    async with testing.open_service(
        [hop],
        interceptors=[otel.OtelServerInterceptor(), Record()],
        client_interceptors=[otel.OtelClientInterceptor()],
    ) as harness:
        with observe.start_span() as ours:
            await harness.stub(HopService).forward(Hop())
    [span] = seen
    assert span is not None
    assert (span.trace_id, span.parent_span_id) == (ours.trace_id, ours.span_id)
