"""The health service, ``trio_micro.health``, modelled on gRPC's health protocol.

gRPC's ``grpc.health.v1.Health`` (``doc/health-checking.md``), in our types:

* ``check(HealthCheckRequest(service))`` answers the service's status at once, or fails
  with ``NOT_FOUND`` for a service the server does not know;
* ``watch(HealthCheckRequest(service))`` streams the status now and then every change;
  an unknown service streams ``SERVICE_UNKNOWN`` (and keeps watching: it may be added);
* the empty service name ``""`` is the whole server.

:class:`HealthService` holds the statuses in one :class:`HealthState` -- a value tasks can
wait on, which is all ``watch`` needs (the same job as trio-util's ``AsyncValue``, in a
few lines over a :class:`trio.Event`). :func:`~._server.serve` adds a health service by
default, every service (and ``""``) ``SERVING``; :attr:`Server.health
<trio_micro.rpc.Server.health>` is it, so code can mark a service ``NOT_SERVING`` (its
database is down) and back.

Draining: :meth:`Server.shutdown <trio_micro.rpc.Server.shutdown>` first calls
:meth:`HealthService.shutdown`: every status turns ``NOT_SERVING`` for good, each watch
queues that last answer and ends (so a watch never holds the server's grace period), and
only then do the connections get their ``GOAWAY``. A caller that watches therefore hears
``NOT_SERVING`` before the server stops taking calls.

Hostile watchers: watches hold a call slot each; at most ``max_watches`` run at once per
server, more fail with ``RESOURCE_EXHAUSTED``. Service names longer than
``_MAX_NAME`` characters are ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterable
from typing import Final, final

import msgspec
import trio

from trio_micro._validate import check_int
from trio_micro.protocol import Status

from ._errors import RpcError
from ._service import Service, server_stream, unary

__all__ = [
    "HealthCheckRequest",
    "HealthCheckResponse",
    "HealthService",
    "HealthState",
    "HealthStatus",
]

HEALTH_SERVICE: Final = "trio_micro.health"
_MAX_NAME: Final = 1024


class HealthStatus(enum.Enum):
    """A service's health, as gRPC's ``HealthCheckResponse.ServingStatus`` (minus ``UNKNOWN``).

    .. versionadded:: 0.2
    """

    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    #: Only from ``watch``: the server has no such service (``check`` fails ``NOT_FOUND``).
    SERVICE_UNKNOWN = "SERVICE_UNKNOWN"


@final
class HealthCheckRequest(msgspec.Struct, frozen=True):
    """The request of ``check`` and ``watch``: a service's wire name, ``""`` for the server."""

    service: str = ""


@final
class HealthCheckResponse(msgspec.Struct, frozen=True):
    """The answer of ``check``, and each item of ``watch``."""

    status: HealthStatus


