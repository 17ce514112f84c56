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
"""

from __future__ import annotations

from trio_micro.protocol import Status

from .._lazy import fixup_module_metadata
from ._admission import RateLimitInterceptor, RateLimitStatistics
from ._balancing import Balancer, OutlierEjection, PowerOfTwoChoices, RoundRobin, Subchannel
from ._channel import Channel, ChannelStatistics, open_channel
from ._context import ClientCall, ServerCall, current_call
from ._errors import RpcError
from ._health import (
    HealthCheckRequest,
    HealthCheckResponse,
    HealthService,
    HealthState,
    HealthStatus,
)
from ._interceptors import ClientInterceptor, ServerInterceptor
from ._metrics import MetricsInterceptor, register_channel_metrics, register_server_metrics
from ._observability import AccessLogInterceptor
from ._options import ServerOptions
from ._reflection import (
    ListServicesRequest,
    ListServicesResponse,
    MethodDescription,
    ReflectionService,
    ServiceDescription,
)
from ._resolver import ResolvedEndpoint, Resolver, register_resolver, split_target
from ._retry import RetryPolicy
from ._server import Server, ServerStatistics, open_server, serve
from ._service import MethodInfo, Service, server_stream, unary
from ._stubs import ResponseStream
from ._transport import Endpoint

__all__ = [
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
    "ListServicesRequest",
    "ListServicesResponse",
    "MethodDescription",
    "MethodInfo",
    "MetricsInterceptor",
    "OutlierEjection",
    "PowerOfTwoChoices",
    "RateLimitInterceptor",
    "RateLimitStatistics",
    "ReflectionService",
    "ResolvedEndpoint",
    "Resolver",
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
    "Subchannel",
    "current_call",
    "open_channel",
    "open_server",
    "register_channel_metrics",
    "register_resolver",
    "register_server_metrics",
    "serve",
    "server_stream",
    "split_target",
    "unary",
]

fixup_module_metadata(__name__, {name: globals()[name] for name in __all__})
del fixup_module_metadata
