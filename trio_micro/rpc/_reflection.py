"""The built-in introspection service, ``trio_micro.reflection``: what a server serves.

Like gRPC's server reflection: a client (or ``trio-micro call``) asks
``list_services`` and gets every service, its methods, their kinds and the JSON schemas of
their request and response types (from :func:`msgspec.json.schema`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, final

import msgspec

from ._service import Service, unary

__all__ = [
    "ListServicesRequest",
    "ListServicesResponse",
    "MethodDescription",
    "ReflectionService",
    "ServiceDescription",
]


@final
class MethodDescription(msgspec.Struct, frozen=True):
    """One method: name, kind (``"unary"`` / ``"server_stream"``) and JSON schemas."""

    name: str
    kind: str
    idempotent: bool
    request_schema: dict[str, Any]
    response_schema: dict[str, Any]


@final
class ServiceDescription(msgspec.Struct, frozen=True):
    """One service and its methods."""

    name: str
    methods: list[MethodDescription]


@final
class ListServicesRequest(msgspec.Struct, frozen=True):
    """The (empty) request of ``trio_micro.reflection/list_services``."""


@final
class ListServicesResponse(msgspec.Struct, frozen=True):
    """Every service the server serves, this one included."""

    services: list[ServiceDescription]


@final
class ReflectionService(Service, name="trio_micro.reflection"):
    """Describes the services of a server; added by ``serve(..., reflection=True)``.

    Args:
        services: The services to describe (the server passes all of its own).
    """

    def __init__(self, services: Iterable[Service]) -> None:
        described = [*services, self]
        self._response = ListServicesResponse(
            [
                ServiceDescription(
                    service.__rpc_name__,
                    [
                        MethodDescription(
                            info.name,
                            info.kind,
                            info.idempotent,
                            msgspec.json.schema(info.request_type),
                            msgspec.json.schema(info.response_type),
                        )
                        for info in service.__rpc_methods__.values()
                    ],
                )
                for service in described
            ]
        )

    @unary(idempotent=True)
    async def list_services(self, req: ListServicesRequest) -> ListServicesResponse:
        """Return the description of every service, computed once at start-up."""
        return self._response
