"""The demo's report of the whole system, from the logs: per-service tables, the
waterfall of one of the slowest CreateOrders, and report.html with the service graph."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from trio_micro import analysis, cli
from trio_micro.observe import CODE_OK, CallRecord

from .config import DB_QUERY_EVENT, NOTIFIER, ORDERS, SERVICE
from .report import table
from .run import Run

#: The notifier's log event for one notification delivered.
NOTIFY_SENT = "notifier.sent"
#: The share of the slowest CreateOrders the waterfall is picked from.
SLOWEST_SHARE = 0.01


def log_files(run_dir: Path) -> list[Path]:
    """Every JSON-lines log of the run, sorted."""
    return sorted(run_dir.glob("*.jsonl"))


def read_call_records(run_dir: Path) -> list[CallRecord]:
    """The access-log records of every process of the run."""
    records: list[CallRecord] = []
    for path in log_files(run_dir):
        with path.open("rb") as lines:
            records += analysis.iter_call_records(lines)
    return records


def _p99(durations: list[float]) -> float | None:
    return analysis.LatencySketch(durations).quantile(0.99) if durations else None


def service_tables(run: Run, records: list[CallRecord]) -> dict[str, list[dict[str, Any]]]:
    """Per service, one row per replica: the client's calls to it, and what its log says
    (calls, failures, p99 of the successes, successes by method)."""
    by_server: dict[str, list[CallRecord]] = {}
    for r in records:
        by_server.setdefault(r.server or "", []).append(r)
    out: dict[str, list[dict[str, Any]]] = {}
    for service in (SERVICE, ORDERS):
        rows = []
        for child in run.replicas(service):
            mine = [r for w in child.workers for r in by_server.get(w.address, ())]
            counts = run.counter.counts
            methods: dict[str, int] = {}  # successful calls by method
            for r in mine:
                if r.code == CODE_OK:
                    methods[r.method] = methods.get(r.method, 0) + 1
            p99 = _p99([r.duration_ms for r in mine if r.code == CODE_OK])
            rows.append(
                {
                    "name": child.name,
                    "address": child.address,
                    "client_calls": sum(counts.get(w.address, 0) for w in child.workers),
                    "log_calls": len(mine),
                    "log_failed": sum(r.code != CODE_OK for r in mine),
                    "methods": methods,
                    "p99_ms": None if p99 is None else round(p99, 3),
                    "killed_at_call": child.killed_at,
                }
            )
        if rows:
            out[service] = rows
    return out


def notifier_figures(run: Run) -> dict[str, Any] | None:
    """What the notifier did: notifications sent (its log), and its saved cursor."""
    child = next((c for c in run.children if c.name == NOTIFIER), None)
    if child is None or child.log is None:
        return None
    sent = 0
    if child.log.exists():
        needle = f'"event":"{NOTIFY_SENT}"'.encode()
        with child.log.open("rb") as lines:
            sent = sum(needle in line for line in lines)
    cursor_file = run.config.run_dir / "data" / "notifier.cursor"
    text = cursor_file.read_text().strip() if cursor_file.exists() else ""
    return {
        "sent": sent,
        "cursor": int(text) if text.isdigit() else None,
        "orders_created": run.orders_created,
    }


def pick_trace(records: list[CallRecord]) -> dict[str, Any] | None:
    """A CreateOrder that crossed two services (its GetUser is in the users logs), the
    slowest such among the slowest 1% of the CreateOrders (or of all, when none of those
    crossed: the others found their user in the orders cache)."""
    creates = [r for r in records if r.service == ORDERS and r.method == "create_order"]
    creates = [r for r in creates if r.code == CODE_OK and r.span_id and r.trace_id]
    if not creates:
        return None
    called_users = {r.parent_span_id for r in records if r.service == SERVICE}
    durations = sorted(r.duration_ms for r in creates)
    threshold = durations[max(0, math.ceil(len(durations) * (1 - SLOWEST_SHARE)) - 1)]
    crossing = [r for r in creates if r.span_id in called_users]
    slowest = [r for r in crossing if r.duration_ms >= threshold]
    pool = slowest or crossing
    if not pool:
        return None
    pick = max(pool, key=lambda r: r.duration_ms)
    return {
        "trace_id": pick.trace_id,
        "duration_ms": pick.duration_ms,
        "in_slowest_1pct": bool(slowest),
        "p99_threshold_ms": threshold,
        "create_orders": len(creates),
    }


def print_services(summary: dict[str, Any]) -> None:
    """The per-service tables, and the notifier's line."""
    for service, rows in summary.get("services", {}).items():
        table(
            f"{service}: calls per replica (client) and in its log",
            ("replica", "client calls", "log calls", "failed", "p99", "ok by method"),
            [
                (
                    r["name"] + ("" if r["killed_at_call"] is None else " (killed)"),
                    f"{r['client_calls']:,}",
                    f"{r['log_calls']:,}",
                    f"{r['log_failed']:,}",
                    "-" if r["p99_ms"] is None else f"{r['p99_ms']:.2f} ms",
                    ", ".join(f"{m} {n:,}" for m, n in sorted(r["methods"].items())) or "-",
                )
                for r in rows
            ],
        )
    notifier = summary.get("notifier")
    if notifier:
        print(
            f"notifier: {notifier['sent']:,} notifications sent for "
            f"{notifier['orders_created']:,} orders created; every order up to "
            f"{notifier['cursor']} done (the rest is handed back to its next run)"
        )


def print_trace(run_dir: Path, trace: dict[str, Any] | None) -> int:
    """Print ``trio-micro logs trace ID RUN_DIR``; return its exit code (0 when no trace)."""
    if trace is None:
        print("\nno CreateOrder crossed two services: no waterfall to show")
        return 0
    where = "the slowest 1%" if trace["in_slowest_1pct"] else "all (none of the slowest 1% did)"
    print(
        f"\nthe slowest CreateOrder that called users, among {where} of "
        f"{trace['create_orders']:,} CreateOrders (p99 {trace['p99_threshold_ms']:.2f} ms):"
    )
    print(f"$ trio-micro logs trace {trace['trace_id']} {run_dir}", flush=True)
    code = cli.main(["logs", "trace", trace["trace_id"], str(run_dir)])
    sys.stdout.flush()
    return code


def write_report(
    run_dir: Path,
    report: Path,
    records: list[CallRecord],
    trace: dict[str, Any] | None,
    *,
    group_by: list[str],
) -> None:
    """Write report.html: the logs' summary, the service graph and the picked trace."""
    summary = analysis.summarize_files(
        log_files(run_dir), group_by=group_by, count_events=[DB_QUERY_EVENT]
    )
    graph = analysis.build_service_graph(records)
    shown = analysis.build_trace(records, trace["trace_id"]) if trace else None
    html = analysis.render_html_report(summary, title="trio-micro demo", trace=shown, graph=graph)
    report.write_text(html, encoding="utf-8")
    edges = ", ".join(f"{e.caller} -> {e.callee} {e.calls:,}" for e in graph.edges)
    print(f"\nservice graph (in {report.name}): {edges}")
