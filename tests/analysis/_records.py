"""Builders of call records and log lines for the analysis and CLI tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from trio_micro.observe import RPC_CALL_COMPLETE, RPC_CALL_FAILED, CallRecord

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


def record(
    *,
    at: float = 0.0,
    service: str = "users",
    method: str = "GetUser",
    peer: str | None = "10.0.0.9:41234",
    server: str | None = "10.0.0.1:50051",
    code: str = "OK",
    duration_ms: float = 1.0,
    trace_id: str | None = "t1",
    span_id: str | None = "s1",
    parent_span_id: str | None = None,
    message: str | None = None,
) -> CallRecord:
    """A call record ending ``at`` seconds after :data:`T0`."""
    return CallRecord(
        timestamp=T0 + timedelta(seconds=at),
        level="info" if code == "OK" else "warning",
        event=RPC_CALL_COMPLETE if code == "OK" else RPC_CALL_FAILED,
        service=service,
        method=method,
        peer=peer,
        server=server,
        code=code,
        duration_ms=duration_ms,
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        message=message,
    )


def line(rec: CallRecord, **extra: object) -> bytes:
    """The JSON line of ``rec`` as the services write it, with the ``extra`` keys that
    handlers bind (``cache="hit"``; ``None`` values left out)."""
    fields = msgspec.to_builtins(rec)
    fields.update((key, value) for key, value in extra.items() if value is not None)
    return msgspec.json.encode(fields) + b"\n"
