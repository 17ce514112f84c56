"""One ``/metrics`` for a supervisor and its workers: scrape each, label by worker, merge.

Why scraping, not prometheus-client's multiprocess mode: that mode keeps every metric in
memory-mapped files that all processes write, which works for the client's own Counter,
Gauge, Histogram and Summary types only. trio_micro's figures come from custom collectors
that read ``statistics()`` snapshots at scrape time (:func:`observe.register_stats_source`);
those cannot be written to files, so multiprocess mode would lose them. Each worker already
serves its own ``/metrics`` on a loopback port; the supervisor fetches them all when it is
scraped (:meth:`WorkerMetricsRegistry.refresh`, the debug server's ``before_scrape``), adds a
``worker`` label to every sample, and serves the union with its own metrics
(``worker="supervisor"``), so ``sum by (...)`` over the label gives the replica's totals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, final

import httpx
import structlog
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ._supervisor import Supervisor

__all__ = ["WORKER_LABEL", "WorkerMetricsRegistry"]

_log = structlog.get_logger("trio_micro.supervise")

#: The label that tells the processes apart.
WORKER_LABEL: Final = "worker"
#: The most of one worker's /metrics that is read.
_MAX_BODY: Final = 16 * 1024 * 1024


@final
class WorkerMetricsRegistry(CollectorRegistry):
    """A registry of the supervisor's own metrics that also yields its workers' ones.

    Register the supervisor's collectors and stats sources on it as on any registry; serve it
    with ``observe.open_debug_server(registry=r, before_scrape=r.refresh)``.

    Args:
        supervisor: Whose workers to scrape: those whose ready info has a ``debug_port``.
        timeout: Seconds one scrape of one worker may take; a worker that does not answer
            in time is left out of that scrape (and logged).
    """

    def __init__(self, supervisor: Supervisor, *, timeout: float = 2.0) -> None:
        super().__init__(auto_describe=False)
        self._supervisor = supervisor
        self._timeout = timeout
        self._scraped: dict[int, list[Metric]] = {}

    async def refresh(self) -> None:
        """Fetch every ready worker's ``/metrics`` concurrently. A checkpoint.

        A worker that fails or is too slow is logged (``supervise.metrics.scrape_failed``)
        and left out until the next refresh. Cancellation leaves the last figures.
        """
        targets = {
            w.index: int(port)
            for w in self._supervisor.workers()
            if isinstance(port := w.ready.get("debug_port"), int)
        }
        scraped: dict[int, list[Metric]] = {}
        async with httpx.AsyncClient(timeout=self._timeout) as client:

            async def fetch(index: int, port: int) -> None:
                url = f"http://127.0.0.1:{port}/metrics"
                try:
                    response = await client.get(url)
                    response.raise_for_status()
                    if len(response.content) > _MAX_BODY:
                        raise ValueError(f"{len(response.content)} bytes, over {_MAX_BODY}")
                    scraped[index] = list(text_string_to_metric_families(response.text))
                except (httpx.HTTPError, ValueError) as exc:
                    _log.warning(
                        "supervise.metrics.scrape_failed", worker=index, url=url, error=repr(exc)
                    )

            async with trio.open_nursery() as nursery:
                for index, port in targets.items():
                    nursery.start_soon(fetch, index, port)
        self._scraped = scraped

    def collect(self) -> Iterator[Metric]:
        """The supervisor's metrics and the last scraped ones of each worker, merged by
        family and labelled :data:`WORKER_LABEL`. Not a checkpoint; does no I/O."""
        merged: dict[str, Metric] = {}
        sources: list[tuple[str, list[Metric]]] = [("supervisor", list(super().collect()))]
        sources += [(str(index), families) for index, families in sorted(self._scraped.items())]
        for worker, families in sources:
            for family in families:
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                elif target.type != family.type:
                    continue  # two processes disagree on a metric's type: keep the first
                target.samples.extend(
                    Sample(
                        sample.name,
                        {**sample.labels, WORKER_LABEL: worker},
                        sample.value,
                        sample.timestamp,
                        sample.exemplar,
                    )
                    for sample in family.samples
                )
        yield from merged.values()
