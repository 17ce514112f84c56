"""The user service's observability: cache metrics, and the replica on its query records."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import structlog
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from examples.user_service import UserService
from examples.user_service.database import UserDatabase
from examples.user_service.service import DB_QUERY, GetUserRequest
from trio_micro import analysis, observe, rpc

CACHE_FAMILIES = {
    "trio_micro_user_cache_hits": "counter",
    "trio_micro_user_cache_misses": "counter",
    "trio_micro_user_cache_loads": "counter",
    "trio_micro_user_cache_evictions": "counter",
    "trio_micro_user_cache_expirations": "counter",
    "trio_micro_user_cache_size": "gauge",
    "trio_micro_user_cache_max_size": "gauge",
}


@pytest.fixture
async def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "users.db"
    async with UserDatabase(path) as db:
        await db.seed(20)
    return path


def cache_metrics(registry: CollectorRegistry) -> dict[str, tuple[str, float]]:
    """``family name -> (type, value)`` of the cache's families, parsed from the text format."""
    text = generate_latest(registry).decode()
    return {
        family.name: (family.type, sample.value)
        for family in text_string_to_metric_families(text)
        if family.name in CACHE_FAMILIES
        for sample in family.samples
        if sample.name in (family.name, f"{family.name}_total")
    }


@pytest.fixture
def json_log() -> Iterator[io.BytesIO]:
    """JSON lines from ``configure_logging``, as the service writes them under ``serve``."""
    out = io.BytesIO()
    observe.configure_logging(format="json", file=out)
    yield out
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
async def served(db_path: Path) -> AsyncIterator[tuple[UserService, str]]:
    """The user service behind a server with the access log, and the server's address."""
    async with (
        UserService.open(db=db_path, metrics_registry=CollectorRegistry()) as service,
        rpc.open_server(
            [service], host="127.0.0.1", port=0, interceptors=[rpc.AccessLogInterceptor()]
        ) as server,
    ):
        host, port = server.address[:2]
        yield service, f"{host}:{port}"


async def until(condition: Any) -> None:
    """Wait (bounded) for something the server does after the client has its answer."""
    with trio.fail_after(5):
        while not condition():
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.001)


# --------------------------------------------------------------------------- cache metrics


async def test_open_exports_cache_hits_misses_loads_and_size(db_path: Path) -> None:
    registry = CollectorRegistry()
    async with UserService.open(db=db_path, cache_size="5", metrics_registry=registry) as svc:
        assert cache_metrics(registry)["trio_micro_user_cache_misses"] == ("counter", 0.0)
        for user_id in (1, 1, 2, 1, 2, 3):  # misses: 1, 2, 3; hits: 1, 1, 2
            await svc.get_user(GetUserRequest(user_id=user_id))
        with pytest.raises(rpc.RpcError):
            await svc.get_user(GetUserRequest(user_id=99))  # a miss, cached as "no user"
        with pytest.raises(rpc.RpcError):
            await svc.get_user(GetUserRequest(user_id=99))  # a hit
        assert cache_metrics(registry) == {
            "trio_micro_user_cache_hits": ("counter", 4.0),
            "trio_micro_user_cache_misses": ("counter", 4.0),
            "trio_micro_user_cache_loads": ("counter", 4.0),
            "trio_micro_user_cache_evictions": ("counter", 0.0),
            "trio_micro_user_cache_expirations": ("counter", 0.0),
            "trio_micro_user_cache_size": ("gauge", 4.0),
            "trio_micro_user_cache_max_size": ("gauge", 5.0),
        }


async def test_coalesced_misses_count_as_misses_but_one_load(db_path: Path) -> None:
    registry = CollectorRegistry()
    async with UserService.open(db=db_path, metrics_registry=registry) as svc:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(svc.get_user, GetUserRequest(user_id=7))
        metrics = cache_metrics(registry)
    assert metrics["trio_micro_user_cache_misses"] == ("counter", 10.0)
    assert metrics["trio_micro_user_cache_loads"] == ("counter", 1.0)
    assert metrics["trio_micro_user_cache_hits"] == ("counter", 0.0)


