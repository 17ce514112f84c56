"""The per-connection limits of issue #15 on /metrics: the bytes the byte budgets hold
(gauges) and what each limit refused (counters), read back with Prometheus's own parser."""

from __future__ import annotations

import msgspec
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trio_micro import rpc

from .test_bad_input import request, scenario
from .test_hostile_memory import _SLEEP, RawPeer, _stream_request

_PREFIX = "trio_micro_rpc_server_"


def scrape(registry: CollectorRegistry) -> dict[str, tuple[str, float]]:
    """Sample name -> (its family's type, value), as a Prometheus server would read it."""
    text = generate_latest(registry).decode()
    return {
        sample.name: (family.type, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(_PREFIX)
    }


def exported(server: rpc.Server) -> CollectorRegistry:
    registry = CollectorRegistry()
    rpc.register_server_metrics(server, registry=registry)
    return registry


async def test_connection_budget_refusals_and_held_request_bytes_are_exported() -> None:
    async with scenario(max_buffered_bytes=4 << 20) as s:
        registry = exported(s.server)
        peer = await RawPeer.connect(s, credit=0)
        pad = msgspec.msgpack.encode({"pad": b"x" * (1 << 20)})
        await peer.stream.send_all(b"".join(request(sid, _SLEEP, pad) for sid in range(1, 11)))
        await peer.errors(7)
        metrics = scrape(registry)
        assert metrics[f"{_PREFIX}refused_connection_budget_total"] == ("counter", 7)
        assert metrics[f"{_PREFIX}refused_server_budget_total"] == ("counter", 0)
        kind, held = metrics[f"{_PREFIX}request_bytes"]
        assert kind == "gauge"
        assert 3 << 20 <= held <= 4 << 20
        assert metrics[f"{_PREFIX}queued_bytes"][0] == "gauge"
        await peer.stream.aclose()
        while s.server.statistics().connections > 1:  # noqa: ASYNC110 - the raw one ends
            await trio.sleep(0.001)
        # Counted for the server's life, not the connection's.
        assert scrape(registry)[f"{_PREFIX}refused_connection_budget_total"] == ("counter", 7)


async def test_streams_refused_at_max_stalled_streams_are_counted() -> None:
    async with scenario(max_stalled_streams=3) as s:
        registry = exported(s.server)
        peer = await RawPeer.connect(s, credit=0)
        await peer.stream.send_all(b"".join(_stream_request(sid) for sid in range(1, 11)))
        await peer.errors(7)
        assert scrape(registry)[f"{_PREFIX}refused_stalled_streams_total"] == ("counter", 7)
        await peer.stream.aclose()


async def test_streams_failed_at_the_stall_timeout_are_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario(pause=0.1, time_limit=100, stall_timeout=20) as s:
        registry = exported(s.server)
        peer = await RawPeer.connect(s, credit=0)
        await peer.stream.send_all(_stream_request(1))
        await peer.errors(1)
        metrics = scrape(registry)
        assert metrics[f"{_PREFIX}stall_timeouts_total"] == ("counter", 1)
        assert metrics[f"{_PREFIX}refused_stalled_streams_total"] == ("counter", 0)
        await peer.stream.aclose()
