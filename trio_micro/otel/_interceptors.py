"""Server and client interceptors that create OpenTelemetry spans and histograms.

Theory of operation
-------------------
*Server*: the server has already made a trio_micro span current for the call (a child of
the request's ``traceparent``, see ``rpc._observability``). The interceptor starts an
OpenTelemetry ``SERVER`` span whose parent is the ``traceparent`` itself (the caller's
client span), attaches it to OpenTelemetry's context for the call's task, and, when the
span is recording, rebinds trio_micro's current span to the OpenTelemetry span's ids: the
access log and every record of the call then name the span a tracing backend shows. The
call's task is the handler's task, so the calls the handler makes see this span as current.

*Client*: the interceptor starts a ``CLIENT`` span, the child of OpenTelemetry's current
span, or, when there is none, of trio_micro's current span (a remote parent: a handler's
call span of a server without this bridge, or :func:`trio_micro.observe.start_span`), and
writes its ``traceparent`` into the call's metadata, where ``rpc`` leaves it alone.

Both end the span when ``proceed`` ends (for a server-stream on the client: once the
request is sent; the items are read later) and record its duration in the histogram with
the span's low-cardinality attributes. Neither checkpoints beyond ``proceed``; cancellation
passes through, recorded as ``CANCELLED`` (or the server's ``DEADLINE_EXCEEDED``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar, Final, final

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, StatusCode

from trio_micro import observe, rpc
from trio_micro._version import __version__

__all__ = [
    "RPC_SYSTEM",
    "STATUS_CODE_ATTRIBUTE",
    "OtelClientInterceptor",
    "OtelServerInterceptor",
]

#: The ``rpc.system`` attribute's value.
RPC_SYSTEM: Final = "trio_micro"
#: The status-code attribute (gRPC's numbering), after the convention's ``rpc.grpc.status_code``.
STATUS_CODE_ATTRIBUTE: Final = "rpc.trio_micro.status_code"
_SCOPE: Final = "trio_micro.otel"
# The server-side codes that mark a span as an error (the RPC semantic conventions' list for
# gRPC servers); every non-OK code is an error on the client.
_SERVER_ERRORS: Final = frozenset(
    {
        rpc.Status.UNKNOWN,
        rpc.Status.DEADLINE_EXCEEDED,
        rpc.Status.UNIMPLEMENTED,
        rpc.Status.INTERNAL,
        rpc.Status.UNAVAILABLE,
        rpc.Status.DATA_LOSS,
    }
)
# Buckets for call durations in seconds (the conventions advise explicit boundaries).
_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


@functools.lru_cache(maxsize=4096)  # bounded: peers come and go
def _split_address(address: str) -> tuple[str, int | None]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, None
    return host.strip("[]"), int(port) if port.isdigit() else None


def _trace_context_of(span: trace.Span, parent: str | None) -> observe.TraceContext:
    ctx = span.get_span_context()
    return observe.TraceContext(
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        parent,
        sampled=bool(ctx.trace_flags & trace.TraceFlags.SAMPLED),
    )


def _context_of(span: observe.TraceContext, span_id: str) -> otel_context.Context:
    """An OpenTelemetry context whose current span is the remote ``span_id`` of ``span``'s
    trace."""
    remote = trace.SpanContext(
        int(span.trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if span.sampled else 0),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(remote))


def _remote_parent(call: rpc.ServerCall) -> otel_context.Context | None:
    """The caller's span as the server span's parent: read from the ``traceparent`` the
    server already parsed (trio_micro's call span is its child), ``None`` without one."""
    if observe.TRACEPARENT not in call.metadata:
        return None
    ours = observe.current_span()
    if ours is None or ours.parent_span_id is None:  # malformed: the server started a trace
        return None
    return _context_of(ours, ours.parent_span_id)


def _outcome(exc: BaseException) -> rpc.Status:
    if isinstance(exc, rpc.RpcError):
        return exc.code
    return rpc.Status.INTERNAL if isinstance(exc, Exception) else rpc.Status.CANCELLED


class _Instruments:
    """The tracer and the duration histogram of one side."""

    def __init__(
        self,
        side: str,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self.tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider)
        self.duration = meter.create_histogram(
            f"rpc.{side}.call.duration",
            unit="s",
            description=f"Duration of RPC calls, measured on the {side}",
            explicit_bucket_boundaries_advisory=list(_BUCKETS),
        )

    def active(self) -> bool:
        """Whether an SDK (or any implementation) stands behind the tracer or the meter.

        With the API's own providers only (no SDK configured, the global ones untouched)
        every span and measurement would be a no-op, and trio_micro's propagation of
        ``traceparent`` already does what a no-op span would: the interceptors then just
        proceed. Checked on every call (about a microsecond), so an SDK configured after
        the interceptors were made takes effect.
        """
        tracer_provider = self._tracer_provider or trace.get_tracer_provider()
        meter_provider = self._meter_provider or metrics.get_meter_provider()
        return not (_is_api_own(tracer_provider) and _is_api_own(meter_provider))


def _is_api_own(provider: object) -> bool:
    """A provider class of the API package itself: its no-op or its proxy of the global one
    before an SDK was set."""
    return type(provider).__module__.startswith(_API_MODULES)


_API_MODULES: Final = ("opentelemetry.trace", "opentelemetry.metrics")


def _finish(
    instruments: _Instruments,
    span: trace.Span,
    attributes: dict[str, str | int],
    start: float,
    code: rpc.Status,
    message: str,
    *,
    error: bool,
) -> None:
    attributes[STATUS_CODE_ATTRIBUTE] = code.value
    if code is not rpc.Status.OK:
        attributes["error.type"] = code.name
    if span.is_recording():
        span.set_attribute(STATUS_CODE_ATTRIBUTE, code.value)
        if error:
            span.set_attribute("error.type", code.name)
            span.set_status(StatusCode.ERROR, f"{code.name}: {message}")
    span.end()
    instruments.duration.record(time.perf_counter() - start, attributes)


class _Bridge:
    """What both interceptors hold: the tracer and histogram of their side."""

    __slots__ = ("_instruments",)
    _side: ClassVar[str]

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._instruments = _Instruments(self._side, tracer_provider, meter_provider)

    def __repr__(self) -> str:
        return f"otel.{type(self).__name__}()"


@final
class OtelServerInterceptor(_Bridge):
    """A server interceptor: one OpenTelemetry ``SERVER`` span per call, and the
    ``rpc.server.call.duration`` histogram. See the module docs.

    Put it after :class:`~trio_micro.rpc.AccessLogInterceptor` (which then logs the
    OpenTelemetry span's ids) and before the interceptors whose refusals should be traced.

    Args:
        tracer_provider: Default: OpenTelemetry's global one.
        meter_provider: Default: OpenTelemetry's global one.
    """

    __slots__ = ()
    _side = "server"

    async def intercept(self, call: rpc.ServerCall, proceed: Callable[[], Awaitable[None]]) -> None:
        """Run the call inside a server span; record its duration."""
        if not self._instruments.active():
            await proceed()
            return
        start = time.perf_counter()
        parent = _remote_parent(call)
        attributes: dict[str, str | int] = {
            "rpc.system": RPC_SYSTEM,
            "rpc.service": call.service,
            "rpc.method": call.method,
        }
        host, port = _split_address(call.server)
        attributes["server.address"] = host
        if port is not None:
            attributes["server.port"] = port
        span = self._instruments.tracer.start_span(
            f"{call.service}/{call.method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={**attributes, "client.address": _split_address(call.peer)[0]},
        )
        if span.is_recording():
            ours = observe.current_span()
            parent_id = None if parent is None or ours is None else ours.parent_span_id
            observe.bind_span(_trace_context_of(span, parent_id))
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await proceed()
        except BaseException as exc:
            code = _outcome(exc)
            message = exc.message if isinstance(exc, rpc.RpcError) else type(exc).__name__
            _finish(
                self._instruments, span, attributes, start, code, message,
                error=code in _SERVER_ERRORS,
            )  # fmt: skip
            raise
        else:
            _finish(self._instruments, span, attributes, start, rpc.Status.OK, "", error=False)
        finally:
            otel_context.detach(token)


@final
class OtelClientInterceptor(_Bridge):
    """A client interceptor: one OpenTelemetry ``CLIENT`` span per call, its
    ``traceparent`` sent to the server, and the ``rpc.client.call.duration`` histogram.
    See the module docs.

    Args:
        tracer_provider: Default: OpenTelemetry's global one.
        meter_provider: Default: OpenTelemetry's global one.
    """

    __slots__ = ()
    _side = "client"

    async def intercept(self, call: rpc.ClientCall, proceed: Callable[[], Awaitable[None]]) -> None:
        """Run the call inside a client span carried by ``traceparent``; record it."""
        if not self._instruments.active():
            await proceed()
            return
        start = time.perf_counter()
        parent: otel_context.Context | None = None
        if not trace.get_current_span().get_span_context().is_valid:
            ours = observe.current_span()
            if ours is not None:
                parent = _context_of(ours, ours.span_id)
        attributes: dict[str, str | int] = {
            "rpc.system": RPC_SYSTEM,
            "rpc.service": call.service,
            "rpc.method": call.method,
        }
        span = self._instruments.tracer.start_span(
            f"{call.service}/{call.method}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        ctx = span.get_span_context()
        if ctx.is_valid:
            call.metadata[observe.TRACEPARENT] = (
                f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
            )
        try:
            await proceed()
        except BaseException as exc:
            self._peer(span, call, attributes)
            code = _outcome(exc)
            message = exc.message if isinstance(exc, rpc.RpcError) else type(exc).__name__
            _finish(self._instruments, span, attributes, start, code, message, error=True)
            raise
        self._peer(span, call, attributes)
        _finish(self._instruments, span, attributes, start, rpc.Status.OK, "", error=False)

    @staticmethod
    def _peer(span: trace.Span, call: rpc.ClientCall, attributes: dict[str, str | int]) -> None:
        if not call.peer:
            return
        host, port = _split_address(call.peer)
        attributes["server.address"] = host
        if port is not None:
            attributes["server.port"] = port
        if span.is_recording():
            span.set_attribute("server.address", host)
            if port is not None:
                span.set_attribute("server.port", port)
