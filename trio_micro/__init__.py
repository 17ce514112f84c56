"""trio_micro: high-concurrency microservices on Trio.

The top-level package re-exports the concurrency toolkit (:mod:`trio_micro.toolkit`):
bounded task groups, ``run_all`` / ``amap``, channel patterns, rate limiting, request
coalescing, buffer pools and retry backoff. Monitoring and logging live in
:mod:`trio_micro.observe`; the sans-io wire protocol in :mod:`trio_micro.protocol`.

The toolkit names are imported on first use (PEP 562 module ``__getattr__``), so that
``import trio_micro.analysis`` or ``trio-micro logs`` does not pay for importing Trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import TrioMicroError
from ._lazy import fixup_module_metadata, lazy_exports
from ._version import __version__

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from .toolkit import (
        Backoff,
        BufferPool,
        BufferPoolStatistics,
        FastReceiveChannel,
        KeyedRateLimiter,
        KeyedRateLimiterStatistics,
        RateLimiter,
        RateLimiterStatistics,
        SingleFlight,
        SingleFlightStatistics,
        TaskGroup,
        TaskGroupStatistics,
        amap,
        first_completed,
        open_background_nursery,
        open_broadcast,
        open_fan_out,
        open_merge,
        open_task_group,
        open_throttle,
        receive_batch,
        run_all,
    )

__all__ = [
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
    "TrioMicroError",
    "__version__",
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

# Every name of __all__ not defined above comes from the toolkit; "toolkit" itself was
# imported with the package before its names became lazy, and code may rely on it.
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {".toolkit": [*(set(__all__) - {"TrioMicroError", "__version__"}), "toolkit"]},
    __all__,
)
fixup_module_metadata(__name__, {"TrioMicroError": TrioMicroError})
