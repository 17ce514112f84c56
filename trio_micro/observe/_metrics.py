"""Prometheus metrics: stats sources, process memory and GC, one collector per registry.

Theory of operation
-------------------
Most of what a service wants to export already exists as a ``statistics()`` snapshot: a
server's open connections and calls in flight, a channel's endpoints, a task monitor's
counters, a cache's hits and misses. Rather than mirroring each in a Prometheus
``Gauge`` that someone must remember to update, :func:`register_stats_source` registers
the *reader* and a custom collector calls it at scrape time. Each source is a zero-argument
callable returning a mapping of numbers or a dataclass instance (a ``statistics()``
snapshot). Every numeric field becomes one metric, ``trio_micro_<name>_<field>``: a gauge,
or a counter (``..._total``) for the fields named in ``counters``; booleans count as 0/1
and tuples, lists, sets and dicts as their length (a channel's ``endpoints``); other
values (strings, ``None``) are left out. Sources that share a ``name`` (two servers in one
process) form one metric family, told apart by their ``labels``.

Sources are held weakly when they are bound methods (``server.statistics``), through
:class:`weakref.WeakMethod`: registering a server does not keep it alive, and once it is
garbage-collected its metrics disappear. Other callables are held until unregistered.

Everything lives in one collector per :class:`prometheus_client.CollectorRegistry`
(``prometheus_client.REGISTRY`` unless a registry is passed), created on first use and kept
in a weak dictionary, so registering many sources or calling
:func:`register_process_metrics` twice never raises ``Duplicated timeseries``.

A source that raises while being read is logged (``observe.metrics.source_failed``) and
left out of that scrape; it never fails the scrape.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from types import MethodType
from typing import Final, final

import structlog
from prometheus_client import (
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .._validate import check_callable, check_str_mapping
from ._memory import memory_snapshot
from ._tasks import TaskMonitor

__all__ = [
    "METRIC_PREFIX",
    "register_process_metrics",
    "register_stats_source",
    "register_task_monitor",
    "resolve_registry",
]

_log = structlog.get_logger("trio_micro.observe")

#: Prefix of every metric trio_micro defines (``trio_micro_rpc_server_calls_total``, ...).
METRIC_PREFIX: Final = "trio_micro_"

_NAME_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_INVALID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_]")
_TASK_MONITOR_COUNTERS: Final = (
    "spawned",
    "exited",
    "leak_warnings",
    "long_lived_warnings",
    "blocked_steps",
)

StatsSource = Callable[[], object]
_LabelKey = tuple[tuple[str, str], ...]


def resolve_registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    """Return ``registry``, or ``prometheus_client.REGISTRY`` for ``None``.

    How every ``registry=`` argument of trio_micro is read; for code that defines metrics
    of its own next to trio_micro's (``rpc.MetricsInterceptor`` does). Not a checkpoint.

    Raises:
        TypeError: ``registry`` is neither ``None`` nor a ``CollectorRegistry``.
    """
    if registry is None:
        return REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a prometheus_client.CollectorRegistry, got {registry!r}")
    return registry


@final
class _Source:
    """One registered source: a name, its labels, which fields are counters, the reader."""

    __slots__ = ("counters", "labels", "name", "read_fn", "units")

    def __init__(
        self,
        name: str,
        labels: _LabelKey,
        counters: frozenset[str],
        read_fn: Callable[[], StatsSource | None],
        units: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.labels = labels
        self.counters = counters
        self.read_fn = read_fn
        self.units: Mapping[str, str] = dict(units or {})

    def metric_name(self, field: str) -> str:
        """``trio_micro_<name>_<field>[_<unit>]`` (a counter's ``_total`` comes after)."""
        unit = self.units.get(field)
        base = f"{METRIC_PREFIX}{self.name}_{_metric_key(field)}"
        return f"{base}_{unit}" if unit and not base.endswith(f"_{unit}") else base

    def alive(self) -> bool:
        return self.read_fn() is not None

    def read(self) -> dict[str, object] | None:
        """The source's current fields, or ``None`` if it is gone or failed (logged)."""
        fn = self.read_fn()
        if fn is None:
            return None
        try:
            return stats_as_dict(fn())
        except Exception as exc:
            _log.warning(
                "observe.metrics.source_failed",
                source=self.name,
                labels=dict(self.labels),
                error=repr(exc),
            )
            return None


def stats_as_dict(value: object) -> dict[str, object]:
    """Return a stats reading as a dict: a mapping is copied, a dataclass's fields listed.

    Raises:
        TypeError: ``value`` is neither a mapping nor a dataclass instance.
    """
    if isinstance(value, Mapping):
        return {str(key): item for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    raise TypeError(f"a stats source must return a mapping or a dataclass instance, got {value!r}")


def _number(value: object) -> float | None:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, tuple | list | set | frozenset | dict):
        return float(len(value))
    return None


def _metric_key(key: str) -> str:
    key = _INVALID_CHARS.sub("_", key)
    return key if _NAME_RE.fullmatch(key) else f"_{key}"


@final
class _Hub:
    """The collector of one registry: stats sources, and whether process metrics are on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[tuple[str, _LabelKey], _Source] = {}
        self.process_metrics = False

    def describe(self) -> list[Metric]:
        # Sources come and go; describing nothing skips the registry's clash check, which
        # would otherwise call collect() (and every source) at registration.
        return []

    def add(self, source: _Source) -> Callable[[], None]:
        key = (source.name, source.labels)
        with self._lock:
            for other in list(self._sources.values()):
                if not other.alive():
                    del self._sources[(other.name, other.labels)]
                    continue
                if other.name != source.name:
                    continue
                if (other.name, other.labels) == key:
                    raise ValueError(
                        f"a stats source {source.name!r} with labels {dict(source.labels)!r} "
                        "is already registered"
                    )
                other_names = [label for label, _ in other.labels]
                if other_names != [label for label, _ in source.labels]:
                    raise ValueError(
                        f"stats sources named {source.name!r} must all have the label names "
                        f"{other_names!r}, got {dict(source.labels)!r}"
                    )
                if other.counters != source.counters:
                    raise ValueError(
                        f"stats sources named {source.name!r} must all have the counters "
                        f"{sorted(other.counters)!r}, got {sorted(source.counters)!r}"
                    )
                if other.units != source.units:
                    raise ValueError(
                        f"stats sources named {source.name!r} must all have the units "
                        f"{dict(other.units)!r}, got {dict(source.units)!r}"
                    )
            self._sources[key] = source

        def unregister() -> None:
            with self._lock:
                if self._sources.get(key) is source:
                    del self._sources[key]

        return unregister

    def readings(self) -> list[tuple[_Source, dict[str, object]]]:
        """Read every live source (dropping dead ones), sorted by name and labels."""
        with self._lock:
            sources = sorted(self._sources.items())
        out = []
        for key, source in sources:
            values = source.read()
            if values is not None:
                out.append((source, values))
            elif not source.alive():
                with self._lock:
                    if self._sources.get(key) is source:
                        del self._sources[key]
        return out

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for source, values in self.readings():
            label_names = [label for label, _ in source.labels]
            label_values = [value for _, value in source.labels]
            for key, raw in values.items():
                number = _number(raw)
                if number is None:
                    continue
                name = source.metric_name(key)
                family = families.get(name)
                if family is None:
                    doc = f"{key} of the stats source {source.name!r}"
                    family = (
                        CounterMetricFamily(name, doc, labels=label_names)
                        if key in source.counters
                        else GaugeMetricFamily(name, doc, labels=label_names)
                    )
                    families[name] = family
                family.add_metric(label_values, number)
        yield from families.values()


# Registry -> its hub. Weak keys: a test's registry and its hub go away together (the hub
# holds no reference back to the registry).
_hubs: weakref.WeakKeyDictionary[CollectorRegistry, _Hub] = weakref.WeakKeyDictionary()
_hubs_lock: Final = threading.Lock()


def hub_for(registry: CollectorRegistry | None) -> _Hub:
    """Return the registry's hub, creating and registering it on first use."""
    registry = resolve_registry(registry)
    with _hubs_lock:
        hub = _hubs.get(registry)
        if hub is None:
            hub = _Hub()
            registry.register(hub)
            _hubs[registry] = hub
        return hub


def _weak_reader(source: StatsSource) -> Callable[[], StatsSource | None]:
    if isinstance(source, MethodType):
        try:
            return weakref.WeakMethod(source)
        except TypeError:  # its object does not support weak references
            pass

    def strong() -> StatsSource:
        return source

    return strong


def register_stats_source(
    name: str,
    source: StatsSource,
    *,
    labels: Mapping[str, str] | None = None,
    counters: Collection[str] = (),
    units: Mapping[str, str] | None = None,
    registry: CollectorRegistry | None = None,
) -> Callable[[], None]:
    """Export the numbers ``source()`` returns as metrics ``trio_micro_<name>_<field>``.

    ``source`` is read at every scrape (and for ``/debug/stats``). It returns a mapping
    of field names to values or a dataclass instance such as a ``statistics()``
    snapshot. Numbers become gauges, or counters (``trio_micro_<name>_<field>_total``) for
    the fields in ``counters``; booleans are 0/1; tuples, lists, sets and dicts count as
    their length; other values are skipped. A bound method (``cache.statistics``) is held
    weakly, so its object may be garbage-collected, which unregisters it; other callables
    are held until the returned function is called. For example, the user service's cache::

        observe.register_stats_source(
            "user_cache", cache.statistics, counters=("hits", "misses", "loads")
        )
        # -> trio_micro_user_cache_hits_total, ..._misses_total, trio_micro_user_cache_size

    Several sources may share a name (one per server, say) if their ``labels`` differ and
    have the same label names and ``counters``. Not a checkpoint; thread-safe.

    Args:
        name: The metric name's middle part: letters, digits and underscores.
        source: A zero-argument callable returning a mapping or a dataclass instance. It
            runs on the thread that scrapes (the trio thread for the debug endpoint), so it
            must be quick and must not block.
        labels: Label names and values that tell apart sources sharing ``name``.
        counters: The fields that only ever grow.
        units: Field -> the base unit its value is in (``"seconds"``, ``"bytes"``), added
            to its name as Prometheus asks (``..._longest_step_seconds``) unless the field's
            name already ends with it. Give values in base units (seconds, not ms).
        registry: Where to export; default ``prometheus_client.REGISTRY``.

    Returns:
        A function that unregisters the source (calling it again does nothing).

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: ``name`` or a label name is not a valid metric name, or a source with
            this name and these labels is already registered, or sources under this name
            disagree on label names or counters.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise (TypeError if not isinstance(name, str) else ValueError)(
            f"name must be a metric name (letters, digits, '_'), got {name!r}"
        )
    check_callable("source", source, expected="a callable returning a mapping or dataclass")
    label_key = _check_labels(labels)
    if isinstance(counters, str) or not all(isinstance(c, str) for c in counters):
        raise TypeError(f"counters must be a collection of field names, got {counters!r}")
    hub = hub_for(registry)
    units = check_str_mapping("units", units)
    for field, unit in units.items():
        if not _NAME_RE.fullmatch(unit):
            raise ValueError(f"units must be metric name parts, got {unit!r} for {field!r}")
    return hub.add(_Source(name, label_key, frozenset(counters), _weak_reader(source), units))


def _check_labels(labels: Mapping[str, str] | None) -> _LabelKey:
    checked = check_str_mapping("labels", labels)
    for key in checked:
        if not _NAME_RE.fullmatch(key) or key.startswith("__"):
            raise ValueError(f"label names must be valid and not start with '__', got {key!r}")
    return tuple(sorted(checked.items()))


def register_task_monitor(
    monitor: TaskMonitor, *, registry: CollectorRegistry | None = None
) -> Callable[[], None]:
    """Export a :class:`TaskMonitor`'s counters as ``trio_micro_task_monitor_*`` metrics.

    Gauges: ``live_tasks``, ``high_water``, ``longest_step_seconds``; counters
    (``_total``): ``spawned``, ``exited``, ``leak_warnings``, ``long_lived_warnings``,
    ``blocked_steps`` (the blocked-loop events). The monitor is held weakly. Not a
    checkpoint.

    Returns:
        A function that unregisters the monitor.

    Raises:
        TypeError: ``monitor`` is not a :class:`TaskMonitor`.
        ValueError: A task monitor is already registered with this registry.
    """
    if not isinstance(monitor, TaskMonitor):
        raise TypeError(f"monitor must be a TaskMonitor, got {monitor!r}")
    return register_stats_source(
        "task_monitor",
        monitor.statistics,
        counters=_TASK_MONITOR_COUNTERS,
        units={"longest_step": "seconds"},
        registry=registry,
    )


@final
class _MemoryCollector:
    """What :func:`memory_snapshot` knows beyond prometheus-client's process collector."""

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        snap = memory_snapshot()
        peak = GaugeMetricFamily(
            f"{METRIC_PREFIX}process_peak_resident_memory_bytes",
            "The largest resident set size of the process so far.",
        )
        if snap.peak_rss_bytes is not None:
            peak.add_metric([], snap.peak_rss_bytes)
        yield peak
        traced = GaugeMetricFamily(
            f"{METRIC_PREFIX}tracemalloc_traced_bytes",
            "Memory in blocks traced by tracemalloc (absent when it is not tracing).",
        )
        traced_peak = GaugeMetricFamily(
            f"{METRIC_PREFIX}tracemalloc_peak_traced_bytes",
            "Peak of traced memory since tracing started (absent when it is not tracing).",
        )
        if snap.tracemalloc_current_bytes is not None:
            traced.add_metric([], snap.tracemalloc_current_bytes)
        if snap.tracemalloc_peak_bytes is not None:
            traced_peak.add_metric([], snap.tracemalloc_peak_bytes)
        yield traced
        yield traced_peak
        threshold = GaugeMetricFamily(
            f"{METRIC_PREFIX}gc_threshold",
            "The cyclic collector's threshold per generation (see observe.tune_gc).",
            labels=["generation"],
        )
        for generation, value in enumerate(snap.gc_threshold):
            threshold.add_metric([str(generation)], value)
        yield threshold
        pending = GaugeMetricFamily(
            f"{METRIC_PREFIX}gc_pending",
            "Allocations minus deallocations counted towards each generation's next "
            "collection (gc.get_count).",
            labels=["generation"],
        )
        for generation, value in enumerate(snap.gc_counts):
            pending.add_metric([str(generation)], value)
        yield pending
        yield GaugeMetricFamily(
            f"{METRIC_PREFIX}gc_frozen_objects",
            "Objects in the collector's permanent generation (gc.freeze).",
            value=snap.gc_frozen,
        )


def register_process_metrics(registry: CollectorRegistry | None = None) -> None:
    """Export the process's RSS, CPU, file descriptors, GC counters and memory details.

    Adds prometheus-client's :class:`~prometheus_client.ProcessCollector` (``process_*``:
    resident and virtual memory, CPU seconds, open fds, start time),
    :class:`~prometheus_client.GCCollector` (``python_gc_*``) and
    :class:`~prometheus_client.PlatformCollector` (``python_info``) unless the registry has
    them already (``prometheus_client.REGISTRY`` does), plus
    ``trio_micro_process_peak_resident_memory_bytes``, ``trio_micro_tracemalloc_*`` (while
    tracemalloc traces), ``trio_micro_gc_threshold``, ``trio_micro_gc_pending`` and
    ``trio_micro_gc_frozen_objects`` from :func:`memory_snapshot`. Idempotent; not a
    checkpoint. :func:`serve_debug` calls it for its registry.

    Args:
        registry: Where to export; default ``prometheus_client.REGISTRY``.
    """
    registry = resolve_registry(registry)
    hub = hub_for(registry)
    with hub._lock:
        if hub.process_metrics:
            return
        hub.process_metrics = True
    # A registry with auto_describe (REGISTRY) refuses duplicates, one without it would
    # export them twice: look at what it exports instead of relying on either.
    present = {metric.name for metric in registry.collect()}
    if "process_cpu_seconds" not in present and "process_resident_memory_bytes" not in present:
        ProcessCollector(registry=registry)
    if "python_gc_objects_collected" not in present:
        GCCollector(registry=registry)
    if "python_info" not in present:
        PlatformCollector(registry=registry)
    registry.register(_MemoryCollector())


def uptime_seconds(now: float) -> float | None:
    """Seconds since the process started, or ``None`` if unknown: from prometheus-client's
    ``process_start_time_seconds`` (Linux ``/proc``)."""
    for metric in PROCESS_COLLECTOR.collect():
        if metric.name == "process_start_time_seconds":
            return max(0.0, now - metric.samples[0].value)
    return None
