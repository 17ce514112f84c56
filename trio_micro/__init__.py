"""trio_micro: high-concurrency microservices on Trio.

The top-level package re-exports the concurrency toolkit (task groups, bounded
mapping, channel patterns, rate limiting, request coalescing, buffer pools).
Monitoring and logging live in :mod:`trio_micro.observe`.
"""

from __future__ import annotations

from ._errors import TrioMicroError
from ._version import __version__

__all__ = [
    "TrioMicroError",
    "__version__",
]
