"""The service graph from call records: edges by parent links, in any order, bounded."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from trio_micro.analysis import (
    CLIENT,
    ServiceGraph,
    ServiceGraphBuilder,
    build_service_graph,
    render_html_report,
    render_service_graph,
    summarize,
)

from ._records import record


def edges(graph: ServiceGraph) -> dict[tuple[str, str], tuple[int, int]]:
    return {(e.caller, e.callee): (e.calls, e.errors) for e in graph.edges}


def a_call(n: int, *, code: str = "OK") -> list:  # type: ignore[type-arg]
    """gateway (root) -> orders -> users, as logged: children first."""
    return [
        record(service="users", span_id=f"u{n}", parent_span_id=f"o{n}", duration_ms=n, code=code),
        record(service="orders", span_id=f"o{n}", parent_span_id=f"g{n}", duration_ms=2 * n),
        record(service="gateway", span_id=f"g{n}", duration_ms=3 * n),
    ]


def test_callers_come_from_the_parent_spans() -> None:
    graph = build_service_graph([*a_call(1), *a_call(2, code="UNAVAILABLE")])
    assert edges(graph) == {
        (CLIENT, "gateway"): (2, 0),
        ("gateway", "orders"): (2, 0),
        ("orders", "users"): (2, 1),
    }
    assert graph.services() == sorted([CLIENT, "gateway", "orders", "users"])


def test_the_order_of_the_records_does_not_matter() -> None:
    records = [*a_call(1), *a_call(2)]
    assert edges(build_service_graph(records)) == edges(build_service_graph(records[::-1]))


def test_an_edge_has_the_p99_of_the_callee_durations() -> None:
    records = [r for n in range(1, 101) for r in a_call(n)]
    users = next(e for e in build_service_graph(records).edges if e.callee == "users")
    assert users.p99_ms == pytest.approx(99, rel=0.02)


def test_a_parent_missing_from_the_logs_makes_the_client_the_caller() -> None:
    graph = build_service_graph([record(service="users", span_id="u", parent_span_id="gone")])
    assert edges(graph) == {(CLIENT, "users"): (1, 0)}
    assert graph.forgotten == 0


def test_memory_is_bounded_and_what_is_forgotten_is_counted() -> None:
    builder = ServiceGraphBuilder(max_spans=2)
    for n in range(5):  # children whose parents come later
        builder.add(record(service="users", span_id=f"u{n}", parent_span_id=f"o{n}"))
    for n in range(5):
        builder.add(record(service="orders", span_id=f"o{n}"))
    graph = builder.build()
    assert edges(graph) == {
        (CLIENT, "users"): (3, 0),
        ("orders", "users"): (2, 0),
        (CLIENT, "orders"): (5, 0),
    }
    assert graph.forgotten == 3


@pytest.mark.parametrize("max_spans", [0, -1, 1.5, True])
def test_max_spans_must_be_a_positive_int(max_spans: object) -> None:
    with pytest.raises((TypeError, ValueError), match="max_spans"):
        ServiceGraphBuilder(max_spans=max_spans)  # type: ignore[arg-type]


def test_the_svg_labels_each_edge_with_calls_and_p99() -> None:
    svg = render_service_graph(build_service_graph([*a_call(1), *a_call(2, code="INTERNAL")]))
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert svg.count("marker-end") == 3
    assert ElementTree.fromstring(svg).tag.endswith("svg")  # well-formed
    assert "2 calls · p99 2" in svg  # orders -> users
    assert "1 errors" in svg
    for name in ("gateway", "orders", "users", CLIENT):
        assert f">{name}</text>" in svg


def test_a_service_calling_itself_or_back_is_drawn() -> None:
    records = [
        record(service="a", span_id="a2", parent_span_id="a1"),
        record(service="b", span_id="b1", parent_span_id="a2"),
        record(service="a", span_id="a3", parent_span_id="b1"),
        record(service="a", span_id="a1"),
    ]
    svg = render_service_graph(build_service_graph(records))
    assert svg.count("marker-end") == 4
    ElementTree.fromstring(svg)


def test_an_empty_graph_says_so() -> None:
    assert "no calls" in render_service_graph(build_service_graph([]))


def test_the_html_report_has_a_service_graph_section_when_given_one() -> None:
    records = a_call(1)
    graph = build_service_graph(records)
    assert "Service graph" in render_html_report(summarize(records), graph=graph)
    assert "Service graph" not in render_html_report(summarize(records))


def test_an_edge_past_the_next_column_goes_round_below_the_boxes() -> None:
    records = [
        record(service="users", span_id="u", parent_span_id="o"),
        record(service="orders", span_id="o"),
        record(service="users", span_id="u2"),  # the client calls users directly too
    ]
    svg = render_service_graph(build_service_graph(records))
    arrows = [p.get("d", "") for p in ElementTree.fromstring(svg).iter() if p.get("marker-end")]
    assert [" C" in d for d in arrows] == [False, True, False]  # client -> users is the curve
