"""The debug HTTP endpoint, fetched over real HTTP (127.0.0.1, port 0) with httpx."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import hypercorn.trio
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from structlog.typing import EventDict

from trio_micro import observe, rpc
from trio_micro.observe._debug import HTTP_LOGGER
from trio_micro.observe._tasks import _walk

from ..rpc.services import Empty, SimpleRequest, TestService

SERVICE = "grpc.testing.TestService"


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[EventDict]]:
    # structlog's default configuration prints to stdout; tests keep it quiet.
    with capture_logs() as captured:
        yield captured


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def debug(registry: CollectorRegistry) -> AsyncIterator[observe.DebugServer]:
    async with observe.open_debug_server(registry=registry) as server:
        yield server


@pytest.fixture
async def client(debug: observe.DebugServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=debug.url) as client:
        yield client


def debug_tasks() -> list[str]:
    """Names of the tasks of any debug server still running."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    return [
        task.name
        for task, _depth in _walk(root)
        if task.name.startswith(("hypercorn", "trio_micro.observe._debug", "trio.serve"))
    ]


async def refuses_connections(address: tuple[str, int]) -> bool:
    try:
        stream = await trio.open_tcp_stream(*address)
    except OSError:
        return True
    await stream.aclose()
    return False


# --------------------------------------------------------------------------- starting, stopping


async def test_port_zero_reports_the_port_it_bound(debug: observe.DebugServer) -> None:
    host, port = debug.address
    assert host == "127.0.0.1"
    assert port > 0
    assert debug.url == f"http://127.0.0.1:{port}/"
    assert repr(debug) == f"<observe.DebugServer http://127.0.0.1:{port}/>"
    assert not await refuses_connections(debug.address)


async def test_serve_debug_starts_with_nursery_start_and_stops_when_cancelled(
    registry: CollectorRegistry,
) -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(functools.partial(observe.serve_debug, registry=registry))
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://{address[0]}:{address[1]}/debug/tasks")
        assert response.status_code == 200
        assert debug_tasks()
        nursery.cancel_scope.cancel()
    assert debug_tasks() == []
    assert await refuses_connections(address)


async def test_leaving_the_context_closes_open_connections_and_leaves_no_task(
    registry: CollectorRegistry,
) -> None:
    with trio.fail_after(5):
        async with httpx.AsyncClient() as client:
            async with observe.open_debug_server(registry=registry) as debug:
                # A kept-alive connection is open while the server shuts down.
                assert (await client.get(debug.url)).status_code == 200
            assert debug_tasks() == []
            assert await refuses_connections(debug.address)
            with pytest.raises(httpx.TransportError):
                await client.get(debug.url)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc")
async def test_cancelling_before_it_listens_leaks_no_socket(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = open_fds()
    with trio.CancelScope() as scope:
        scope.cancel()
        async with observe.open_debug_server(registry=registry):
            raise AssertionError("unreachable")  # pragma: no cover

    # Cancelled after binding, before hypercorn took the socket over.
    async def never_starts(*args: object, **kwargs: object) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(hypercorn.trio, "serve", never_starts)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(observe.serve_debug, registry=registry))
        await trio.testing.wait_all_tasks_blocked()
        assert open_fds() == before + 1  # the bound socket
        nursery.cancel_scope.cancel()
    assert open_fds() == before
    assert debug_tasks() == []


async def test_a_taken_port_raises_a_plain_oserror(debug: observe.DebugServer) -> None:
    with pytest.raises(OSError, match="in use"):
        async with observe.open_debug_server(port=debug.address[1]):
            raise AssertionError("unreachable")  # pragma: no cover


async def test_a_non_loopback_host_needs_allow_remote() -> None:
    with pytest.raises(ValueError, match="allow_remote=True"):
        async with observe.open_debug_server(host="0.0.0.0"):
            raise AssertionError("unreachable")  # pragma: no cover


