"""trio_micro: high-concurrency microservices on Trio.

The top-level package re-exports the concurrency toolkit (:mod:`trio_micro.toolkit`):
bounded task groups, ``run_all`` / ``amap``, channel patterns, rate limiting, request
coalescing and buffer pools. Monitoring and logging live in :mod:`trio_micro.observe`;
the sans-io wire protocol in :mod:`trio_micro.protocol`.
"""

from __future__ import annotations

from ._errors import TrioMicroError
from ._version import __version__
from .toolkit import (
    BufferPool,
    BufferPoolStatistics,
    KeyedRateLimiter,
    KeyedRateLimiterStatistics,
    RateLimiter,
    RateLimiterStatistics,
    SingleFlight,
    SingleFlightStatistics,
    TaskGroup,
    TaskGroupStatistics,
    amap,
    open_broadcast,
    open_fan_out,
    open_merge,
    open_task_group,
    receive_batch,
    run_all,
)

__all__ = [
    "BufferPool",
    "BufferPoolStatistics",
    "KeyedRateLimiter",
    "KeyedRateLimiterStatistics",
    "RateLimiter",
    "RateLimiterStatistics",
    "SingleFlight",
    "SingleFlightStatistics",
    "TaskGroup",
    "TaskGroupStatistics",
    "TrioMicroError",
    "__version__",
    "amap",
    "open_broadcast",
    "open_fan_out",
    "open_merge",
    "open_task_group",
    "receive_batch",
    "run_all",
]
