"""The root of trio_micro's own exception tree.

::

    TrioMicroError                       trio_micro
    ├── ProtocolError                    trio_micro.protocol: a rule of the wire protocol broken
    │   ├── LocalProtocolError           ... by our side (a bug or race; no effect)
    │   └── RemoteProtocolError          ... by the peer (close the connection)
    ├── RpcError                         trio_micro.rpc: a failed call, with a Status code
    └── RegistryError                    trio_micro.registry
        ├── DuplicateRegistrationError
        ├── RegistryUnavailableError     the backend can't be reached
        └── RegistryBackendError         the backend answered with an error

There is no separate transport error: a call that fails because of the transport (refused,
unreachable, reset, TLS failure, handshake or keepalive timeout) raises
``RpcError(Status.UNAVAILABLE)`` with the peer and the reason in its message, so that
callers handle one type and retry policies one code, as in gRPC. A failure to connect is
chained with ``from`` to the ``OSError`` or trio error behind it; a connection lost later
is logged (``rpc.channel.connection_lost``) where it happened.

Resource-state errors reuse trio's exceptions (``trio.ClosedResourceError``,
``trio.BrokenResourceError``, ``trio.WouldBlock``, ...), and bad arguments
raise ``TypeError`` / ``ValueError`` with the offending value shown.
"""

from __future__ import annotations

__all__ = ["TrioMicroError"]


class TrioMicroError(Exception):
    """Base class of every exception that trio_micro defines."""
