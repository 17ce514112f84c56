from __future__ import annotations

import contextvars
import string
from collections.abc import Iterator

import pytest
import structlog
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_micro import observe
from trio_micro.observe import TraceContext, format_traceparent, parse_traceparent

W3C_EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def _clear_contextvars() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()


def hex_id(digits: int) -> st.SearchStrategy[str]:
    return st.integers(1, 16**digits - 1).map(lambda n: f"{n:0{digits}x}")


contexts = st.builds(TraceContext, hex_id(32), hex_id(16), st.none(), st.booleans())


def test_parse_the_w3c_example() -> None:
    assert parse_traceparent(W3C_EXAMPLE) == TraceContext(TRACE_ID, SPAN_ID, None, True)


@given(contexts)
def test_parse_inverts_format(context: TraceContext) -> None:
    assert parse_traceparent(format_traceparent(context)) == context


@given(contexts)
def test_format_is_version_00_lowercase(context: TraceContext) -> None:
    value = format_traceparent(context)
    assert len(value) == 55
    assert value.startswith("00-")
    assert set(value) <= set(string.hexdigits.lower() + "-")
    assert value.endswith("-01" if context.sampled else "-00")


@given(st.text(max_size=80))
def test_parse_rejects_with_value_error_only(text: str) -> None:
    try:
        context = parse_traceparent(text)
    except ValueError:
        return
    assert len(context.trace_id) == 32


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param(W3C_EXAMPLE.upper(), id="uppercase"),
        pytest.param(f"00-{'0' * 32}-{SPAN_ID}-01", id="zero-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{'0' * 16}-01", id="zero-parent-id"),
        pytest.param(f"ff-{TRACE_ID}-{SPAN_ID}-01", id="version-ff"),
        pytest.param(W3C_EXAMPLE + "-", id="v00-too-long"),
        pytest.param(W3C_EXAMPLE + "-extra", id="v00-extra-field"),
        pytest.param(W3C_EXAMPLE[:-1], id="too-short"),
        pytest.param(W3C_EXAMPLE.replace("-", "_"), id="bad-separator"),
        pytest.param(f"0x-{TRACE_ID}-{SPAN_ID}-01", id="non-hex-version"),
        pytest.param(f"00-{TRACE_ID[:-1]}g-{SPAN_ID}-01", id="non-hex-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{SPAN_ID[:-1]}.-01", id="non-hex-parent-id"),
        pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-0g", id="non-hex-flags"),
        pytest.param(f"00-{TRACE_ID}0-{SPAN_ID}-01", id="long-trace-id"),
        pytest.param(f"cc-{TRACE_ID}-{SPAN_ID}-01x", id="future-version-no-dash"),
    ],
)
def test_parse_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="traceparent"):
        parse_traceparent(value)


def test_parse_rejects_non_str() -> None:
    with pytest.raises(ValueError, match="must be a str"):
        parse_traceparent(b"00-" + TRACE_ID.encode())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("suffix", "sampled"),
    [("", True), ("-what-the-future-will-bring", True)],
)
def test_parse_accepts_a_future_version_by_its_prefix(suffix: str, sampled: bool) -> None:
    context = parse_traceparent(f"cc-{TRACE_ID}-{SPAN_ID}-01{suffix}")
    assert context == TraceContext(TRACE_ID, SPAN_ID, None, sampled)


@pytest.mark.parametrize(
    ("flags", "sampled"), [("00", False), ("01", True), ("02", False), ("ff", True)]
)
def test_parse_reads_only_the_sampled_flag(flags: str, sampled: bool) -> None:
    assert parse_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-{flags}").sampled is sampled


def test_parse_ignores_surrounding_whitespace() -> None:
    assert parse_traceparent(f" \t{W3C_EXAMPLE}\t ") == parse_traceparent(W3C_EXAMPLE)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((TRACE_ID.upper(), SPAN_ID), ValueError),
        (("0" * 32, SPAN_ID), ValueError),
        ((TRACE_ID, "0" * 16), ValueError),
        ((TRACE_ID, SPAN_ID[:-1]), ValueError),
        ((TRACE_ID, SPAN_ID, "xyz"), ValueError),
        ((TRACE_ID, 12), TypeError),
    ],
)
def test_trace_context_checks_its_ids(args: tuple[object, ...], error: type[Exception]) -> None:
    with pytest.raises(error, match="hex digits"):
        TraceContext(*args)  # type: ignore[arg-type]


