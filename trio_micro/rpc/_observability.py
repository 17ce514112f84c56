"""Trace propagation for every call, and the access log interceptor.

Trace propagation (always on)
-----------------------------
*Server*: before the interceptors run, :func:`enter_server_span` reads the request's
``traceparent`` (W3C trace context), makes a child span of it current in the call's task
(:func:`trio_micro.observe.current_span`) and binds ``trace_id``, ``span_id`` and
``parent_span_id`` into structlog's contextvars, so every record logged while the call runs
carries them. A missing or malformed ``traceparent`` starts a new trace (a malformed one is
logged at debug as ``rpc.trace.bad_traceparent``); it never fails the call.

*Client*: when a request is sent, :func:`with_traceparent` adds ``traceparent`` to its
metadata, naming the current span as the parent. Inside a handler that is the handler's
call span, so the calls a handler makes join its trace automatically, the way deadlines
propagate. Outside any span nothing is added and the server starts a new trace, whose root
is the server's span. A ``traceparent`` already in the metadata (from the stub or a client
interceptor) is left alone, and none is added when it would push the metadata over the
server's ``max_metadata_size``.

The client opens no span of its own: trio_micro logs one record per call, on the server, so
a client span would never be recorded anywhere, and a server span whose parent is
unrecorded would break the call tree. The span that made the call (the caller's handler
span, or one from :func:`trio_micro.observe.start_span`) is the parent instead.

Access log
----------
:class:`AccessLogInterceptor` writes the one record per call that ``trio-micro logs``
reads (:class:`trio_micro.observe.CallRecord`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, final

import structlog
import trio

from trio_micro.observe import (
    CODE_OK,
    RPC_CALL_COMPLETE,
    RPC_CALL_FAILED,
    TRACEPARENT,
    bind_span,
    child_of_traceparent,
    current_span,
    format_traceparent,
    new_trace,
)
from trio_micro.protocol import Connection, Status

from ._context import ServerCall
from ._errors import RpcError

__all__ = ["AccessLogInterceptor"]

log = structlog.get_logger("rpc")

#: Debug event: a request's ``traceparent`` was malformed and a new trace was started.
BAD_TRACEPARENT: Final = "rpc.trace.bad_traceparent"

# UTF-8 bytes that a traceparent adds to the metadata (key + 55-character value).
_TRACEPARENT_SIZE: Final = len(TRACEPARENT) + 55
# Failures that are the server's fault are logged at error level; the rest at warning.
_SERVER_FAULTS: Final = frozenset({Status.INTERNAL, Status.UNKNOWN, Status.DATA_LOSS})


def enter_server_span(call: ServerCall) -> None:
    """Make the call's span current in the call's task and bind its ids for structlog.

    Called by the server in the call's own task before the interceptors run. Never raises
    for bad input: a malformed ``traceparent`` starts a new trace.
    """
    value = call.metadata.get(TRACEPARENT)
    if value is None:
        bind_span(new_trace())
        return
    try:
        span = child_of_traceparent(value)
    except ValueError as exc:
        log.debug(
            BAD_TRACEPARENT,
            service=call.service,
            method=call.method,
            peer=call.peer,
            reason=str(exc),
        )
        bind_span(new_trace())
        return
    bind_span(span)


def with_traceparent(metadata: dict[str, str] | None, proto: Connection) -> dict[str, str] | None:
    """Return the metadata to send: ``metadata`` plus a ``traceparent`` for the current span.

    ``metadata`` itself is not changed. It is returned as is when there is no current span
    (the server then starts a new trace), when it has a ``traceparent`` already, or when
    adding one would exceed the server's ``max_metadata_size`` (read from ``proto``, the
    client's connection): tracing must not make a call fail.
    """
    span = current_span()
    if span is None:
        # A new trace either way: the server starts it. A traceparent naming a root made
        # up here would cost 66 bytes a request and name a parent that is logged nowhere.
        return metadata
    remote = proto.remote_settings
    limit = 0 if remote is None else remote.max_metadata_size
    if not metadata:
        if limit < _TRACEPARENT_SIZE:
            return metadata
        return {TRACEPARENT: format_traceparent(span)}
    if TRACEPARENT in metadata:
        return metadata
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if size + _TRACEPARENT_SIZE > limit:
        return metadata
    return {**metadata, TRACEPARENT: format_traceparent(span)}


@final
class AccessLogInterceptor:
    """A server interceptor that logs one record per call when it ends.

    The event is ``rpc.call.complete`` for a call that ended with ``OK`` (level info) and
    ``rpc.call.failed`` for any other outcome (level warning; error for ``INTERNAL``,
    ``UNKNOWN`` and ``DATA_LOSS``). Each record has the fields of
    :class:`trio_micro.observe.CallRecord`: ``service``, ``method``, ``peer`` (the client's
    address), ``server`` (this replica's address), ``code`` (the status name, e.g.
    ``"NOT_FOUND"``), ``duration_ms`` (a float, from before the request was decoded to
    after the response, or the last item, was queued), ``trace_id``, ``span_id``,
    ``parent_span_id`` (absent at a root), ``message`` for failures -- plus whatever the
    handler bound with
    :func:`structlog.contextvars.bind_contextvars`, such as ``cache="hit"`` (when the
    structlog configuration merges contextvars, as :func:`trio_micro.observe.configure_logging`
    does).

    A call the client cancelled is logged with ``CANCELLED``, one that ran out of time with
    ``DEADLINE_EXCEEDED``. Calls the server refuses before any interceptor runs (an unknown
    method, a request after GOAWAY) are not logged. Put this interceptor first in the list,
    so that what the others refuse is logged too.

    Args:
        logger: The structlog logger to write to; default ``structlog.get_logger("rpc")``.

    .. versionadded:: 0.1
    """

    __slots__ = ("_log",)

    def __init__(self, *, logger: Any = None) -> None:
        self._log = log if logger is None else logger

    def __repr__(self) -> str:
        return "rpc.AccessLogInterceptor()"

    async def intercept(self, call: ServerCall, proceed: Callable[[], Awaitable[None]]) -> None:
        """Run the call and log its outcome (synchronously, so even a cancelled call logs)."""
        start = time.perf_counter()
        try:
            await proceed()
        except RpcError as exc:
            self._failed(call, start, exc.code, exc.message)
            raise
        except BaseException as exc:
            code, message = _abnormal_outcome(call, exc)
            self._failed(call, start, code, message)
            raise
        self._log.info(RPC_CALL_COMPLETE, **_fields(call, start, CODE_OK))

    def _failed(self, call: ServerCall, start: float, code: Status, message: str) -> None:
        fields = _fields(call, start, code.name)
        fields["message"] = message
        if code in _SERVER_FAULTS:
            self._log.error(RPC_CALL_FAILED, **fields)
        else:
            self._log.warning(RPC_CALL_FAILED, **fields)


def _fields(call: ServerCall, start: float, code: str) -> dict[str, Any]:
    # The trace fields are bound in the call's contextvars too; passing them here keeps
    # them in the record under a structlog configuration that does not merge contextvars.
    fields: dict[str, Any] = {
        "service": call.service,
        "method": call.method,
        "peer": call.peer,
        "server": call.server,
        "code": code,
        "duration_ms": round((time.perf_counter() - start) * 1000, 3),
    }
    span = current_span()
    if span is not None:
        fields["trace_id"] = span.trace_id
        fields["span_id"] = span.span_id
        if span.parent_span_id is not None:
            fields["parent_span_id"] = span.parent_span_id
    return fields


def _abnormal_outcome(call: ServerCall, exc: BaseException) -> tuple[Status, str]:
    """The status a call ends with when ``proceed`` raised something other than RpcError."""
    if isinstance(exc, trio.Cancelled):
        if call._scope.cancel_called:
            # The same rule as the server's: a CANCEL from the client, else the deadline.
            if call._cancel_requested:
                return Status.CANCELLED, "cancelled by the client"
            return Status.DEADLINE_EXCEEDED, "deadline exceeded"
        return Status.CANCELLED, "cancelled by the server"
    return Status.INTERNAL, f"call failed with {type(exc).__name__}"
