"""What a handler or an interceptor knows about the call it is running.

The server runs each call in its own task and sets a context variable there, so
:func:`current_call` works anywhere below the handler (helpers, interceptors, log
processors) without passing the call object around, and never sees a sibling call's.
"""

from __future__ import annotations

import contextvars
import math
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    import trio

    from ._service import MethodKind
    from ._tls import PeerIdentity

__all__ = ["ClientCall", "ServerCall", "current_call"]


@final
class ServerCall:
    """One incoming call, as its handler and the server interceptors see it.

    Attributes:
        service: The service's wire name, e.g. ``"users"``.
        method: The method name, e.g. ``"get_user"``.
        kind: ``"unary"`` or ``"server_stream"``.
        peer: The client's address as ``"host:port"``.
        server: This server's address as the client reached it (``"host:port"``): which
            replica served the call.
        metadata: The request's metadata (str to str). Interceptors may change it before
            calling ``proceed``; the handler sees the result.
        deadline: When the call must be done, in :func:`trio.current_time` terms
            (``math.inf`` for none). The handler already runs under it; use this only to
            report it.
        stream_id: The call's stream id on its connection (for logs).
        peer_identity: The client certificate's verified identity (subject, SANs) when the
            server requires client certificates (mutual TLS, see
            :func:`server_ssl_context`); ``None`` without TLS or without a client
            certificate.
        received: When the server read the request off the connection, in
            :func:`trio.current_time` terms: a time the server had already taken, which
            interceptors may use instead of reading the clock again (the rate limiter
            does). ``None`` for a call the server did not receive (one built by hand).
    """

    __slots__ = (
        "_cancel_requested",
        "_requests",
        "_scope",
        "deadline",
        "kind",
        "metadata",
        "method",
        "peer",
        "peer_identity",
        "received",
        "server",
        "service",
        "stream_id",
    )

    def __init__(
        self,
        service: str,
        method: str,
        kind: MethodKind,
        peer: str,
        metadata: dict[str, str],
        deadline: float,
        stream_id: int,
        scope: trio.CancelScope,
        server: str = "",
        peer_identity: PeerIdentity | None = None,
        received: float | None = None,
    ) -> None:
        self.service = service
        self.method = method
        self.kind: MethodKind = kind
        self.peer = peer
        self.metadata = metadata
        self.deadline = deadline
        self.stream_id = stream_id
        self.server = server
        self.peer_identity = peer_identity
        self.received = received
        self._scope = scope
        self._cancel_requested = False
        self._requests: object = None  # a client-/bidi-stream's inbox (rpc._streaming)

    def __repr__(self) -> str:
        deadline = "" if math.isinf(self.deadline) else f", deadline={self.deadline!r}"
        return (
            f"ServerCall({self.service}/{self.method}, peer={self.peer!r}, "
            f"metadata={self.metadata!r}{deadline})"
        )


@final
class ClientCall:
    """One outgoing call, as the client interceptors see it.

    Attributes:
        service: The service's wire name.
        method: The method name.
        kind: ``"unary"`` or ``"server_stream"``.
        metadata: What will be sent; interceptors may add or change pairs before calling
            ``proceed`` (e.g. ``traceparent``, ``authorization``).
        request: The request object (read it; replacing it is not supported).
        peer: The server's ``"host:port"`` once ``proceed`` has picked a connection, else
            ``""``.
    """

    __slots__ = ("kind", "metadata", "method", "peer", "request", "service")

    def __init__(
        self,
        service: str,
        method: str,
        kind: MethodKind,
        metadata: dict[str, str],
        request: object,
    ) -> None:
        self.service = service
        self.method = method
        self.kind: MethodKind = kind
        self.metadata = metadata
        self.request = request
        self.peer = ""

    def __repr__(self) -> str:
        return f"ClientCall({self.service}/{self.method}, metadata={self.metadata!r})"


_current: Final[contextvars.ContextVar[ServerCall]] = contextvars.ContextVar(
    "trio_micro.rpc.current_call"
)


def current_call() -> ServerCall:
    """Return the :class:`ServerCall` being handled by the current task.

    Works in handlers, in server interceptors and in anything they call, including tasks
    they start (trio copies the context into child tasks).

    Raises:
        RuntimeError: Not called from within an RPC handler.
    """
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("rpc.current_call() called outside of an RPC handler") from None