async def test_closing_the_service_unregisters_its_cache_metrics(db_path: Path) -> None:
    registry = CollectorRegistry()
    async with UserService.open(db=db_path, metrics_registry=registry) as svc:
        await svc.get_user(GetUserRequest(user_id=1))
        assert set(cache_metrics(registry)) == set(CACHE_FAMILIES)
    assert cache_metrics(registry) == {}
    # ... so the registry can take the next service.
    async with UserService.open(db=db_path, metrics_registry=registry):
        assert cache_metrics(registry)["trio_micro_user_cache_misses"] == ("counter", 0.0)


async def test_by_default_the_metrics_go_to_the_global_registry(db_path: Path) -> None:
    registry = prometheus_client.REGISTRY
    async with UserService.open(db=db_path) as svc:
        await svc.get_user(GetUserRequest(user_id=1))
        assert registry.get_sample_value("trio_micro_user_cache_misses_total") == 1
    assert registry.get_sample_value("trio_micro_user_cache_misses_total") is None


async def test_two_services_in_one_process_export_to_their_own_registries(
    db_path: Path,
) -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    async with (
        UserService.open(db=db_path, metrics_registry=one) as first,
        UserService.open(db=db_path, metrics_registry=two) as second,
    ):
        await first.get_user(GetUserRequest(user_id=1))
        await first.get_user(GetUserRequest(user_id=1))
        await second.get_user(GetUserRequest(user_id=1))
        assert cache_metrics(one)["trio_micro_user_cache_hits"] == ("counter", 1.0)
        assert cache_metrics(two)["trio_micro_user_cache_hits"] == ("counter", 0.0)
        assert cache_metrics(two)["trio_micro_user_cache_misses"] == ("counter", 1.0)


async def test_two_services_on_one_registry_is_a_clear_error(db_path: Path) -> None:
    registry = CollectorRegistry()
    async with UserService.open(db=db_path, metrics_registry=registry):
        with pytest.raises(ValueError, match=r"metrics_registry: 'user_cache' is already"):
            async with UserService.open(db=db_path, metrics_registry=registry):
                pass  # pragma: no cover
        assert set(cache_metrics(registry)) == set(CACHE_FAMILIES)  # the first one's


async def test_a_metrics_registry_that_is_not_a_registry_is_refused(db_path: Path) -> None:
    with pytest.raises(TypeError, match="metrics_registry must be a prometheus_client"):
        async with UserService.open(db=db_path, metrics_registry="default"):  # type: ignore[arg-type]
            pass  # pragma: no cover


# --------------------------------------------------------------------------- query records


async def test_query_record_carries_the_server_of_the_call(
    served: tuple[UserService, str],
) -> None:
    _, address = served
    with capture_logs() as logs:
        async with rpc.open_channel(address) as channel:
            users = channel.stub(UserService)
            await users.get_user(GetUserRequest(user_id=4))
            await users.get_user(GetUserRequest(user_id=4))  # a hit: no query
        await until(lambda: len([r for r in logs if r["event"] == "rpc.call.complete"]) == 2)
    [query] = [r for r in logs if r["event"] == DB_QUERY]
    assert (query["user_id"], query["server"]) == (4, address)
    assert {r["server"] for r in logs if r["event"] == "rpc.call.complete"} == {address}


async def test_query_record_has_no_server_outside_a_call(db_path: Path) -> None:
    async with UserService.open(db=db_path, metrics_registry=CollectorRegistry()) as svc:
        with capture_logs() as logs:
            await svc.get_user(GetUserRequest(user_id=4))  # called directly, not over RPC
    [query] = [r for r in logs if r["event"] == DB_QUERY]
    assert query["user_id"] == 4
    assert "server" not in query


async def test_log_summary_counts_the_queries_under_the_replica(
    json_log: io.BytesIO, served: tuple[UserService, str]
) -> None:
    _, address = served
    async with rpc.open_channel(address) as channel:
        users = channel.stub(UserService)
        for user_id in (1, 2, 1, 3, 2):  # 3 misses (queries), 2 hits
            await users.get_user(GetUserRequest(user_id=user_id))
    await until(lambda: json_log.getvalue().count(b'"rpc.call.complete"') == 5)

    builder = analysis.SummaryBuilder(count_events=(DB_QUERY,))
    builder.add_json_lines(json_log.getvalue())
    summary = builder.build()
    assert summary.event_counts == {DB_QUERY: {address: 3}}
    [get_user] = [m for m in summary.methods() if m.method == "get_user"]
    assert [(r.server, r.calls) for r in get_user.replicas] == [(address, 5)]
