"""trio_micro: high-concurrency microservices on Trio.

The top-level package re-exports the concurrency toolkit (:mod:`trio_micro.toolkit`):
bounded task groups, ``run_all`` / ``amap``, channel patterns, rate limiting, request
coalescing and buffer pools. Monitoring and logging live in :mod:`trio_micro.observe`;
the sans-io wire protocol in :mod:`trio_micro.protocol`.

The toolkit names are imported on first use (PEP 562 module ``__getattr__``), so that
``import trio_micro.analysis`` or ``trio-micro logs`` does not pay for importing Trio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._errors import TrioMicroError
from ._version import __version__

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
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

# Every name of __all__ not defined above comes from the toolkit.
_LAZY = frozenset(__all__) - {"TrioMicroError", "__version__"}


def __getattr__(name: str) -> object:
    """Import a toolkit name on first access and cache it in the module."""
    if name == "toolkit":  # was imported with the package; code may rely on it
        return importlib.import_module(".toolkit", __name__)
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".toolkit", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