def test_trace_context_is_immutable_and_hashable() -> None:
    context = TraceContext(TRACE_ID, SPAN_ID)
    with pytest.raises(AttributeError):
        context.trace_id = "x"  # type: ignore[misc]
    assert {context, TraceContext(TRACE_ID, SPAN_ID)} == {context}
    assert repr(context) == (
        f"TraceContext(trace_id={TRACE_ID!r}, span_id={SPAN_ID!r}, "
        "parent_span_id=None, sampled=True)"
    )


def test_child_is_a_new_span_of_the_same_trace() -> None:
    parent = TraceContext(TRACE_ID, SPAN_ID, sampled=False)
    child = parent.child()
    assert child.trace_id == TRACE_ID
    assert child.parent_span_id == SPAN_ID
    assert child.span_id != SPAN_ID
    assert child.sampled is False
    TraceContext(child.trace_id, child.span_id, child.parent_span_id)  # valid ids


def test_new_ids_are_valid_and_distinct() -> None:
    traces = {observe.new_trace_id() for _ in range(1000)}
    spans = {observe.new_span_id() for _ in range(1000)}
    assert len(traces) == len(spans) == 1000
    for trace_id, span_id in zip(traces, spans, strict=True):
        TraceContext(trace_id, span_id)


def test_new_trace_is_a_sampled_root() -> None:
    root = observe.new_trace()
    assert root.parent_span_id is None
    assert root.sampled


def test_no_current_span_by_default() -> None:
    assert observe.current_span() is None


def test_start_span_nests_and_restores() -> None:
    with observe.start_span() as root:
        assert observe.current_span() is root
        assert root.parent_span_id is None
        with observe.start_span() as child:
            assert observe.current_span() is child
            assert child.trace_id == root.trace_id
            assert child.parent_span_id == root.span_id
        assert observe.current_span() is root
    assert observe.current_span() is None


def test_use_span_binds_the_ids_for_structlog() -> None:
    span = TraceContext(TRACE_ID, SPAN_ID).child()
    with observe.use_span(span):
        assert structlog.contextvars.get_contextvars() == {
            "trace_id": TRACE_ID,
            "span_id": span.span_id,
            "parent_span_id": SPAN_ID,
        }
        with observe.use_span(TraceContext(TRACE_ID, "1" * 16)):
            # a root: its parent is absent, not the enclosing span's
            assert structlog.contextvars.get_contextvars() == {
                "trace_id": TRACE_ID,
                "span_id": "1" * 16,
            }
        assert structlog.contextvars.get_contextvars()["parent_span_id"] == SPAN_ID
    assert structlog.contextvars.get_contextvars() == {}


def test_records_logged_in_a_span_carry_its_ids() -> None:
    with (
        structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs,
        observe.start_span() as span,
    ):
        structlog.get_logger().info("app.work")
    assert logs == [
        {
            "event": "app.work",
            "log_level": "info",
            "trace_id": span.trace_id,
            "span_id": span.span_id,
        }
    ]


def test_bind_span_replaces_an_inherited_parent() -> None:
    root = observe.new_trace()

    def in_a_fresh_context() -> None:  # bind_span is not undone: keep it out of this thread's
        structlog.contextvars.bind_contextvars(parent_span_id="stale")
        observe.bind_span(root)
        assert observe.current_span() is root
        assert structlog.contextvars.get_contextvars() == {
            "trace_id": root.trace_id,
            "span_id": root.span_id,
        }

    contextvars.Context().run(in_a_fresh_context)
    assert observe.current_span() is None


async def test_the_span_follows_trio_tasks_but_not_siblings() -> None:
    seen: dict[str, TraceContext | None] = {}

    async def child(name: str) -> None:
        seen[name] = observe.current_span()

    async def traced_sibling() -> None:
        observe.bind_span(observe.new_trace())
        await trio.lowlevel.checkpoint()

    with observe.start_span() as span:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(traced_sibling)
            nursery.start_soon(child, "inherits")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child, "outside")
    assert seen == {"inherits": span, "outside": None}


@pytest.mark.parametrize("sampled", [True, False])
def test_new_traceparent_is_a_valid_new_root(sampled: bool) -> None:
    values = {observe.new_traceparent(sampled=sampled) for _ in range(100)}
    assert len(values) == 100
    for value in values:
        assert parse_traceparent(value).sampled is sampled
        assert format_traceparent(parse_traceparent(value)) == value


def test_child_of_traceparent_is_the_receivers_span() -> None:
    span = observe.child_of_traceparent(W3C_EXAMPLE)
    assert (span.trace_id, span.parent_span_id, span.sampled) == (TRACE_ID, SPAN_ID, True)
    assert span.span_id != SPAN_ID
    with pytest.raises(ValueError, match="all zeros"):
        observe.child_of_traceparent(f"00-{TRACE_ID}-{'0' * 16}-01")
