"""The demo's report: what the replicas' logs say, the summary, and the verdict."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from examples.user_service.service import CACHE_HIT, CACHE_MISS
from trio_micro import cli
from trio_micro.observe import CALL_EVENTS, CODE_OK

from .config import DB_QUERY_EVENT, METHOD, QUANTILES
from .processes import Child
from .run import Run

# ---------------------------------------------------------------------- the logs


@dataclass
class ReplicaLog:
    """What one replica's log says."""

    ok: int = 0  # successful users/get_user calls
    failed: dict[str, int] = field(default_factory=dict)  # failed ones, by code
    hits: int = 0
    misses: int = 0
    db_queries: int = 0
    repeated_queries: int = 0  # queries for a user this replica had queried before
    servers: set[str] = field(default_factory=set)
    malformed: int = 0
    by_worker: dict[int, ReplicaLog] = field(default_factory=dict)  # each worker's own log

    def add(self, other: ReplicaLog) -> None:
        """Count ``other`` (another process's log of the same replica) in too."""
        self.ok += other.ok
        for code, n in other.failed.items():
            self.failed[code] = self.failed.get(code, 0) + n
        self.hits += other.hits
        self.misses += other.misses
        self.db_queries += other.db_queries
        self.repeated_queries += other.repeated_queries
        self.servers |= other.servers
        self.malformed += other.malformed


class _LogLine(msgspec.Struct):
    event: str = ""
    service: str = ""
    method: str = ""
    code: str = ""
    server: str = ""
    cache: str = ""
    user_id: int = 0


def read_replica_logs(child: Child) -> ReplicaLog:
    """What a replica's logs say: its own (the supervisor's, with ``--workers``) and each
    worker's, summed, with each worker's in ``by_worker``."""
    out = read_replica_log(child.log)
    for worker in child.workers:
        if worker.log is None or worker.log == child.log:
            continue
        log = read_replica_log(worker.log)
        out.by_worker[worker.index] = log
        out.add(log)
    return out


def read_replica_log(path: Path | None) -> ReplicaLog:
    out = ReplicaLog()
    if path is None or not path.exists():
        return out
    decode = msgspec.json.Decoder(_LogLine).decode
    queried: set[int] = set()
    service, method = METHOD.split("/")
    with path.open("rb") as lines:
        for raw in lines:
            try:
                line = decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):  # either, by msgspec release
                out.malformed += 1  # e.g. a last line cut short by SIGKILL
                continue
            if line.event == DB_QUERY_EVENT:
                out.db_queries += 1
                if line.user_id in queried:
                    out.repeated_queries += 1
                queried.add(line.user_id)
            elif line.event in CALL_EVENTS and line.service == service and line.method == method:
                out.servers.add(line.server)
                if line.code == CODE_OK:
                    out.ok += 1
                    out.hits += line.cache == CACHE_HIT
                    out.misses += line.cache == CACHE_MISS
                else:
                    out.failed[line.code] = out.failed.get(line.code, 0) + 1
    return out


# ---------------------------------------------------------------------- the report


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a table with rich (boxes at a terminal and in a pipe alike)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=title, title_justify="left")
    for header in headers:
        grid.add_column(header)
    for row in rows:
        grid.add_row(*(Text(cell) for cell in row))
    Console().print(grid)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _number(value: float, digits: int = 3) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def build_summary(run: Run, logs: dict[str, ReplicaLog]) -> dict[str, Any]:
    config = run.config
    result = run.result
    replicas = []
    for child in run.replicas():
        log = logs.get(child.name, ReplicaLog())
        counts = run.counter.counts
        workers = [
            {
                "index": w.index,
                "pid": w.pid,
                "address": w.address,
                "calls": counts.get(w.address, 0),
                "log_ok": log.by_worker.get(w.index, log).ok,
                "db_queries": log.by_worker.get(w.index, log).db_queries,
                "log": str(w.log) if w.log else None,
            }
            for w in child.workers
        ]
        replicas.append(
            {
                "name": child.name,
                "address": child.address,
                "pid": child.pid,
                "workers": workers,
                "calls": sum(counts.get(w.address, 0) for w in child.workers),
                "log_ok": log.ok,
                "log_failed": log.failed,
                "log_cache_hits": log.hits,
                "log_cache_misses": log.misses,
                "db_queries": log.db_queries,
                "repeated_db_queries": log.repeated_queries,
                "malformed_log_lines": log.malformed,
                "killed_at_call": child.killed_at,
                "log": str(child.log) if child.log else None,
            }
        )
    ok = result.ok if result else 0
    cache_replies = run.sources.get("cache", 0)
    processes = [
        {
            "name": c.name,
            "pid": c.pid,
            "address": c.address,
            "returncode": c.process.returncode,
            "stop": c.stop or "not stopped",
            "clean": c.clean,
        }
        for c in run.ordered_children()
    ]
    return {
        "run_dir": str(config.run_dir),
        "users": config.users,
        "calls_requested": config.calls,
        "concurrency": config.concurrency,
        "replica_count": config.replicas,
        "ttl_s": config.ttl,
        "kill": config.kill,
        "tls": config.tls is not None,
        "calls": result.calls if result else 0,
        "ok": ok,
        "failed": result.failed if result else 0,
        "errors": dict(result.errors) if result else {},
        "first_errors": list(result.first_errors) if result else [],
        "elapsed_s": round(result.elapsed, 6) if result else None,
        "calls_per_s": round(result.throughput(), 3) if result else None,
        "latency_ms": (
            {label: _number(result.latency_ms(q)) for label, q in QUANTILES} if result else {}
        ),
        "replies_by_source": dict(run.sources),
        "cache_hit_ratio": round(cache_replies / ok, 6) if ok else None,
        "db_queries": sum(log.db_queries for log in logs.values()),
        "orders_created": run.orders_created,
        "retries": run.retries,
        "retries_throttled": run.retries_throttled,
        "replicas": replicas,
        "processes": processes,
        "leftover_processes": run.leftovers,
        "busy_ports": run.busy_ports,
        "debug_url": run.debug_url,
        "client": run.client,
        "signal": run.signal,
        "error": run.error,
        "duration_s": round(run.duration, 3),
    }


