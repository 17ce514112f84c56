"""Interceptors: middleware around every call, on the server and on the client.

An interceptor gets the call's description and a ``proceed`` function that runs the rest of
the chain (the next interceptor, and finally the handler or the network call). It may read
or change ``call.metadata`` before proceeding, refuse the call by raising
:class:`~trio_micro.rpc.RpcError` instead of proceeding, time ``proceed``, and see the
outcome: ``proceed`` returns when the call succeeded and raises ``RpcError`` (with its
``code``) when it failed. Interceptors run in the order given, the first one outermost.

Server side, ``proceed`` covers the whole call: decoding the request, the handler, and for a
server-stream every item until the end. Failures reach the interceptor as ``RpcError``:
an unexpected exception in the handler as ``INTERNAL``, the deadline as
``DEADLINE_EXCEEDED``, the client's CANCEL as ``CANCELLED``. (After those two, the call's
cancel scope is cancelled, so an interceptor that awaits after ``proceed`` raised will be
cancelled too; log synchronously.)

Client side, ``proceed`` sends the request and, for a unary call, waits for the response.
For a server-stream it returns once the request is sent: the items are read later by the
caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from ._context import ClientCall, ServerCall

__all__ = ["ClientInterceptor", "ServerInterceptor"]


@runtime_checkable
class ServerInterceptor(Protocol):
    """Wraps every call a server handles.

    Example, refusing calls without a token::

        class RequireToken:
            async def intercept(self, call, proceed):
                if call.metadata.get("authorization") != "Bearer s3cret":
                    raise rpc.RpcError(rpc.Status.UNAUTHENTICATED, "bad token")
                await proceed()
    """

    async def intercept(self, call: ServerCall, proceed: Callable[[], Awaitable[None]]) -> None:
        """Run ``proceed()`` (or not) around the call; see the module docs."""
        ...


@runtime_checkable
class ClientInterceptor(Protocol):
    """Wraps every call a channel makes.

    Example, adding a header::

        class AddToken:
            async def intercept(self, call, proceed):
                call.metadata["authorization"] = "Bearer s3cret"
                await proceed()
    """

    async def intercept(self, call: ClientCall, proceed: Callable[[], Awaitable[None]]) -> None:
        """Run ``proceed()`` (or not) around the call; see the module docs."""
        ...
