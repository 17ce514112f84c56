"""The schema of the RPC access log, defined once for its writers and its readers.

Every RPC call logs exactly one record when it ends (DESIGN §7): the event
:data:`RPC_CALL_COMPLETE` when its status code is ``"OK"``, :data:`RPC_CALL_FAILED`
otherwise. With :func:`~trio_micro.observe.configure_logging` in ``json`` format a record
is one line such as::

    {"timestamp":"2026-11-26T10:00:00.123456Z","level":"info","event":"rpc.call.complete",
     "service":"users","method":"GetUser","peer":"10.0.0.9:41234",
     "server":"10.0.0.7:50051","code":"OK",
     "duration_ms":1.25,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",
     "span_id":"00f067aa0ba902b7","parent_span_id":"a2fb4a1d1a96d312"}

:class:`CallRecord` is that record as a type; its field names are the log keys (also
listed, in order, in :data:`CALL_RECORD_FIELDS`). The writer passes the same names as
keyword arguments to the structlog logger; ``trio-micro logs`` decodes lines into
:class:`CallRecord`. Keys that are not fields are allowed: handlers may bind their own
(the example user service binds ``cache``), which readers ignore unless asked to count
them (``trio-micro logs summary --group-by cache``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, final

import msgspec

__all__ = [
    "CALL_EVENTS",
    "CALL_RECORD_FIELDS",
    "CODE_OK",
    "RPC_CALL_COMPLETE",
    "RPC_CALL_FAILED",
    "CallRecord",
]

#: Event of a call that ended with status ``OK``.
RPC_CALL_COMPLETE: Final = "rpc.call.complete"
#: Event of a call that ended with any other status; the record then carries ``message``.
RPC_CALL_FAILED: Final = "rpc.call.failed"
#: The events that :class:`CallRecord` describes; readers skip every other event.
CALL_EVENTS: Final = frozenset({RPC_CALL_COMPLETE, RPC_CALL_FAILED})

#: The ``code`` of a successful call (gRPC status names, see :class:`~trio_micro.protocol.Status`).
CODE_OK: Final = "OK"


@final
class CallRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One access-log record: a finished RPC call, as written and as read back.

    The fields without a default are required in every call record; a line with one of
    them missing, or with a value of the wrong type, is malformed.

    Attributes:
        timestamp: When the call ended: ISO-8601 with a UTC offset (``...Z``), decoded
            to an aware :class:`~datetime.datetime`.
        level: The log level, ``"info"`` for successes, ``"warning"`` or ``"error"`` else.
        event: :data:`RPC_CALL_COMPLETE` or :data:`RPC_CALL_FAILED`.
        service: The service that handled the call, e.g. ``"users"``.
        method: The method called, e.g. ``"GetUser"``.
        code: The gRPC status name of the outcome, ``"OK"``, ``"NOT_FOUND"``, ...
        duration_ms: Wall time of the call in milliseconds (not negative).
        peer: The client's address (``host:port``) as the server saw it.
        server: The replica (``host:port``) that served the call: the server's address
            as the client reached it.
        trace_id: W3C trace id (32 hex digits) shared by every call of one request.
        span_id: This call's span (16 hex digits).
        parent_span_id: The span of the call that made this one; absent at the root.
        message: The error message of a failed call.
    """

    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    level: str = "info"
    event: str
    service: str
    method: str
    peer: str | None = None
    server: str | None = None
    code: str
    duration_ms: Annotated[float, msgspec.Meta(ge=0)]
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    message: str | None = None


#: Every key of a call record, in the order of :class:`CallRecord`'s fields.
CALL_RECORD_FIELDS: Final[tuple[str, ...]] = CallRecord.__struct_fields__
