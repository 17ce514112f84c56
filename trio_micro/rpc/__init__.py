"""RPC over trio: typed services, multiplexed connections, deadlines that cross the wire.

::

    class UserService(rpc.Service, name="users"):
        @rpc.unary
        async def get_user(self, req: GetUserRequest) -> User: ...

    async with rpc.open_server([UserService()], host="127.0.0.1", port=0) as server:
        async with rpc.open_channel(f"127.0.0.1:{server.address[1]}") as channel:
            users = channel.stub(UserService)
            user = await users.get_user(GetUserRequest(user_id=1))

``docs/rpc.md`` is the user guide; ``docs/protocol.md`` the wire format, implemented by the
sans-io :mod:`trio_micro.protocol` that this package drives.

Names are imported on first use (PEP 562 module ``__getattr__``): the service definitions
(``Service``, ``unary``, ``server_stream``, ``MethodInfo``), ``RpcError``, ``Status`` and
``Endpoint`` do not import Trio, so a module defining a service can be imported by an
asyncio program (:mod:`trio_micro.aio`) without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio_micro.protocol import Status

from .._lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from ._address import Endpoint
    from ._admission import RateLimitInterceptor, RateLimitStatistics
    from ._balancing import (
        EJECTION_ERROR_CODES,
        Balancer,
        LatencyTracker,
        OutlierEjection,
        PowerOfTwoChoices,
        RoundRobin,
        Subchannel,
    )
    from ._channel import Channel, ChannelStatistics, open_channel
    from ._client_streams import RequestSender, ResponseReceiver, StreamCall
    from ._context import ClientCall, ServerCall, current_call
    from ._errors import RpcError
    from ._health import (
        HealthCheckRequest,
        HealthCheckResponse,
        HealthService,
        HealthState,
        HealthStatus,
    )
    from ._hedging import hedged
    from ._interceptors import ClientInterceptor, ServerInterceptor
    from ._listeners import open_tcp_listeners
    from ._metrics import MetricsInterceptor, register_channel_metrics, register_server_metrics
    from ._observability import AccessLogInterceptor
    from ._options import ServerOptions
    from ._ready import wait_for_ready
    from ._reflection import (
        ListServicesRequest,
        ListServicesResponse,
        MethodDescription,
        ReflectionService,
        ServiceDescription,
    )
    from ._resolver import (
        ResolvedEndpoint,
        Resolver,
        ResolverStatus,
        StatusResolver,
        register_resolver,
        split_target,
    )
    from ._retry import RetryPolicy
    from ._server import Server, ServerStatistics, open_server, serve
    from ._service import (
        MethodInfo,
        Service,
        bidi_stream,
        client_stream,
        server_stream,
        unary,
    )
    from ._streaming import RequestStream, ResponseSender, StreamingMethod
    from ._stubs import ResponseStream
    from ._tls import PeerIdentity, TlsFileError, client_ssl_context, server_ssl_context

__all__ = [
    "EJECTION_ERROR_CODES",
    "AccessLogInterceptor",
    "Balancer",
    "Channel",
    "ChannelStatistics",
    "ClientCall",
    "ClientInterceptor",
    "Endpoint",
    "HealthCheckRequest",
    "HealthCheckResponse",
    "HealthService",
    "HealthState",
    "HealthStatus",
    "LatencyTracker",
    "ListServicesRequest",
    "ListServicesResponse",
    "MethodDescription",
    "MethodInfo",
    "MetricsInterceptor",
    "OutlierEjection",
    "PeerIdentity",
    "PowerOfTwoChoices",
    "RateLimitInterceptor",
    "RateLimitStatistics",
    "ReflectionService",
    "RequestSender",
    "RequestStream",
    "ResolvedEndpoint",
    "Resolver",
    "ResolverStatus",
    "ResponseReceiver",
    "ResponseSender",
    "ResponseStream",
    "RetryPolicy",
    "RoundRobin",
    "RpcError",
    "Server",
    "ServerCall",
    "ServerInterceptor",
    "ServerOptions",
    "ServerStatistics",
    "Service",
    "ServiceDescription",
    "Status",
    "StatusResolver",
    "StreamCall",
    "StreamingMethod",
    "Subchannel",
    "TlsFileError",
    "bidi_stream",
    "client_ssl_context",
    "client_stream",
    "current_call",
    "hedged",
    "open_channel",
    "open_server",
    "open_tcp_listeners",
    "register_channel_metrics",
    "register_resolver",
    "register_server_metrics",
    "serve",
    "server_ssl_context",
    "server_stream",
    "split_target",
    "unary",
    "wait_for_ready",
]

# private module -> the names of __all__ it defines
_MODULES: dict[str, tuple[str, ...]] = {
    "._address": ("Endpoint",),
    "._admission": ("RateLimitInterceptor", "RateLimitStatistics"),
    "._balancing": (
        "EJECTION_ERROR_CODES",
        "Balancer",
        "LatencyTracker",
        "OutlierEjection",
        "PowerOfTwoChoices",
        "RoundRobin",
        "Subchannel",
    ),
    "._channel": (
        "Channel",
        "ChannelStatistics",
        "open_channel",
    ),
    "._context": (
        "ClientCall",
        "ServerCall",
        "current_call",
    ),
    "._errors": ("RpcError",),
    "._health": (
        "HealthCheckRequest",
        "HealthCheckResponse",
        "HealthService",
        "HealthState",
        "HealthStatus",
    ),
    "._hedging": ("hedged",),
    "._interceptors": (
        "ClientInterceptor",
        "ServerInterceptor",
    ),
    "._listeners": ("open_tcp_listeners",),
    "._metrics": (
        "MetricsInterceptor",
        "register_channel_metrics",
        "register_server_metrics",
    ),
    "._observability": ("AccessLogInterceptor",),
    "._options": ("ServerOptions",),
    "._reflection": (
        "ListServicesRequest",
        "ListServicesResponse",
        "MethodDescription",
        "ReflectionService",
        "ServiceDescription",
    ),
    "._ready": ("wait_for_ready",),
    "._resolver": (
        "ResolvedEndpoint",
        "Resolver",
        "ResolverStatus",
        "StatusResolver",
        "register_resolver",
        "split_target",
    ),
    "._retry": ("RetryPolicy",),
    "._server": (
        "Server",
        "ServerStatistics",
        "open_server",
        "serve",
    ),
    "._client_streams": ("RequestSender", "ResponseReceiver", "StreamCall"),
    "._service": (
        "MethodInfo",
        "Service",
        "bidi_stream",
        "client_stream",
        "server_stream",
        "unary",
    ),
    "._streaming": ("RequestStream", "ResponseSender", "StreamingMethod"),
    "._stubs": ("ResponseStream",),
    "._tls": (
        "PeerIdentity",
        "TlsFileError",
        "client_ssl_context",
        "server_ssl_context",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES, __all__)
