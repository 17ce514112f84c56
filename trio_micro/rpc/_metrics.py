"""Prometheus metrics for RPC: the server interceptor, and server/channel statistics.

:class:`MetricsInterceptor` counts, times and gauges every call a server handles:

* ``trio_micro_rpc_server_calls_total{service, method, code}`` (counter): calls by outcome;
  ``code`` is the status name (``OK``, ``NOT_FOUND``, ...), decided exactly as
  :class:`AccessLogInterceptor` decides it.
* ``trio_micro_rpc_server_call_duration_seconds{service, method}`` (histogram): from before
  the request is decoded to after the response (or the stream's last item) is queued;
  buckets from 0.1 ms to 10 s.
* ``trio_micro_rpc_server_calls_in_flight{service, method}`` (gauge).

Only methods the server knows reach interceptors, so the label sets are bounded by the
method table, not by what clients send.

The metric objects are shared per registry: any number of interceptors (one per server in
a process, or per test) on one registry update the same metrics. :func:`register_server_metrics`
and :func:`register_channel_metrics` export ``statistics()`` snapshots through
:func:`trio_micro.observe.register_stats_source`.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Final, final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trio_micro.observe import CODE_OK, METRIC_PREFIX, register_stats_source, resolve_registry

from ._channel import Channel
from ._context import ServerCall
from ._errors import RpcError
from ._observability import _abnormal_outcome
from ._server import Server
from ._transport import Endpoint

__all__ = ["MetricsInterceptor", "register_channel_metrics", "register_server_metrics"]

#: Latency buckets in seconds: 0.1 ms to 10 s, roughly 1-2.5-5 per decade.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@final
class _RpcMetrics:
    """The three metric objects of one registry, and their children per label set."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("service", "method")
        self.calls = Counter(
            f"{METRIC_PREFIX}rpc_server_calls",
            "RPC calls handled, by outcome (status code name).",
            (*labels, "code"),
            registry=registry,
        )
        self.duration = Histogram(
            f"{METRIC_PREFIX}rpc_server_call_duration_seconds",
            "Time to handle an RPC call, from request to the response (or last item) queued.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{METRIC_PREFIX}rpc_server_calls_in_flight",
            "RPC calls being handled now.",
            labels,
            registry=registry,
        )
        # .labels() formats and looks up a key on every call; these caches make the
        # per-call cost a dict lookup. Bounded by the servers' method tables.
        self.methods: dict[tuple[str, str], tuple[Histogram, Gauge]] = {}
        self.codes: dict[tuple[str, str, str], Counter] = {}

    def method(self, service: str, method: str) -> tuple[Histogram, Gauge]:
        key = (service, method)
        children = self.methods.get(key)
        if children is None:
            children = (self.duration.labels(*key), self.in_flight.labels(*key))
            self.methods[key] = children
        return children

    def count(self, service: str, method: str, code: str) -> None:
        key = (service, method, code)
        child = self.codes.get(key)
        if child is None:
            child = self.codes[key] = self.calls.labels(*key)
        child.inc()


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, _RpcMetrics] = weakref.WeakKeyDictionary()
_metrics_lock: Final = threading.Lock()


def _metrics_for(registry: CollectorRegistry) -> _RpcMetrics:
    with _metrics_lock:
        metrics = _metrics.get(registry)
        if metrics is None:
            metrics = _metrics[registry] = _RpcMetrics(registry)
        return metrics


