"""What users import to test their own services (and what trio_micro's tests use).

* :func:`open_service` (:class:`ServiceHarness`): a server for a list of services on a free
  127.0.0.1 port, a channel to it and typed stubs, optionally registered in a registry.
* :func:`capture_access_log` (:class:`AccessLog`): the access-log records the server wrote,
  on :func:`structlog.testing.capture_logs`.
* :class:`FaultInjector`: an interceptor that delays or fails the Nth call, or drops the
  connection; MockClock-friendly.
* :func:`open_proxy` (:class:`Proxy`): a TCP proxy in front of a server that counts the
  bytes each way and can cut every connection (what the injector drops through).
* :class:`~trio_micro.registry.MemoryRegistry`, re-exported: the registry for tests.

The pytest plugin, :mod:`trio_micro.testing.plugin`, turns these into fixtures; it is
opt-in (``-p trio_micro.testing.plugin``, or ``trio_micro_fixtures = true`` in the pytest
configuration). ``docs/testing.md`` shows both.

Names are imported on first use: pytest loads this package's entry point
(:mod:`._entry`) in every run of an environment that has trio-micro, and that must not
import the RPC stack.

.. versionadded:: 0.2
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from ..registry import MemoryRegistry
    from ._faults import FaultInjector, Proxy, open_proxy
    from ._harness import AccessLog, ServiceHarness, capture_access_log, open_service

__all__ = [
    "AccessLog",
    "FaultInjector",
    "MemoryRegistry",
    "Proxy",
    "ServiceHarness",
    "capture_access_log",
    "open_proxy",
    "open_service",
]

# module -> the names of __all__ it defines
_MODULES: dict[str, tuple[str, ...]] = {
    "..registry": ("MemoryRegistry",),
    "._faults": ("FaultInjector", "Proxy", "open_proxy"),
    "._harness": ("AccessLog", "ServiceHarness", "capture_access_log", "open_service"),
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES, __all__)
