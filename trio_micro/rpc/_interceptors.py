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

Both sides build the chain with :func:`run_intercepted`, here, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from ._context import ClientCall, ServerCall

__all__ = ["ClientInterceptor", "ServerInterceptor"]

_C = TypeVar("_C", ClientCall, ServerCall)
_C_contra = TypeVar("_C_contra", contravariant=True)
Proceed = Callable[[], Awaitable[None]]


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

    def intercept(
        self, call: ServerCall, proceed: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        """Run ``proceed()`` (or not) around the call; see the module docs.

        Usually an ``async def``; a plain function that returns ``proceed()``'s awaitable
        (or raises) also serves, and saves a coroutine per call on a hot path.
        """
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

    def intercept(
        self, call: ClientCall, proceed: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        """Run ``proceed()`` (or not) around the call; see the module docs.

        Usually an ``async def``; a plain function that returns ``proceed()``'s awaitable
        (or raises) also serves, and saves a coroutine per call on a hot path.
        """
        ...


class _Interceptor(Protocol[_C_contra]):
    """What :func:`run_intercepted` needs of an interceptor of either side."""

    def intercept(self, call: _C_contra, proceed: Proceed) -> Awaitable[None]: ...


def run_intercepted(
    interceptors: Sequence[_Interceptor[_C]], call: _C, innermost: Proceed
) -> Awaitable[None]:
    """Run ``innermost`` inside ``interceptors`` (the first outermost) for ``call``.

    The one place where a chain is built, for the client (:mod:`._calls`) and the server
    (:mod:`._server_connection`) alike. Returns the outermost interceptor's awaitable;
    awaiting it runs the chain, with the checkpoints and the cancellation behaviour of the
    interceptors and of ``innermost``.
    """
    if not interceptors:
        return innermost()
    chain = innermost
    last = len(interceptors) - 1
    if last:  # one interceptor (a rate limit alone) builds nothing
        for index in range(last, 0, -1):
            chain = _bind(interceptors[index], call, chain)
    return interceptors[0].intercept(call, chain)  # the outermost needs no closure


def _bind(interceptor: _Interceptor[_C], call: _C, proceed: Proceed) -> Proceed:
    def run() -> Awaitable[None]:
        return interceptor.intercept(call, proceed)

    return run