@final
class MetricsInterceptor:
    """A server interceptor that exports Prometheus metrics for every call.

    See the module docs for the metrics. The outcome ``code`` is the one the access log
    records: ``OK``, the ``RpcError``'s code, ``CANCELLED`` for a call the client cancelled,
    ``DEADLINE_EXCEEDED`` for one that ran out of time, ``INTERNAL`` for an unexpected
    exception. Calls the server refuses before any interceptor runs are not counted; put
    this interceptor before the ones that may refuse calls (after
    :class:`AccessLogInterceptor` is fine), so that their refusals are counted. Updating
    the metrics is synchronous, so even a cancelled call is counted.

    Creating several interceptors on one registry is fine: they share its metrics.

    Args:
        registry: The registry to export to; default ``prometheus_client.REGISTRY``.

    Raises:
        TypeError: ``registry`` is not a ``CollectorRegistry``.
        ValueError: The registry already has metrics of these names that this class did
            not create ("Duplicated timeseries").

    .. versionadded:: 0.1
    """

    __slots__ = ("_metrics",)

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self._metrics = _metrics_for(resolve_registry(registry))

    def __repr__(self) -> str:
        return "rpc.MetricsInterceptor()"

    async def intercept(self, call: ServerCall, proceed: Callable[[], Awaitable[None]]) -> None:
        """Run the call, counting it in flight, then record its duration and outcome."""
        metrics = self._metrics
        duration, in_flight = metrics.method(call.service, call.method)
        in_flight.inc()
        start = time.perf_counter()
        code = CODE_OK
        try:
            await proceed()
        except RpcError as exc:
            code = exc.code.name
            raise
        except BaseException as exc:
            code = _abnormal_outcome(call, exc)[0].name
            raise
        finally:
            duration.observe(time.perf_counter() - start)
            in_flight.dec()
            metrics.count(call.service, call.method, code)


def register_server_metrics(
    server: Server, *, registry: CollectorRegistry | None = None
) -> Callable[[], None]:
    """Export a server's :meth:`~Server.statistics` as ``trio_micro_rpc_server_*`` metrics.

    Gauges: ``connections`` (open connections), ``active_calls`` (calls in flight),
    ``queued_bytes`` (response bytes queued for sending), ``request_bytes`` (request
    payload bytes held by calls in progress, the byte budgets' charge),
    ``shutting_down`` (0/1) and ``health_watches``. Counters: ``refused_calls_total``
    (calls refused at ``max_inflight``), and what the per-connection limits refused
    (issue #15, docs/rpc.md "Limits"): ``refused_connection_budget_total``
    (``max_buffered_bytes``), ``refused_server_budget_total``
    (``max_server_buffered_bytes``), ``refused_stalled_streams_total``
    (``max_stalled_streams``) and ``stall_timeouts_total`` (``stall_timeout``). Labelled
    ``server="host:port"``. The server is held weakly. Not a checkpoint.

    Returns:
        A function that unregisters the server.

    Raises:
        TypeError: ``server`` is not a :class:`Server`.
        ValueError: A server with this address is already registered with this registry.
    """
    if not isinstance(server, Server):
        raise TypeError(f"server must be an rpc.Server, got {server!r}")
    address = str(Endpoint(*server.address))
    return register_stats_source(
        "rpc_server",
        server.statistics,
        labels={"server": address},
        counters=(
            "refused_calls",
            "refused_connection_budget",
            "refused_server_budget",
            "refused_stalled_streams",
            "stall_timeouts",
        ),
        registry=registry,
    )


def register_channel_metrics(
    channel: Channel, *, name: str | None = None, registry: CollectorRegistry | None = None
) -> Callable[[], None]:
    """Export a channel's :meth:`~Channel.statistics` as ``trio_micro_rpc_channel_*`` metrics.

    Gauges ``endpoints`` and ``ejected`` (how many), ``slots``, ``ready`` (connections),
    ``outstanding`` (calls in flight); counters ``retries_total`` and
    ``retries_throttled_total``; labelled ``channel=name``. The channel is held weakly.
    Not a checkpoint.

    Args:
        channel: The channel.
        name: The ``channel`` label; default the service name it resolves, or its
            addresses joined with commas.
        registry: Where to export; default ``prometheus_client.REGISTRY``.

    Returns:
        A function that unregisters the channel.

    Raises:
        TypeError: ``channel`` is not a :class:`Channel` or ``name`` not a str.
        ValueError: A channel with this name is already registered with this registry.
    """
    if not isinstance(channel, Channel):
        raise TypeError(f"channel must be an rpc.Channel, got {channel!r}")
    if name is None:
        name = channel._service or ",".join(map(str, channel.endpoints))
    elif not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    return register_stats_source(
        "rpc_channel",
        channel.statistics,
        labels={"channel": name},
        counters=("retries", "retries_throttled"),
        registry=registry,
    )
