"""Run a service on every core: a supervisor of worker processes (``serve --workers``).

* :class:`Supervisor`: starts N worker processes, restarts crashed ones with backoff,
  stops them on cancellation (SIGTERM, drain, SIGKILL past the grace period), and raises
  :class:`WorkerStartError` once for a worker that cannot start.
* :class:`WorkerContext`: the worker's side -- who it is, binding its life to the
  supervisor's, and reporting ready.
* :class:`WorkerMetricsRegistry`: one ``/metrics`` for the supervisor and its workers
  (scraped and labelled ``worker``).

Layering: above ``rpc`` and ``registry`` (it runs their processes, never imports them),
below ``cli``. POSIX only.

Log events defined here: ``supervise.worker.started``, ``supervise.worker.ready``,
``supervise.worker.exited``, ``supervise.worker.stopping``, ``supervise.worker.stopped``,
``supervise.worker.killed``, ``supervise.worker.bad_ready_line``.
"""

from __future__ import annotations

from .._lazy import fixup_module_metadata
from ._metrics import WORKER_LABEL, WorkerMetricsRegistry
from ._supervisor import (
    MAX_WORKERS,
    STOP_MARGIN,
    Supervisor,
    SupervisorStatistics,
    WorkerStartError,
    WorkerStatus,
)
from ._worker import (
    ENV_COUNT,
    ENV_INDEX,
    ENV_LIFE_FD,
    ENV_READY_FD,
    ENV_SUPERVISOR_PID,
    WorkerContext,
)

__all__ = [
    "ENV_COUNT",
    "ENV_INDEX",
    "ENV_LIFE_FD",
    "ENV_READY_FD",
    "ENV_SUPERVISOR_PID",
    "MAX_WORKERS",
    "STOP_MARGIN",
    "WORKER_LABEL",
    "Supervisor",
    "SupervisorStatistics",
    "WorkerContext",
    "WorkerMetricsRegistry",
    "WorkerStartError",
    "WorkerStatus",
]

fixup_module_metadata(__name__, {name: globals()[name] for name in __all__})
del fixup_module_metadata