@final
class HealthState:
    """Service name -> :class:`HealthStatus`, a value tasks can wait on.

    Synchronous reads and writes; :meth:`wait_changed` waits for the next write that
    changes something. Not a checkpoint except :meth:`wait_changed`.
    """

    __slots__ = ("_changed", "_statuses", "version")

    def __init__(self, statuses: dict[str, HealthStatus]) -> None:
        self._statuses = statuses
        self._changed = trio.Event()
        self.version = 0  # bumped on every change

    def get(self, service: str) -> HealthStatus | None:
        """The status of ``service``, ``None`` if unknown."""
        return self._statuses.get(service)

    def set(self, service: str, status: HealthStatus) -> None:
        """Set ``service``'s status; wake the waiters if it changed."""
        if self._statuses.get(service) is not status:
            self._statuses[service] = status
            self._notify()

    def set_all(self, status: HealthStatus) -> None:
        """Set every known service's status (the server's ``""`` included)."""
        for service in list(self._statuses):
            self.set(service, status)

    def _notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Wait for the next change. A checkpoint; cancellation just stops the wait."""
        await self._changed.wait()


@final
class HealthService(Service, name=HEALTH_SERVICE):
    """gRPC's health protocol over trio_micro; see the module docs.

    Made by :func:`~trio_micro.rpc.serve` (``health=True``); reach it as
    :attr:`Server.health <trio_micro.rpc.Server.health>`.

    Args:
        services: Wire names of the services whose status it reports, all ``SERVING`` at
            first; ``""`` (the whole server) is always added.
        max_watches: Most ``watch`` streams at once; more fail with ``RESOURCE_EXHAUSTED``.

    .. versionadded:: 0.2
    """

    def __init__(self, services: Iterable[str] = (), *, max_watches: int = 1000) -> None:
        statuses = {"": HealthStatus.SERVING}
        for name in services:
            if not isinstance(name, str):
                raise TypeError(f"service names must be str, got {name!r}")
            statuses[name] = HealthStatus.SERVING
        self.state = HealthState(statuses)
        self._max_watches = check_int("max_watches", max_watches, minimum=1)
        self._watches = 0
        self._shut_down = False
        self._all_told = trio.Event()
        self._to_tell = 0  # watches that have not yet queued their NOT_SERVING

    @property
    def watches(self) -> int:
        """``watch`` streams running now."""
        return self._watches

    @property
    def shut_down(self) -> bool:
        """:meth:`shutdown` was called: every status is ``NOT_SERVING`` for good."""
        return self._shut_down

    @property
    def serving(self) -> bool:
        """The whole server (service ``""``) is ``SERVING``."""
        return self.state.get("") is HealthStatus.SERVING

    def set_status(self, service: str, status: HealthStatus) -> None:
        """Set ``service``'s status (``""``: the whole server). Synchronous.

        After :meth:`shutdown` every status stays ``NOT_SERVING``; this does nothing.

        Raises:
            TypeError: ``service`` is not a str or ``status`` not a :class:`HealthStatus`.
            ValueError: ``status`` is ``SERVICE_UNKNOWN`` (a watcher-only answer).
        """
        if not isinstance(service, str):
            raise TypeError(f"service must be a str, got {service!r}")
        if not isinstance(status, HealthStatus):
            raise TypeError(f"status must be an rpc.HealthStatus, got {status!r}")
        if status is HealthStatus.SERVICE_UNKNOWN:
            raise ValueError("SERVICE_UNKNOWN is not a status a service can be set to")
        if not self._shut_down:
            self.state.set(service, status)

    async def shutdown(self) -> None:
        """Turn every service ``NOT_SERVING`` for good; end the watches. A checkpoint.

        Returns once every watch has queued its ``NOT_SERVING`` answer (or the calling
        task's cancellation, or at most a second: a watcher that gives no credit cannot
        hold the shutdown). Idempotent.
        """
        if not self._shut_down:
            self._shut_down = True
            self._to_tell = self._watches
            if not self._to_tell:
                self._all_told.set()
            self.state.set_all(HealthStatus.NOT_SERVING)
        with trio.move_on_after(1.0):
            await self._all_told.wait()

    def _told(self) -> None:
        self._to_tell -= 1
        if self._to_tell <= 0:
            self._all_told.set()

    def _status(self, service: str) -> HealthStatus | None:
        if len(service) > _MAX_NAME:
            raise RpcError(
                Status.INVALID_ARGUMENT,
                f"service name longer than {_MAX_NAME} characters ({len(service)})",
            )
        return self.state.get(service)

    @unary(idempotent=True)
    async def check(self, req: HealthCheckRequest) -> HealthCheckResponse:
        """The status of ``req.service`` now.

        Raises:
            RpcError: ``NOT_FOUND`` for an unknown service, ``INVALID_ARGUMENT`` for an
                over-long name.
        """
        status = self._status(req.service)
        if status is None:
            raise RpcError(Status.NOT_FOUND, f"unknown service {req.service!r}")
        return HealthCheckResponse(status)

    @server_stream
    async def watch(self, req: HealthCheckRequest) -> AsyncIterator[HealthCheckResponse]:
        """The status of ``req.service`` now, then at every change; ends at shutdown.

        Raises:
            RpcError: ``RESOURCE_EXHAUSTED`` beyond ``max_watches``, ``INVALID_ARGUMENT``
                for an over-long name.
        """
        service = req.service
        self._status(service)
        if self._watches >= self._max_watches:
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                f"too many health watches ({self._max_watches})",
                {"refused": "max_watches"},
            )
        if self._shut_down:
            yield HealthCheckResponse(HealthStatus.NOT_SERVING)
            return
        self._watches += 1
        told = False
        try:
            last: HealthStatus | None = None
            while True:
                status = self.state.get(service) or HealthStatus.SERVICE_UNKNOWN
                if status is not last:
                    last = status
                    yield HealthCheckResponse(status)
                if self.shut_down:  # a property: mypy would keep the attribute narrowed
                    told = True
                    self._told()
                    return
                await self.state.wait_changed()
        finally:
            self._watches -= 1
            if self.shut_down and not told:
                self._told()
