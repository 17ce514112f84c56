"""The concurrency toolkit: the Go idioms of the article, the Trio way."""

from __future__ import annotations

from .._background import open_background_nursery
from .._lazy import fixup_module_metadata
from ._amap import amap
from ._backoff import Backoff
from ._buffers import BufferPool, BufferPoolStatistics
from ._channels import open_broadcast, open_fan_out, open_merge, receive_batch
from ._race import first_completed
from ._ratelimit import (
    KeyedRateLimiter,
    KeyedRateLimiterStatistics,
    RateLimiter,
    RateLimiterStatistics,
)
from ._receive import FastReceiveChannel
from ._singleflight import SingleFlight, SingleFlightStatistics
from ._tasks import TaskGroup, TaskGroupStatistics, open_task_group, run_all
from ._throttle import open_throttle

__all__: list[str] = [
    "Backoff",
    "BufferPool",
    "BufferPoolStatistics",
    "FastReceiveChannel",
    "KeyedRateLimiter",
    "KeyedRateLimiterStatistics",
    "RateLimiter",
    "RateLimiterStatistics",
    "SingleFlight",
    "SingleFlightStatistics",
    "TaskGroup",
    "TaskGroupStatistics",
    "amap",
    "first_completed",
    "open_background_nursery",
    "open_broadcast",
    "open_fan_out",
    "open_merge",
    "open_task_group",
    "open_throttle",
    "receive_batch",
    "run_all",
]

fixup_module_metadata(__name__, {name: globals()[name] for name in __all__})
del fixup_module_metadata
