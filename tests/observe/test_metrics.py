"""Prometheus metrics: the RPC interceptor, stats sources, task monitor, process metrics."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import prometheus_client
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from trio_micro import observe, rpc

from ..rpc.raw import RawClient
from ..rpc.services import Empty, SimpleRequest, TestService

CALLS = "trio_micro_rpc_server_calls_total"
DURATION = "trio_micro_rpc_server_call_duration_seconds"
IN_FLIGHT = "trio_micro_rpc_server_calls_in_flight"
SERVICE = "grpc.testing.TestService"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def service() -> TestService:
    return TestService()


@pytest.fixture
async def server(service: TestService, registry: CollectorRegistry) -> AsyncIterator[rpc.Server]:
    interceptors = [rpc.AccessLogInterceptor(), rpc.MetricsInterceptor(registry=registry)]
    with capture_logs():  # keep the access log off stdout
        async with rpc.open_server(
            [service], host="127.0.0.1", port=0, interceptors=interceptors
        ) as server:
            yield server


@pytest.fixture
async def channel(server: rpc.Server) -> AsyncIterator[rpc.Channel]:
    host, port = server.address
    async with rpc.open_channel(f"{host}:{port}") as channel:
        yield channel


@pytest.fixture
def stub(channel: rpc.Channel) -> TestService:
    return channel.stub(TestService)


def families(registry: CollectorRegistry) -> dict[str, Any]:
    """The registry's output, parsed by Prometheus's own parser."""
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def until(condition: Any) -> None:
    """Wait (bounded) for something the server does after the client has its answer."""
    with trio.fail_after(5):
        while not condition():
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.001)


# --------------------------------------------------------------------------- interceptor


async def test_interceptor_counts_calls_by_service_method_and_code(
    registry: CollectorRegistry, stub: TestService
) -> None:
    for _ in range(3):
        await stub.empty_call(Empty())
    with pytest.raises(rpc.RpcError):
        await stub.unary_call(SimpleRequest(status_code=rpc.Status.NOT_FOUND))
    await until(
        lambda: value(registry, CALLS, service=SERVICE, method="unary_call", code="NOT_FOUND")
    )

    [calls] = [f for name, f in families(registry).items() if name == CALLS.removesuffix("_total")]
    counted = {
        (s.labels["service"], s.labels["method"], s.labels["code"]): s.value
        for s in calls.samples
        if s.name == CALLS
    }
    assert counted == {
        (SERVICE, "empty_call", "OK"): 3.0,
        (SERVICE, "unary_call", "NOT_FOUND"): 1.0,
    }


async def test_interceptor_observes_latency_in_a_histogram(
    registry: CollectorRegistry, stub: TestService
) -> None:
    for _ in range(4):
        await stub.empty_call(Empty())
    await until(lambda: value(registry, f"{DURATION}_count", service=SERVICE, method="empty_call"))

    [histogram] = [f for name, f in families(registry).items() if name == DURATION]
    assert histogram.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.samples}
    assert samples[(f"{DURATION}_count", None)] == 4
    assert samples[(f"{DURATION}_bucket", "+Inf")] == 4
    assert samples[(f"{DURATION}_bucket", "10.0")] == 4  # nothing took 10 s
    bounds = sorted(float(le) for name, le in samples if le not in (None, "+Inf"))
    assert bounds[0] == 0.0001
    assert bounds[-1] == 10.0
    assert samples[(f"{DURATION}_sum", None)] > 0


async def test_interceptor_gauges_calls_in_flight(
    registry: CollectorRegistry, service: TestService, stub: TestService
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stub.sleep, Empty())
        await service.started.wait()
        assert value(registry, IN_FLIGHT, service=SERVICE, method="sleep") == 1
        nursery.cancel_scope.cancel()
    await until(lambda: value(registry, CALLS, service=SERVICE, method="sleep", code="CANCELLED"))
    assert value(registry, IN_FLIGHT, service=SERVICE, method="sleep") == 0


async def test_interceptor_counts_a_deadline_as_deadline_exceeded(
    autojump_clock: trio.testing.MockClock, registry: CollectorRegistry, server: rpc.Server
) -> None:
    client = await RawClient.connect(server)
    error, _seconds = await client.call_with_deadline(f"{SERVICE}/sleep", 250)
    await client.aclose()
    assert error.code is rpc.Status.DEADLINE_EXCEEDED
    labels = {"service": SERVICE, "method": "sleep"}
    assert value(registry, CALLS, **labels, code="DEADLINE_EXCEEDED") == 1
    # Latency is real time (time.perf_counter, like the access log), not trio's clock.
    assert value(registry, f"{DURATION}_count", **labels) == 1


async def test_interceptors_on_one_registry_share_its_metrics(
    registry: CollectorRegistry, service: TestService
) -> None:
    interceptors = [rpc.MetricsInterceptor(registry=registry) for _ in range(2)]
    async with (
        rpc.open_server([service], host="127.0.0.1", interceptors=interceptors[:1]) as one,
        rpc.open_server([service], host="127.0.0.1", interceptors=interceptors[1:]) as two,
    ):
        for server in (one, two):
            host, port = server.address
            async with rpc.open_channel(f"{host}:{port}") as channel:
                await channel.stub(TestService).empty_call(Empty())
        labels = {"service": SERVICE, "method": "empty_call", "code": "OK"}
        await until(lambda: value(registry, CALLS, **labels) == 2)


def test_interceptors_on_the_default_registry_do_not_clash() -> None:
    first = rpc.MetricsInterceptor()
    second = rpc.MetricsInterceptor(registry=prometheus_client.REGISTRY)
    assert first._metrics is second._metrics
    assert repr(first) == "rpc.MetricsInterceptor()"


def test_interceptor_refuses_what_is_not_a_registry() -> None:
    with pytest.raises(TypeError, match="CollectorRegistry"):
        rpc.MetricsInterceptor(registry={})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- servers, channels


async def test_server_statistics_become_gauges(
    registry: CollectorRegistry, server: rpc.Server, service: TestService, stub: TestService
) -> None:
    rpc.register_server_metrics(server, registry=registry)
    host, port = server.address
    labels = {"server": f"{host}:{port}"}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stub.sleep, Empty())
        await service.started.wait()
        assert value(registry, "trio_micro_rpc_server_connections", **labels) == 1
        assert value(registry, "trio_micro_rpc_server_active_calls", **labels) == 1
        assert value(registry, "trio_micro_rpc_server_shutting_down", **labels) == 0
        nursery.cancel_scope.cancel()


async def test_channel_statistics_become_metrics(
    registry: CollectorRegistry, server: rpc.Server, channel: rpc.Channel, stub: TestService
) -> None:
    await stub.empty_call(Empty())
    unregister = rpc.register_channel_metrics(channel, registry=registry)
    host, port = server.address
    labels = {"channel": f"{host}:{port}"}  # the default name: its addresses
    assert value(registry, "trio_micro_rpc_channel_endpoints", **labels) == 1
    assert value(registry, "trio_micro_rpc_channel_ready", **labels) == 1
    assert value(registry, "trio_micro_rpc_channel_retries_total", **labels) == 0
    family = families(registry)["trio_micro_rpc_channel_retries"]
    assert family.type == "counter"
    unregister()
    assert value(registry, "trio_micro_rpc_channel_endpoints", **labels) is None


def test_register_server_and_channel_metrics_check_their_arguments() -> None:
    with pytest.raises(TypeError, match=r"rpc\.Server"):
        rpc.register_server_metrics(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"rpc\.Channel"):
        rpc.register_channel_metrics(object())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- stats sources


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    size: int
    full: bool
    keys: tuple[str, ...]
    name: str
    ratio: float | None


class Cache:
    def __init__(self) -> None:
        self.hits = 0

    def statistics(self) -> CacheStats:
        return CacheStats(self.hits, 2, 10, False, ("a", "b"), "users", None)


def test_a_stats_source_exports_gauges_and_counters(registry: CollectorRegistry) -> None:
    cache = Cache()
    observe.register_stats_source(
        "user_cache", cache.statistics, counters=("hits", "misses"), registry=registry
    )
    cache.hits = 7
    found = families(registry)
    assert found["trio_micro_user_cache_hits"].type == "counter"
    assert found["trio_micro_user_cache_size"].type == "gauge"
    assert value(registry, "trio_micro_user_cache_hits_total") == 7
    assert value(registry, "trio_micro_user_cache_misses_total") == 2
    assert value(registry, "trio_micro_user_cache_size") == 10
    assert value(registry, "trio_micro_user_cache_full") == 0  # a bool is 0/1
    assert value(registry, "trio_micro_user_cache_keys") == 2  # a tuple counts its items
    # Strings and None are not numbers: left out.
    assert "trio_micro_user_cache_name" not in found
    assert "trio_micro_user_cache_ratio" not in found


def test_a_stats_source_may_return_a_mapping(registry: CollectorRegistry) -> None:
    observe.register_stats_source("jobs", lambda: {"queued": 3, "bad key!": 1}, registry=registry)
    assert value(registry, "trio_micro_jobs_queued") == 3
    assert value(registry, "trio_micro_jobs_bad_key_") == 1


def test_sources_sharing_a_name_are_one_family_told_apart_by_labels(
    registry: CollectorRegistry,
) -> None:
    for shard in ("a", "b"):
        observe.register_stats_source(
            "shard", lambda s=shard: {"rows": ord(s)}, labels={"shard": shard}, registry=registry
        )
    [family] = [f for name, f in families(registry).items() if name == "trio_micro_shard_rows"]
    assert {s.labels["shard"]: s.value for s in family.samples} == {"a": 97, "b": 98}


def test_a_duplicate_source_is_refused(registry: CollectorRegistry) -> None:
    observe.register_stats_source("jobs", dict, labels={"x": "1"}, registry=registry)
    with pytest.raises(ValueError, match="already registered"):
        observe.register_stats_source("jobs", dict, labels={"x": "1"}, registry=registry)
    with pytest.raises(ValueError, match="label names"):
        observe.register_stats_source("jobs", dict, labels={"y": "1"}, registry=registry)
    with pytest.raises(ValueError, match="counters"):
        observe.register_stats_source(
            "jobs", dict, labels={"x": "2"}, counters=("n",), registry=registry
        )


def test_unregistering_removes_the_source(registry: CollectorRegistry) -> None:
    unregister = observe.register_stats_source("jobs", lambda: {"n": 1}, registry=registry)
    assert value(registry, "trio_micro_jobs_n") == 1
    unregister()
    unregister()  # a second call does nothing
    assert value(registry, "trio_micro_jobs_n") is None
    observe.register_stats_source("jobs", lambda: {"n": 2}, registry=registry)
    assert value(registry, "trio_micro_jobs_n") == 2


def test_a_bound_method_source_does_not_keep_its_object_alive(
    registry: CollectorRegistry,
) -> None:
    cache = Cache()
    observe.register_stats_source("user_cache", cache.statistics, registry=registry)
    assert value(registry, "trio_micro_user_cache_size") == 10
    del cache
    gc.collect()
    assert value(registry, "trio_micro_user_cache_size") is None
    # Its name is free again.
    observe.register_stats_source("user_cache", Cache().statistics, registry=registry)


def test_a_failing_source_is_logged_and_left_out(registry: CollectorRegistry) -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("boom")

    observe.register_stats_source("broken", broken, registry=registry)
    observe.register_stats_source("wrong", lambda: 42, registry=registry)
    observe.register_stats_source("fine", lambda: {"n": 1}, registry=registry)
    with capture_logs() as logs:
        found = families(registry)
    assert "trio_micro_fine_n" in found
    failed = sorted(
        (entry["source"], entry["error"])
        for entry in logs
        if entry["event"] == "observe.metrics.source_failed"
    )
    assert failed == [
        ("broken", "RuntimeError('boom')"),
        (
            "wrong",
            "TypeError('a stats source must return a mapping or a dataclass instance, got 42')",
        ),
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "bad-name"}, ValueError, "metric name"),
        ({"name": 3}, TypeError, "metric name"),
        ({"source": 3}, TypeError, "source must be a callable"),
        ({"labels": ["a"]}, TypeError, "labels must be a mapping"),
        ({"labels": {"a": 1}}, TypeError, "labels must map str to str"),
        ({"labels": {"__a": "1"}}, ValueError, "label names"),
        ({"labels": {"a b": "1"}}, ValueError, "label names"),
        ({"counters": "hits"}, TypeError, "counters must be"),
        ({"counters": [1]}, TypeError, "counters must be"),
        ({"registry": "default"}, TypeError, "CollectorRegistry"),
    ],
)
def test_register_stats_source_checks_its_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments: dict[str, Any] = {
        "name": "jobs",
        "source": dict,
        "registry": CollectorRegistry(),
        **kwargs,
    }
    with pytest.raises(error, match=match):
        observe.register_stats_source(**arguments)


# --------------------------------------------------------------------------- task monitor


async def test_task_monitor_counters_become_metrics(registry: CollectorRegistry) -> None:
    ticks = iter(range(0, 10**6, 1))  # every step "takes" 1 s of this clock

    with capture_logs():
        async with observe.open_task_monitor(clock=lambda: float(next(ticks))) as monitor:
            observe.register_task_monitor(monitor, registry=registry)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 0)
            await trio.lowlevel.checkpoint()
            stats = monitor.statistics()
            assert value(registry, "trio_micro_task_monitor_live_tasks") == stats.live_tasks
            spawned = value(registry, "trio_micro_task_monitor_spawned_total")
            blocked = value(registry, "trio_micro_task_monitor_blocked_steps_total")
    assert spawned == stats.spawned >= 1
    assert blocked == stats.blocked_steps >= 1


def test_register_task_monitor_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="TaskMonitor"):
        observe.register_task_monitor(object())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- process


def test_process_metrics_cover_memory_and_gc(registry: CollectorRegistry) -> None:
    observe.register_process_metrics(registry)
    observe.register_process_metrics(registry)  # idempotent
    text = generate_latest(registry).decode()
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))  # nothing exported twice
    assert {
        "process_resident_memory_bytes",
        "python_gc_collections",
        "python_info",
        "trio_micro_process_peak_resident_memory_bytes",
        "trio_micro_gc_threshold",
        "trio_micro_gc_pending",
        "trio_micro_gc_frozen_objects",
    } <= set(names)
    assert value(registry, "trio_micro_gc_threshold", generation="0") == gc.get_threshold()[0]
    assert value(registry, "trio_micro_tracemalloc_traced_bytes") is None  # not tracing


@pytest.mark.usefixtures("tracing")
def test_process_metrics_include_tracemalloc_while_tracing(registry: CollectorRegistry) -> None:
    observe.register_process_metrics(registry)
    traced = value(registry, "trio_micro_tracemalloc_traced_bytes")
    assert traced is not None
    assert traced > 0


def test_process_metrics_on_the_default_registry_add_nothing_twice() -> None:
    observe.register_process_metrics()
    text = generate_latest().decode()
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
    assert "trio_micro_process_peak_resident_memory_bytes" in names


# --------------------------------------------------------------------------- units


def test_units_put_the_base_unit_in_the_name(registry: CollectorRegistry) -> None:
    observe.register_stats_source(
        "worker",
        lambda: {"busy": 1.5, "idle_seconds": 2.0, "heap": 4096},
        counters=("busy",),
        units={"busy": "seconds", "idle_seconds": "seconds", "heap": "bytes"},
        registry=registry,
    )
    assert value(registry, "trio_micro_worker_busy_seconds_total") == 1.5
    assert value(registry, "trio_micro_worker_idle_seconds") == 2.0  # not ..._seconds_seconds
    assert value(registry, "trio_micro_worker_heap_bytes") == 4096


def test_sources_sharing_a_name_must_agree_on_units(registry: CollectorRegistry) -> None:
    observe.register_stats_source(
        "w", dict, labels={"i": "1"}, units={"t": "seconds"}, registry=registry
    )
    with pytest.raises(ValueError, match="units"):
        observe.register_stats_source(
            "w", dict, labels={"i": "2"}, units={"t": "bytes"}, registry=registry
        )


def test_a_unit_must_be_a_name_part() -> None:
    with pytest.raises(ValueError, match="units"):
        observe.register_stats_source("w", dict, units={"t": "milli seconds"})


async def test_the_task_monitors_longest_step_is_in_seconds(registry: CollectorRegistry) -> None:
    async with observe.open_task_monitor() as monitor:
        observe.register_task_monitor(monitor, registry=registry)
        assert "trio_micro_task_monitor_longest_step_seconds" in families(registry)