async def test_localhost_counts_as_loopback(registry: CollectorRegistry) -> None:
    async with observe.open_debug_server(host="localhost", registry=registry) as debug:
        assert debug.address[1] > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"port": -1}, ValueError, "port"),
        ({"port": 65536}, ValueError, "port"),
        ({"port": "80"}, TypeError, "port"),
        ({"host": None}, TypeError, "host"),
        ({"allow_remote": "yes"}, TypeError, "allow_remote"),
        ({"registry": {}}, TypeError, "CollectorRegistry"),
    ],
)
async def test_serve_debug_checks_its_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        async with observe.open_debug_server(**kwargs):
            raise AssertionError("unreachable")  # pragma: no cover


async def test_hypercorn_logs_through_stdlib_logging_and_prints_nothing(
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    logs: list[EventDict],
    registry: CollectorRegistry,
) -> None:
    caplog.set_level(logging.INFO, logger=HTTP_LOGGER)
    async with (
        observe.open_debug_server(registry=registry) as debug,
        httpx.AsyncClient() as client,
    ):
        await client.get(debug.url + "metrics")
    assert any(
        record.name == HTTP_LOGGER and "Running on" in record.getMessage()
        for record in caplog.records
    )
    assert [entry["url"] for entry in logs if entry["event"] == "observe.debug.started"] == [
        debug.url
    ]
    assert capsys.readouterr() == ("", "")


# --------------------------------------------------------------------------- pages


async def test_index_links_every_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for page in ("/metrics", "/debug/tasks", "/debug/memory", "/debug/stats"):
        assert f'href="{page}"' in response.text
        assert (await client.get(page)).status_code == 200


async def test_metrics_page_counts_real_rpc_calls(
    registry: CollectorRegistry, client: httpx.AsyncClient
) -> None:
    interceptors = [rpc.MetricsInterceptor(registry=registry)]
    async with rpc.open_server(
        [TestService()], host="127.0.0.1", interceptors=interceptors
    ) as server:
        rpc.register_server_metrics(server, registry=registry)
        host, port = server.address
        async with rpc.open_channel(f"{host}:{port}") as channel:
            stub = channel.stub(TestService)
            for _ in range(5):
                await stub.empty_call(Empty())
            with pytest.raises(rpc.RpcError):
                await stub.unary_call(SimpleRequest(status_code=rpc.Status.PERMISSION_DENIED))
            # The server counts after the client has its answer: scrape until it has.
            with trio.fail_after(5):
                while True:
                    response = await client.get("/metrics")
                    found = {
                        family.name: family
                        for family in text_string_to_metric_families(response.text)
                    }
                    if "PERMISSION_DENIED" in response.text:
                        break
                    await trio.sleep(0.001)

    assert response.headers["content-type"].startswith("text/plain")
    calls = {
        (s.labels["service"], s.labels["method"], s.labels["code"]): s.value
        for s in found["trio_micro_rpc_server_calls"].samples
        if s.name == "trio_micro_rpc_server_calls_total"
    }
    assert calls == {
        (SERVICE, "empty_call", "OK"): 5,
        (SERVICE, "unary_call", "PERMISSION_DENIED"): 1,
    }
    histogram = found["trio_micro_rpc_server_call_duration_seconds"]
    assert histogram.type == "histogram"
    counts = {s.labels["method"]: s.value for s in histogram.samples if s.name.endswith("_count")}
    assert counts == {"empty_call": 5, "unary_call": 1}
    [connections] = found["trio_micro_rpc_server_connections"].samples
    assert connections.labels == {"server": f"{host}:{port}"}
    assert connections.value == 1
    # serve_debug adds the process's metrics to the registry it serves.
    assert "process_resident_memory_bytes" in found
    assert "python_gc_collections" in found


