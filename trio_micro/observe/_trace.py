"""W3C trace context: ids, the ``traceparent`` header, and the current span.

Pure and trio-free. A :class:`TraceContext` is one span of a trace: a 32-hex-digit
``trace_id`` shared by every span of one request, a 16-hex-digit ``span_id`` of its own,
the ``parent_span_id`` of the span that caused it (``None`` at a root) and the ``sampled``
flag. On the wire it travels as a W3C ``traceparent`` value (Trace Context Level 1, the
format OpenTelemetry uses)::

    00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
    version  trace-id                        parent-id        flags (01: sampled)

:func:`parse_traceparent` follows the spec's rules for receivers: lowercase hex only, all-zero
ids and version ``ff`` rejected, version ``00`` exactly 55 characters, a higher version
parsed by its version-00 prefix (the rest ignored, only the sampled bit of the flags used).
:func:`format_traceparent` always writes version ``00``.

The current span lives in a :class:`contextvars.ContextVar`, so it follows trio's tasks like
the rest of the context: a child task sees its parent's span, a sibling never does.
:func:`use_span` / :func:`start_span` make a span current for a block and also bind
``trace_id``, ``span_id`` and ``parent_span_id`` with :func:`structlog.contextvars.
bind_contextvars`, so every record logged inside carries them. The RPC server makes each
call's span current for its handler, and the RPC client propagates the current span to the
calls it makes (see ``docs/rpc.md``).

Ids come from :func:`random.getrandbits` (the module's generator, which Python reseeds in a
forked child): fast, and random enough for ids, which need uniqueness, not secrecy.

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextvars
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, final

import structlog

__all__ = [
    "TRACEPARENT",
    "TraceContext",
    "bind_span",
    "child_of_traceparent",
    "current_span",
    "format_traceparent",
    "new_span_id",
    "new_trace",
    "new_trace_id",
    "new_traceparent",
    "parse_traceparent",
    "start_span",
    "use_span",
]

#: The metadata key (and HTTP header) that carries the trace context.
TRACEPARENT: Final = "traceparent"

_getrandbits: Final = random.getrandbits
# version-00 layout: "vv-<32 hex>-<16 hex>-ff", 55 characters; lowercase hex only.
_TRACEPARENT_RE: Final = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
# The whole of a version-00 value without surrounding whitespace: the fast path.
_V00_RE: Final = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_V00_LENGTH: Final = 55
_ZERO_TRACE_ID: Final = "0" * 32
_ZERO_SPAN_ID: Final = "0" * 16
_OWS: Final = " \t"  # optional whitespace around an HTTP header value
_HEX: Final = frozenset("0123456789abcdef")
_ODD_HEX: Final = frozenset("13579bdf")  # a last flags digit with bit 0 (sampled) set


@final
class TraceContext:
    """One span of a trace; immutable, compared and hashed by value. The constructor takes
    the attributes as arguments.

    Attributes:
        trace_id: 32 lowercase hex digits, not all zero; the same in every span of a trace.
        span_id: 16 lowercase hex digits, not all zero; this span.
        parent_span_id: The span that caused this one, or ``None`` at a root (and for a
            context parsed from ``traceparent``, whose parent the header does not carry).
        sampled: The W3C ``sampled`` flag, propagated unchanged from the root. trio_micro
            propagates it and does not act on it (the access log records every call).

    Raises:
        TypeError: An id is not a str.
        ValueError: An id is not lowercase hex of the right length, or is all zeros.
    """

    # Read-only properties over private slots: as safe as a frozen dataclass, and the
    # internal constructor (_make) stays cheap enough for every RPC call.
    __slots__ = ("_parent_span_id", "_sampled", "_span_id", "_trace_id")

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_span_id: str | None = None,
        sampled: bool = True,
    ) -> None:
        _check_id("trace_id", trace_id, 32)
        _check_id("span_id", span_id, 16)
        if parent_span_id is not None:
            _check_id("parent_span_id", parent_span_id, 16)
        self._trace_id = trace_id
        self._span_id = span_id
        self._parent_span_id = parent_span_id
        self._sampled = bool(sampled)

    @property
    def trace_id(self) -> str:
        """The trace's id: 32 lowercase hex digits."""
        return self._trace_id

    @property
    def span_id(self) -> str:
        """This span's id: 16 lowercase hex digits."""
        return self._span_id

    @property
    def parent_span_id(self) -> str | None:
        """The parent span's id, or ``None``."""
        return self._parent_span_id

    @property
    def sampled(self) -> bool:
        """The W3C ``sampled`` flag."""
        return self._sampled

    def child(self) -> TraceContext:
        """Return a new span of the same trace whose parent is this span."""
        return _make(self._trace_id, new_span_id(), self._span_id, self._sampled)

    def _key(self) -> tuple[str, str, str | None, bool]:
        return (self._trace_id, self._span_id, self._parent_span_id, self._sampled)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TraceContext):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"TraceContext(trace_id={self._trace_id!r}, span_id={self._span_id!r}, "
            f"parent_span_id={self._parent_span_id!r}, sampled={self._sampled!r})"
        )


