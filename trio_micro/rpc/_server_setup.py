"""What :func:`~trio_micro.rpc.serve` serves, made from its arguments: every check, no I/O.

:func:`prepare` turns ``serve``'s keyword arguments into a :class:`Prepared`: the checked
:class:`~._server_connection.ServerConfig` its connections share, the table of services by
wire name (with the health and reflection services ``serve`` adds) and of methods by wire
name, and the listeners it was given (checked, not yet used). A bad argument raises
``TypeError`` or ``ValueError`` here, before anything is bound and without a checkpoint:
``open_server`` calls it before it opens its nursery, so the error comes out as is.

:mod:`._server` binds the listeners (unless given some) and runs the
:class:`~._server.Server` on what this built.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, final

import msgspec
import trio

from trio_micro._validate import check_bool, check_int, check_optional_int, check_seconds
from trio_micro.protocol import SUPPORTED_COMPRESSION, Settings, check_compression

from ._health import HEALTH_SERVICE, HealthService
from ._interceptors import ServerInterceptor
from ._reflection import ReflectionService
from ._server_connection import Method, ServerConfig
from ._service import Service

__all__: list[str] = []

# The call workers' task names (what the task monitor and tracebacks show): the module that
# made them before this one was split off, so that they stay what they were.
_CALL_TASK_PREFIX: Final = "trio_micro.rpc._server.call:"


@final
@dataclass(frozen=True, slots=True)
class Prepared:
    """What :func:`~._server.serve` serves, made from arguments that passed every check."""

    by_name: dict[str, Service]
    methods: dict[str, Method]
    options: ServerConfig
    host: str | None
    port: int
    listeners: list[trio.SocketListener] | None


def prepare(
    services: Iterable[Service],
    *,
    host: str | None,
    port: int,
    ssl_context: ssl.SSLContext | None,
    interceptors: Sequence[ServerInterceptor],
    reflection: bool,
    health: bool,
    max_connections: int | None,
    max_connections_per_peer: int | None,
    max_inflight: int | None,
    max_concurrent_streams: int,
    max_buffered_bytes: int,
    max_server_buffered_bytes: int,
    max_stalled_streams: int,
    stall_timeout: float,
    max_frame_size: int,
    max_metadata_size: int,
    handshake_timeout: float,
    keepalive_interval: float,
    keepalive_timeout: float,
    idle_timeout: float,
    min_ping_interval: float,
    compression: str | None,
    compression_threshold: int,
    grace_period: float,
    listeners: Sequence[trio.SocketListener] | None,
) -> Prepared:
    """Check :func:`~._server.serve`'s arguments and build its services (synchronous: no
    I/O, no checkpoint).

    Raises:
        TypeError / ValueError: A bad argument.
    """
    if not isinstance(interceptors, Sequence) or not all(
        isinstance(i, ServerInterceptor) for i in interceptors
    ):
        raise TypeError(
            f"interceptors must be a sequence of rpc.ServerInterceptor, got {interceptors!r}"
        )
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, got {ssl_context!r}")
    check_int("port", port, minimum=0)
    check_optional_int("max_connections", max_connections, minimum=1)
    check_optional_int("max_connections_per_peer", max_connections_per_peer, minimum=1)
    check_optional_int("max_inflight", max_inflight, minimum=1)
    try:
        settings = Settings(
            max_frame_size=check_int("max_frame_size", max_frame_size),
            max_concurrent_streams=check_int(
                "max_concurrent_streams", max_concurrent_streams, minimum=1
            ),
            max_metadata_size=check_int("max_metadata_size", max_metadata_size, minimum=0),
            min_ping_interval_ms=math.ceil(
                check_seconds("min_ping_interval", min_ping_interval, finite=True) * 1000
            ),
            compression=SUPPORTED_COMPRESSION,
        )
    except msgspec.ValidationError as exc:  # pragma: no cover - __post_init__ raises ValueError
        raise ValueError(str(exc)) from None
    options = ServerConfig(
        settings=settings,
        ssl_context=ssl_context,
        interceptors=tuple(interceptors),
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
        max_buffered_bytes=check_int("max_buffered_bytes", max_buffered_bytes, minimum=1),
        max_server_buffered_bytes=check_int(
            "max_server_buffered_bytes", max_server_buffered_bytes, minimum=1
        ),
        max_stalled_streams=check_int("max_stalled_streams", max_stalled_streams, minimum=0),
        stall_timeout=check_seconds("stall_timeout", stall_timeout),
        handshake_timeout=check_seconds("handshake_timeout", handshake_timeout, finite=True),
        keepalive_interval=check_seconds("keepalive_interval", keepalive_interval),
        keepalive_timeout=check_seconds("keepalive_timeout", keepalive_timeout, finite=True),
        idle_timeout=check_seconds("idle_timeout", idle_timeout),
        min_ping_interval=min_ping_interval,
        grace_period=check_seconds("grace_period", grace_period),
        max_inflight=max_inflight,
        compression=check_compression(compression),
        compression_threshold=check_int("compression_threshold", compression_threshold, minimum=0),
    )
    by_name, methods = build_services(services, reflection, check_bool("health", health))
    checked = None if listeners is None else check_listeners(listeners, host, port)
    return Prepared(by_name, methods, options, host, port, checked)


def build_services(
    services: Iterable[Service], reflection: bool, health: bool = False
) -> tuple[dict[str, Service], dict[str, Method]]:
    """The services by wire name (plus health and reflection, if asked) and their methods by
    wire name, each with its handler and its call task's name (synchronous).

    Raises:
        TypeError: ``services`` is not an iterable of :class:`Service` instances.
        ValueError: Two services share a wire name, or one takes health's or reflection's.
    """
    if isinstance(services, Service) or not isinstance(services, Iterable):
        raise TypeError(f"services must be an iterable of rpc.Service instances, got {services!r}")
    by_name: dict[str, Service] = {}
    for service in services:
        if not isinstance(service, Service) or type(service) is Service:
            raise TypeError(f"services must hold rpc.Service instances, got {service!r}")
        name = service.__rpc_name__
        if name in by_name:
            raise ValueError(f"two services named {name!r}: {by_name[name]!r} and {service!r}")
        by_name[name] = service
    if health:
        if HEALTH_SERVICE in by_name:
            raise ValueError(f"a service is named {HEALTH_SERVICE!r}; pass health=False")
        by_name[HEALTH_SERVICE] = HealthService(by_name)
    if reflection:
        reflector = ReflectionService(by_name.values())
        if reflector.__rpc_name__ in by_name:
            raise ValueError(
                f"a service is named {reflector.__rpc_name__!r}; pass reflection=False"
            )
        by_name[reflector.__rpc_name__] = reflector
    methods: dict[str, Method] = {}
    for service in by_name.values():
        for attr, info in service.__rpc_methods__.items():
            task_name = f"{_CALL_TASK_PREFIX}{info.wire_name}"
            methods[info.wire_name] = (info, getattr(service, attr), task_name)
    return by_name, methods


def check_listeners(listeners: object, host: str | None, port: int) -> list[trio.SocketListener]:
    """``listeners`` as a list, if they can be served instead of ``host`` and ``port``.

    Raises:
        ValueError: ``host`` or ``port`` was given too.
        TypeError: Not a non-empty sequence of :class:`trio.SocketListener`.
    """
    if host is not None or port != 0:
        raise ValueError(
            f"pass either listeners or host/port, not both (host={host!r}, port={port!r})"
        )
    if (
        not isinstance(listeners, Sequence)
        or not listeners
        or not all(isinstance(item, trio.SocketListener) for item in listeners)
    ):
        raise TypeError(
            f"listeners must be a non-empty sequence of trio.SocketListener, got {listeners!r}"
        )
    return list(listeners)
