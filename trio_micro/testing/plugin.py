"""The pytest plugin: trio_micro's test helpers as fixtures. Opt-in.

Turn it on in one of two ways (both load this module):

* ``-p trio_micro.testing.plugin`` on the command line or in ``addopts``, or
  ``pytest_plugins = ["trio_micro.testing.plugin"]`` in the top ``conftest.py``;
* ``trio_micro_fixtures = true`` in the pytest configuration (``[tool.pytest.ini_options]``),
  read by the small ``pytest11`` entry point :mod:`trio_micro.testing._entry`, which
  installing trio-micro registers and which does nothing else.

Opt-in, like pytest-trio's ``trio_mode``: installing a library must not put fixture names
into every project's tests. The async fixtures run under pytest-trio (``trio_mode = true``,
or tests marked ``@pytest.mark.trio``).

Fixtures:

``rpc_services``
    Override it: the service instances to serve (the default fails, saying so).
``rpc_interceptors``
    Override it for extra server interceptors (default: none).
``fault_injector``
    A fresh :class:`~trio_micro.testing.FaultInjector`, installed on ``rpc_harness``'s
    server; add rules in the test.
``access_log``
    :func:`~trio_micro.testing.capture_access_log` for the test.
``memory_registry``
    A fresh :class:`~trio_micro.registry.MemoryRegistry`; ``rpc_harness`` registers its
    services in it.
``rpc_harness``
    :func:`~trio_micro.testing.open_service` of the above: ``rpc_harness.stub(Service)``.
``rpc_server`` / ``rpc_channel``
    ``rpc_harness.server`` and ``rpc_harness.channel``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from trio_micro import rpc

from . import (
    AccessLog,
    FaultInjector,
    MemoryRegistry,
    ServiceHarness,
    capture_access_log,
    open_service,
)

__all__: list[str] = []


@pytest.fixture
def rpc_services() -> Sequence[rpc.Service]:
    """The services ``rpc_harness`` serves: override this fixture."""
    pytest.fail(
        "trio_micro.testing.plugin: define a fixture named rpc_services that returns the "
        "service instances to serve, e.g. `return [UserService()]`",
        pytrace=False,
    )


@pytest.fixture
def rpc_interceptors() -> Sequence[rpc.ServerInterceptor]:
    """Extra server interceptors for ``rpc_harness`` (after the access log and faults)."""
    return ()


@pytest.fixture
def fault_injector() -> FaultInjector:
    """A fresh fault injector, on ``rpc_harness``'s server."""
    return FaultInjector()


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    """The records logged during the test (``access_log.calls()``: the access log)."""
    with capture_access_log() as log:
        yield log


@pytest.fixture
def memory_registry() -> MemoryRegistry:
    """A fresh in-memory registry, in which ``rpc_harness`` registers its services."""
    return MemoryRegistry()


@pytest.fixture
async def rpc_harness(
    rpc_services: Sequence[rpc.Service],
    rpc_interceptors: Sequence[rpc.ServerInterceptor],
    fault_injector: FaultInjector,
    memory_registry: MemoryRegistry,
) -> AsyncIterator[ServiceHarness]:
    """``rpc_services`` served on a free port, with a channel: ``rpc_harness.stub(...)``."""
    async with open_service(
        rpc_services,
        interceptors=rpc_interceptors,
        faults=fault_injector,
        registry=memory_registry,
    ) as harness:
        yield harness


@pytest.fixture
def rpc_server(rpc_harness: ServiceHarness) -> rpc.Server:
    """The running server of ``rpc_harness``."""
    return rpc_harness.server


@pytest.fixture
def rpc_channel(rpc_harness: ServiceHarness) -> rpc.Channel:
    """The channel of ``rpc_harness``: ``rpc_channel.stub(UserService)``."""
    return rpc_harness.channel