def print_summary(summary: dict[str, Any]) -> None:
    print()
    if summary["calls"]:
        latency = summary["latency_ms"]
        ratio = summary["cache_hit_ratio"]
        print(
            f"{summary['calls']:,} calls ({summary['orders_created']:,} CreateOrder, the rest "
            f"GetUser) in {summary['elapsed_s']:.2f} s: "
            f"{summary['calls_per_s']:,.0f} calls/s, {summary['ok']:,} ok, "
            f"{summary['failed']:,} failed"
        )
        print("latency: " + ", ".join(f"{label} {_ms(latency[label])}" for label, _ in QUANTILES))
        print(
            f"cache: {'-' if ratio is None else f'{ratio:.1%}'} of the replies came from the "
            f"replicas' caches; database queries: {summary['db_queries']:,} (replica logs)"
        )
        print(
            f"retries: {summary['retries']:,} calls retried after UNAVAILABLE"
            + (
                f", {summary['retries_throttled']:,} refused by the retry budget"
                if summary["retries_throttled"]
                else ""
            )
        )
        calls = max(1, summary["calls"])
        table(
            "users: calls per replica (client) and GetUser in its log",
            ("replica", "address", "calls", "share", "log ok", "db queries", "note"),
            [
                (
                    r["name"],
                    r["address"] or "-",
                    f"{r['calls']:,}",
                    f"{r['calls'] / calls:.1%}",
                    f"{r['log_ok']:,}",
                    f"{r['db_queries']:,}",
                    "" if r["killed_at_call"] is None else f"KILLED after {r['killed_at_call']:,}",
                )
                for r in summary["replicas"]
            ],
        )
        if any(len(r["workers"]) > 1 for r in summary["replicas"]):
            table(
                "calls per worker (client) and in its log",
                ("replica", "worker", "address", "pid", "calls", "log ok", "db queries"),
                [
                    (
                        r["name"],
                        str(w["index"]),
                        w["address"],
                        str(w["pid"]),
                        f"{w['calls']:,}",
                        f"{w['log_ok']:,}",
                        f"{w['db_queries']:,}",
                    )
                    for r in summary["replicas"]
                    for w in r["workers"]
                ],
            )
        if summary["errors"]:
            table(
                "errors",
                ("code", "calls"),
                [(code, f"{n:,}") for code, n in sorted(summary["errors"].items())],
            )
            for message in summary["first_errors"]:
                print(f"  e.g. {message}")
        else:
            print("errors: none")
    client = summary["client"]
    if client:
        before, after = client["live_tasks_before_load"], client["live_tasks_after_load"]
        rss = client["peak_rss_bytes"]
        print(
            f"client: {before} tasks before the load, {after} after "
            f"({'none leaked' if after <= before else f'{after - before} more: a leak?'}), "
            f"{client['task_high_water']} at most; {client['blocked_loop_steps']} steps "
            f"blocked the loop over 100 ms (longest {client['longest_step_ms']:.1f} ms)"
            + ("" if rss is None else f"; peak RSS {rss / 2**20:.0f} MiB")
        )
    table(
        "processes",
        ("process", "pid", "address", "how it stopped"),
        [(p["name"], str(p["pid"]), p["address"] or "-", p["stop"]) for p in summary["processes"]],
    )
    left, busy = summary["leftover_processes"], summary["busy_ports"]
    print(
        "leftover processes: "
        + (", ".join(left) if left else "none")
        + "; ports still in use: "
        + (", ".join(busy) if busy else "none")
    )


#: The ``--group-by`` options of the logs summary: the user service's own figures.
GROUP_BY = ["cache", "worker"]


def logs_summary(run_dir: Path) -> int:
    """Print ``trio-micro logs summary RUN_DIR ...``; return its exit code.

    The user service's own figures come from the generic options: calls grouped by the
    ``cache`` field it binds, and its ``users.db.query`` events counted, per worker too.
    """
    options = [*(f for g in GROUP_BY for f in ("--group-by", g)), "--count-event", DB_QUERY_EVENT]
    print(f"\n$ trio-micro logs summary {run_dir} {' '.join(options)}", flush=True)
    code = cli.main(["logs", "summary", str(run_dir), *options])
    sys.stdout.flush()
    return code


def verdict(summary: dict[str, Any]) -> list[str]:
    """What went wrong, one phrase each; empty when the demo succeeded."""
    problems = []
    if summary["error"]:
        problems.append(summary["error"])
    if summary["signal"]:
        problems.append(f"interrupted by {summary['signal']}")
    if summary["failed"]:
        problems.append(f"{summary['failed']:,} calls failed")
    if summary["calls"] != summary["calls_requested"] and not summary["signal"]:
        problems.append(f"{summary['calls']:,} of {summary['calls_requested']:,} calls made")
    problems += [f"{p['name']} {p['stop']}" for p in summary["processes"] if not p["clean"]]
    if summary["leftover_processes"]:
        problems.append("processes left behind")
    if summary["busy_ports"]:
        problems.append("ports still in use")
    return problems