async def test_metrics_page_speaks_openmetrics_when_asked(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def known_sleeper() -> None:
    await trio.sleep_forever()


async def test_tasks_page_shows_each_task_and_where_it_waits(
    client: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    nursery.start_soon(known_sleeper, name="test.known_sleeper")
    await trio.testing.wait_all_tasks_blocked()
    response = await client.get("/debug/tasks")
    assert response.headers["content-type"].startswith("text/plain")
    [line] = [line for line in response.text.splitlines() if "test.known_sleeper" in line]
    assert "test.known_sleeper: known_sleeper at tests/observe/test_debug.py:" in line
    assert line.endswith("awaiting trio._timeouts.sleep_forever")
    assert "hypercorn" in response.text  # the server's own tasks are in the tree too


async def test_memory_page_shows_rss_and_gc(client: httpx.AsyncClient) -> None:
    response = await client.get("/debug/memory")
    assert response.status_code == 200
    text = response.text
    assert text.startswith("rss: ")
    assert "gc thresholds: " in text
    assert "gc collections: " in text
    assert "tracemalloc: not tracing" in text


@pytest.mark.usefixtures("tracing")
async def test_memory_page_lists_top_allocations_while_tracing(
    client: httpx.AsyncClient,
) -> None:
    keep = [bytearray(1000) for _ in range(100)]
    response = await client.get("/debug/memory", params={"top": "3"})
    assert "MiB traced" in response.text
    assert "top 3 allocation sites:" in response.text
    sites = response.text.split("top 3 allocation sites:\n")[1].splitlines()
    assert len(sites) == 3
    assert all(" bytes " in site and " blocks " in site for site in sites)
    assert len(keep) == 100


@pytest.mark.parametrize("top", ["x", "-1", "1001"])
async def test_memory_page_refuses_a_bad_top(client: httpx.AsyncClient, top: str) -> None:
    response = await client.get("/debug/memory", params={"top": top})
    assert response.status_code == 400
    assert "top must be an integer in 0..1000" in response.text


async def test_stats_page_is_json_with_process_tasks_and_sources(
    registry: CollectorRegistry, client: httpx.AsyncClient
) -> None:
    cache_stats = {"hits": 4, "misses": 1}
    observe.register_stats_source(
        "user_cache", lambda: cache_stats, counters=("hits", "misses"), registry=registry
    )
    async with rpc.open_server([TestService()], host="127.0.0.1") as server:
        rpc.register_server_metrics(server, registry=registry)
        response = await client.get("/debug/stats")
    assert response.headers["content-type"] == "application/json"
    stats = response.json()
    assert stats["uptime_s"] >= 0
    assert stats["rss_bytes"] > 0
    assert stats["pid"] > 0
    assert stats["tasks"]["live"] > 1
    assert set(stats["gc"]) == {"collections", "collected", "uncollectable", "frozen"}
    assert stats["sources"]["user_cache"] == [{"labels": {}, "stats": cache_stats}]
    [entry] = stats["sources"]["rpc_server"]
    host, port = server.address
    assert entry["labels"] == {"server": f"{host}:{port}"}
    assert entry["stats"] == {
        "connections": 0,
        "active_calls": 0,
        "queued_bytes": 0,
        "shutting_down": False,
        "refused_calls": 0,
        "health_watches": 0,
        "request_bytes": 0,
        "refused_connection_budget": 0,
        "refused_server_budget": 0,
        "refused_stalled_streams": 0,
        "stall_timeouts": 0,
    }


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("path", ["/nope", "/debug", "/metrics/", "/debug/tasks/x"])
async def test_unknown_paths_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.text.startswith(f"not found: {path}")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_methods_other_than_get_are_405(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/metrics")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_head_has_the_headers_of_get_and_no_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/debug/stats")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) > 0
    assert response.content == b""


async def test_a_page_that_fails_answers_500_and_logs(
    registry: CollectorRegistry,
    client: httpx.AsyncClient,
    logs: list[EventDict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(root: object = None) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr("trio_micro.observe._debug.format_task_tree", broken)
    response = await client.get("/debug/tasks")
    assert response.status_code == 500
    assert response.text == "internal error: RuntimeError\n"
    assert [entry["path"] for entry in logs if entry["event"] == "observe.debug.page_failed"] == [
        "/debug/tasks"
    ]


async def test_a_body_error_comes_out_of_the_debug_server_unwrapped() -> None:
    with pytest.raises(KeyError, match="body"):
        async with observe.open_debug_server(registry=CollectorRegistry()):
            raise KeyError("body")