def _check_id(name: str, value: object, length: int) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str of {length} hex digits, got {value!r}")
    if len(value) != length or not _HEX.issuperset(value) or value.count("0") == length:
        raise ValueError(
            f"{name} must be {length} lowercase hex digits, not all zero, got {value!r}"
        )


_new_context: Final = object.__new__


def _make(trace_id: str, span_id: str, parent: str | None, sampled: bool) -> TraceContext:
    """Build a TraceContext from ids known to be valid, without checking them again."""
    context: TraceContext = _new_context(TraceContext)
    context._trace_id = trace_id
    context._span_id = span_id
    context._parent_span_id = parent
    context._sampled = sampled
    return context


def new_trace_id() -> str:
    """Return a random trace id: 32 lowercase hex digits, never all zero."""
    while True:
        bits = _getrandbits(128)
        if bits:
            return bits.to_bytes(16, "big").hex()


def new_span_id() -> str:
    """Return a random span id: 16 lowercase hex digits, never all zero."""
    while True:
        bits = _getrandbits(64)
        if bits:
            # bytes.hex() is about twice as fast as an f-string; this runs for every call.
            return bits.to_bytes(8, "big").hex()


def new_trace(*, sampled: bool = True) -> TraceContext:
    """Return the root span of a new trace (fresh ids, no parent)."""
    while True:
        bits = _getrandbits(192)  # trace id and span id in one draw
        if bits >> 64 and bits & 0xFFFF_FFFF_FFFF_FFFF:
            digits = bits.to_bytes(24, "big").hex()
            return _make(digits[:32], digits[32:], None, sampled)


def new_traceparent(*, sampled: bool = True) -> str:
    """Return a ``traceparent`` value for a new trace: ``format_traceparent(new_trace())``."""
    return format_traceparent(new_trace(sampled=sampled))


def format_traceparent(context: TraceContext) -> str:
    """Return ``context`` as a version-00 ``traceparent`` value.

    Its ``span_id`` becomes the header's parent-id: the receiver's span is a child of it.
    """
    flags = "01" if context.sampled else "00"
    return f"00-{context.trace_id}-{context.span_id}-{flags}"


def parse_traceparent(value: str) -> TraceContext:
    """Parse a ``traceparent`` value into the (remote) span it names.

    The result's ``span_id`` is the header's parent-id and its ``parent_span_id`` is
    ``None``; the receiver's own span is ``parse_traceparent(value).child()``. Spaces and
    tabs around the value are ignored, as HTTP does.

    Raises:
        ValueError: ``value`` is not a valid ``traceparent`` (the message says why); per the
            spec the receiver then starts a new trace.
    """
    trace_id, span_id, sampled = _parse(value)
    return _make(trace_id, span_id, None, sampled)


def child_of_traceparent(value: str) -> TraceContext:
    """The receiver's span for a ``traceparent``: ``parse_traceparent(value).child()``.

    Raises:
        ValueError: As :func:`parse_traceparent`.
    """
    trace_id, span_id, sampled = _parse(value)
    return _make(trace_id, new_span_id(), span_id, sampled)


def _parse(value: str) -> tuple[str, str, bool]:
    """``(trace_id, parent_id, sampled)`` of a traceparent value; see parse_traceparent."""
    if type(value) is not str:
        raise ValueError(f"traceparent must be a str, got {value!r}")
    if _V00_RE.fullmatch(value) is not None:  # the common case, in one regex call
        trace_id = value[3:35]
        span_id = value[36:52]
        if trace_id != _ZERO_TRACE_ID and span_id != _ZERO_SPAN_ID:
            return trace_id, span_id, value[54] in _ODD_HEX
    text = value if len(value) == _V00_LENGTH else value.strip(_OWS)
    if _TRACEPARENT_RE.match(text) is None:
        raise ValueError(
            f"traceparent must be '<version>-<trace-id>-<parent-id>-<flags>' in lowercase "
            f"hex, such as '00-{'1' * 32}-{'2' * 16}-01', got {value!r}"
        )
    version = text[:2]
    if version == "00":
        if len(text) != _V00_LENGTH:
            raise ValueError(f"version-00 traceparent must be 55 characters, got {value!r}")
    elif version == "ff":
        raise ValueError(f"traceparent version ff is invalid, got {value!r}")
    elif len(text) > _V00_LENGTH and text[_V00_LENGTH] != "-":
        # A later version may append fields, always after a dash.
        raise ValueError(f"traceparent of version {version} has bad trailing data: {value!r}")
    trace_id = text[3:35]
    if trace_id == _ZERO_TRACE_ID:
        raise ValueError(f"traceparent trace-id is all zeros: {value!r}")
    span_id = text[36:52]
    if span_id == _ZERO_SPAN_ID:
        raise ValueError(f"traceparent parent-id is all zeros: {value!r}")
    # Only bit 0 (sampled) is defined; a later version's other flags are ignored.
    return trace_id, span_id, text[54] in _ODD_HEX


_current: Final[contextvars.ContextVar[TraceContext | None]] = contextvars.ContextVar(
    "trio_micro.observe.current_span", default=None
)


def current_span() -> TraceContext | None:
    """Return the span current in this context (task), or ``None`` outside any."""
    return _current.get()


def bind_span(span: TraceContext) -> None:
    """Make ``span`` current and bind its ids to structlog's contextvars, for good.

    Meant for a context that ends with the work it describes, such as the task of one RPC
    call (the server does this for every call); elsewhere use :func:`use_span`. Binds
    ``trace_id``, ``span_id`` and ``parent_span_id`` (unbinds that one for a root).
    """
    _current.set(span)
    _trace_id_var.set(span._trace_id)
    _span_id_var.set(span._span_id)
    if span._parent_span_id is None:
        # A root has no parent: don't let one bound by an enclosing context show through
        # (Ellipsis is structlog's "unbound"; usually nothing is bound, so skip the set).
        if _parent_span_id_var.get(...) is not ...:
            _parent_span_id_var.set(...)
    else:
        _parent_span_id_var.set(span._parent_span_id)


def _structlog_vars() -> tuple[contextvars.ContextVar[Any], ...]:
    """The context variables behind ``bind_contextvars(trace_id=..., span_id=...,
    parent_span_id=...)``: setting them directly is several times cheaper."""
    tokens = contextvars.Context().run(
        structlog.contextvars.bind_contextvars, trace_id="", span_id="", parent_span_id=""
    )
    return tuple(tokens[key].var for key in ("trace_id", "span_id", "parent_span_id"))


_trace_id_var, _span_id_var, _parent_span_id_var = _structlog_vars()


@contextmanager
def use_span(span: TraceContext) -> Iterator[TraceContext]:
    """Make ``span`` current for the block, with its ids bound for structlog.

    On exit the previous span and the previous values of ``trace_id``, ``span_id`` and
    ``parent_span_id`` in structlog's contextvars are restored (``parent_span_id`` is
    unbound inside the block when ``span`` is a root). Yields ``span``.
    """
    token = _current.set(span)
    tokens = structlog.contextvars.bind_contextvars(
        trace_id=span.trace_id, span_id=span.span_id, parent_span_id=span.parent_span_id
    )
    if span.parent_span_id is None:
        # Absent rather than null at a root; resetting the tokens restores what was there.
        structlog.contextvars.unbind_contextvars("parent_span_id")
    try:
        yield span
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
        _current.reset(token)


@contextmanager
def start_span() -> Iterator[TraceContext]:
    """Start a span for the block: a child of the current span, or a new trace's root.

    RPC calls made inside carry it as their parent, so they join its trace. Equivalent to
    ``use_span(current.child() if current else new_trace())``. Yields the new span.
    """
    parent = _current.get()
    with use_span(new_trace() if parent is None else parent.child()) as span:
        yield span
