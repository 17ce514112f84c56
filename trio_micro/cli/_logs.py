"""``trio-micro logs``: summaries, traces, slow calls and errors of JSON-lines access logs.

This module parses arguments, expands folders into files and formats results; the
reading and summarising is :func:`trio_micro.analysis.summarize_files` (and
:func:`~trio_micro.analysis.find_trace_records`).

Exit codes (:mod:`._common`): 0 done (``trace``: the trace was found); 1 an input can't be
read, an option is refused, or the report can't be written (one line on stderr), or
``trace`` found no call with the trace id; 2 malformed arguments; 3 (``summary``,
``slow``, ``errors``) lines were read but none was a call record and some were malformed;
130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from ..analysis import (
    RELATIVE_ERROR,
    LogSummary,
    RecordFilter,
    SummaryBuilder,
    summarize_files,
)
from ._common import CommandError, epilog, integer, run_command, timestamp
from ._output import print_json, print_table, safe_text

if TYPE_CHECKING:
    from ..analysis import Trace

# The process pool, the trace and the HTML report are imported where they are used: a
# small input should not pay for them at start-up.

__all__: list[str] = []  # internal to the cli package

#: ``summary``, ``slow``, ``errors``: lines were read, none was a call record and some were
#: malformed (not an access log?).
EXIT_NO_RECORDS: Final = 3

_SUFFIXES: Final = (".jsonl", ".log")
_METHOD_COLUMNS: Final = (  # then one per --group-by field
    "method",
    "calls",
    "errors",
    "err%",
    "p50",
    "p90",
    "p99",
    "max",
    "calls/s",
)


def add_logs_parser(subparsers: Any) -> None:
    """Add the ``logs`` command group to the ``trio-micro`` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--since", type=timestamp, help="only calls at or after (ISO-8601)")
    common.add_argument("--until", type=timestamp, help="only calls before (ISO-8601)")
    common.add_argument("--service", action="append", default=[], help="only this service")
    common.add_argument(
        "--method", action="append", default=[], help="only this method (Method or service/Method)"
    )
    common.add_argument("--code", action="append", default=[], help="only this status code")
    common.add_argument("--json", action="store_true", help="print JSON for machines")
    common.add_argument("--html", type=Path, metavar="FILE", help="also write an HTML report")
    common.add_argument(
        "--jobs", type=integer(1), default=None, help="worker processes (default: CPUs)"
    )
    common.add_argument(
        "--group-by",
        action="append",
        default=[],
        metavar="FIELD",
        help="also count each method's calls by the values of this log field (e.g. cache)",
    )
    common.add_argument(
        "--count-event",
        action="append",
        default=[],
        metavar="NAME",
        help="also count the records of this event per server (e.g. db.query)",
    )

    # The exit codes, in the --help of `logs` and of each of its commands.
    helps = {
        "epilog": epilog(
            ok="done (trace: 1 when no call has the trace id)",
            more="  3    summary, slow, errors: no line of the input was a call record and some "
            "were malformed",
        ),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
    logs = subparsers.add_parser("logs", help="analyse JSON-lines access logs", **helps)
    commands = logs.add_subparsers(dest="logs_command", metavar="COMMAND", required=True)
    summary = commands.add_parser(
        "summary", parents=[common], **helps, help="latency, errors, throughput per service/method"
    )
    summary.add_argument("--top", type=integer(0), default=10, help="slowest calls kept")
    summary.set_defaults(handler=_cmd_summary)
    trace = commands.add_parser(
        "trace", parents=[common], **helps, help="the call tree of one trace across services"
    )
    trace.add_argument("trace_id", metavar="TRACE_ID")
    trace.set_defaults(handler=_cmd_trace, top=10)
    slow = commands.add_parser("slow", parents=[common], **helps, help="the slowest calls")
    slow.add_argument("--top", type=integer(0), default=10, help="how many (default 10)")
    slow.set_defaults(handler=_cmd_slow)
    errors = commands.add_parser(
        "errors", parents=[common], **helps, help="errors by code, with samples"
    )
    errors.set_defaults(handler=_cmd_errors, top=10)
    for command in (summary, trace, slow, errors):
        # After each command's own positionals (TRACE_ID), so that they are not taken.
        command.add_argument(
            "paths",
            nargs="*",
            metavar="PATH",
            help="log files, folders (every *.jsonl and *.log inside) or - for stdin (default)",
        )


def run_logs(args: argparse.Namespace) -> int:
    """Run the parsed ``logs`` command; return the exit code."""
    handler: Callable[[argparse.Namespace], int] = args.handler
    return run_command("logs", lambda: handler(args))


# --- options -------------------------------------------------------------------------------


def _filter(args: argparse.Namespace) -> RecordFilter:
    return RecordFilter(
        since=args.since,
        until=args.until,
        services=frozenset(args.service),
        methods=frozenset(args.method),
        codes=frozenset(args.code),
    )


# --- inputs -----------------------------------------------------------------------------


def _expand(paths: Sequence[str]) -> list[Path | None]:
    """Files to read, in order; ``None`` is stdin."""
    if not paths:
        return [None]
    out: list[Path | None] = []
    for text in paths:
        if text == "-":
            out.append(None)
            continue
        path = Path(text)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        elif path.is_file():
            out.append(path)
        elif path.exists():
            raise CommandError(f"not a regular file or folder: {text!r}")
        else:
            raise CommandError(f"no such file or folder: {text!r}")
    return out


#: Inputs of at least this many bytes get a progress display when stderr is a terminal.
PROGRESS_MIN_BYTES: Final = 64 * 1024 * 1024

#: Said on stderr when the log is read from a terminal (``trio-micro logs summary`` alone).
WAITING_ON_TERMINAL: Final = (
    "trio-micro logs: reading JSON lines from the terminal (stdin); "
    "end with Ctrl-D, or name log files or folders as arguments"
)


@contextlib.contextmanager
def _reading(paths: Sequence[str]) -> Iterator[list[Path | IO[bytes]]]:
    """The inputs to read; meanwhile, tell a person at a terminal what is going on.

    Reading stdin that is a terminal says so on stderr (the command would otherwise seem to
    hang). Reading files of :data:`PROGRESS_MIN_BYTES` or more with stderr on a terminal
    shows a progress line there (what is read, how much, the time so far; rich, imported
    only then), which disappears when done. Nothing of this goes to stdout.
    """
    expanded = _expand(paths)
    inputs: list[Path | IO[bytes]] = [sys.stdin.buffer if p is None else p for p in expanded]
    if None in expanded and sys.stdin.isatty():
        print(WAITING_ON_TERMINAL, file=sys.stderr, flush=True)
    files = [p for p in expanded if p is not None]
    size = sum(p.stat().st_size for p in files)
    if size < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield inputs
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    what = f"{len(files)} file{'s' * (len(files) != 1)}, {size / 2**20:,.0f} MiB"
    with Progress(
        SpinnerColumn(),
        TextColumn(f"reading {what}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        progress.add_task("read", total=None)
        yield inputs


def _summarize(args: argparse.Namespace) -> LogSummary:
    try:
        with _reading(args.paths) as inputs:
            return summarize_files(
                inputs,
                jobs=args.jobs,
                filter=_filter(args),
                slowest=args.top,
                group_by=args.group_by,
                count_events=args.count_event,
            )
    except ValueError as exc:  # a --group-by or --count-event the summary refuses
        raise CommandError(str(exc)) from None


# --- commands ---------------------------------------------------------------------------


def _cmd_summary(args: argparse.Namespace) -> int:
    summary = _summarize(args)
    _maybe_html(args, summary)
    if args.json:
        _print_json(summary.to_dict())
        return _no_records(summary)
    out = _Output()
    out.summary_header(summary)
    out.table(
        "Methods",
        (*_METHOD_COLUMNS, *summary.group_by),
        [
            (
                f"{m.service}/{m.method}",
                f"{m.calls:,}",
                f"{m.errors:,}",
                f"{m.error_rate:.2%}",
                _ms(m.p50_ms),
                _ms(m.p90_ms),
                _ms(m.p99_ms),
                _ms(m.max_ms),
                "-" if m.throughput is None else f"{m.throughput:,.1f}",
                *(_shares(m.field_shares(name)) for name in summary.group_by),
            )
            for m in summary.methods()
        ],
    )
    out.table(
        "Replicas (by the server that served the call)",
        ("method", "replica", "calls", "share", "errors", "mean", "p50", "p99", "max"),
        [
            (
                f"{m.service}/{m.method}",
                p.server or "-",
                f"{p.calls:,}",
                f"{p.share:.1%}",
                f"{p.errors:,}",
                _ms(p.mean_ms),
                _ms(p.p50_ms),
                _ms(p.p99_ms),
                _ms(p.max_ms),
            )
            for m in summary.methods()
            for p in m.replicas
        ],
        left=2,
    )
    if summary.event_counts:
        out.table(
            "Events counted",
            ("event", "replica", "records"),
            [
                (event, server or "-", f"{n:,}")
                for event, servers in summary.event_counts.items()
                for server, n in servers.items()
            ],
            left=2,
        )
    out.input_footer(summary)
    return _no_records(summary)


def _cmd_slow(args: argparse.Namespace) -> int:
    summary = _summarize(args)
    _maybe_html(args, summary)
    data = summary.to_dict()
    if args.json:
        _print_json({"slowest": data["slowest"], "input": data["input"]})
        return _no_records(summary)
    out = _Output()
    out.table(
        f"{len(summary.slowest)} slowest calls",
        ("duration", "method", "code", "replica", "time (UTC)", "trace_id", "span_id"),
        [
            (
                _ms(c.duration_ms),
                f"{c.service}/{c.method}",
                c.code,
                c.server or "-",
                c.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
                c.trace_id or "-",
                c.span_id or "-",
            )
            for c in summary.slowest
        ],
        align="rllllll",
    )
    out.input_footer(summary)
    return _no_records(summary)


def _cmd_errors(args: argparse.Namespace) -> int:
    summary = _summarize(args)
    _maybe_html(args, summary)
    data = summary.to_dict()
    if args.json:
        _print_json(
            {
                "errors": data["errors"],
                "calls": data["calls"],
                "errors_by_code": data["errors_by_code"],
                "recent_errors": data["recent_errors"],
                "input": data["input"],
            }
        )
        return _no_records(summary)
    out = _Output()
    out.line(f"{summary.errors:,} errors in {summary.calls:,} calls")
    out.table(
        "Errors by code",
        ("service", "method", "code", "calls"),
        [(s, m, c, f"{n:,}") for s, m, c, n in summary.error_counts()],
        left=3,
    )
    out.table(
        "Most recent errors",
        ("time (UTC)", "method", "code", "replica", "message", "trace_id"),
        [
            (
                e.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
                f"{e.service}/{e.method}",
                e.code,
                e.server or "-",
                e.message,
                e.trace_id or "-",
            )
            for e in summary.recent_errors
        ],
        left=6,
    )
    out.input_footer(summary)
    return _no_records(summary)


def _cmd_trace(args: argparse.Namespace) -> int:
    record_filter = _filter(args)
    from ..analysis import build_trace, find_trace_records

    with _reading(args.paths) as inputs:
        found = find_trace_records(inputs, args.trace_id)
    records = [r for r in found if record_filter.matches(r)]
    trace = build_trace(records, args.trace_id)
    if args.html is not None:
        builder = SummaryBuilder(filter=record_filter)
        builder.add(records)
        _write_html(args.html, builder.build(), trace)
    if args.json:
        _print_json(_trace_dict(trace))
        return 0 if trace.span_count else 1
    out = _Output()
    if not trace.span_count:
        out.line(f"no calls with trace_id {args.trace_id!r}")
        return 1
    out.waterfall(trace)
    return 0


def _trace_dict(trace: Trace) -> dict[str, Any]:
    return {
        "trace_id": trace.trace_id,
        "start": None if trace.start is None else trace.start.isoformat().replace("+00:00", "Z"),
        "duration_ms": trace.duration_ms,
        "span_count": trace.span_count,
        "spans": [
            {
                "depth": depth,
                "service": s.service,
                "method": s.method,
                "server": s.server,
                "peer": s.peer,
                "code": s.code,
                "span_id": s.span_id,
                "parent_span_id": s.parent_span_id,
                "start_offset_ms": s.start_offset_ms,
                "duration_ms": s.duration_ms,
                "message": s.message,
            }
            for depth, s in trace.walk()
        ],
    }


def _no_records(summary: LogSummary) -> int:
    """0, or :data:`EXIT_NO_RECORDS` (with one line on stderr) when lines were read but
    none was a call record and some were malformed: the input is not an access log."""
    stats = summary.input
    if stats.records or stats.filtered_out or not stats.malformed_total:
        return 0
    print(
        safe_text(
            f"trio-micro logs: error: no line of the input is a call record "
            f"({stats.malformed_total:,} malformed lines): is it an access log?"
        ),
        file=sys.stderr,
    )
    return EXIT_NO_RECORDS


# --- output -----------------------------------------------------------------------------


def _ms(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


def _shares(shares: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{value} {share:.1%}" for value, share in shares) or "-"


def _print_json(data: object) -> None:
    print_json(data, indent=2)


def _maybe_html(args: argparse.Namespace, summary: LogSummary) -> None:
    if args.html is not None:
        _write_html(args.html, summary, None)


def _write_html(path: Path, summary: LogSummary, trace: Trace | None) -> None:
    from ..analysis import render_html_report

    try:
        path.write_text(render_html_report(summary, trace=trace), encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write the report to {str(path)!r}: {exc.strerror}") from exc
    print(safe_text(f"wrote {path}"), file=sys.stderr)


class _Output:
    """Tables with rich at a terminal, aligned plain text otherwise."""

    def __init__(self) -> None:
        self._rich = sys.stdout.isatty()

    def line(self, text: str) -> None:
        print(safe_text(text))

    def summary_header(self, summary: LogSummary) -> None:
        first, last = summary.first, summary.last
        if first is None or last is None:
            self.line("no call records")
            return
        latency = summary.latency()
        self.line(
            f"{summary.calls:,} calls, {summary.errors:,} errors, "
            f"{first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC; "
            f"p50 {_ms(latency.quantile(0.5))}, p99 {_ms(latency.quantile(0.99))}, "
            f"max {_ms(latency.max)} (latencies within {RELATIVE_ERROR:.0%})"
        )

    def input_footer(self, summary: LogSummary) -> None:
        stats = summary.input
        parts = [f"{stats.records:,} call records"]
        if stats.filtered_out:
            parts.append(f"{stats.filtered_out:,} filtered out")
        if stats.other_events:
            parts.append(f"{stats.other_events:,} other events")
        if stats.malformed_total:
            kinds = ", ".join(f"{k}: {n:,}" for k, n in stats.malformed.items())
            parts.append(f"{stats.malformed_total:,} malformed lines ({kinds})")
        self.line("input: " + "; ".join(parts))
        for kind, example in stats.malformed_examples.items():
            self.line(f"  first {kind}: {example}")

    def table(
        self,
        title: str,
        headers: Sequence[str],
        rows: Sequence[Sequence[str]],
        left: int = 1,
        *,
        align: str | None = None,
    ) -> None:
        """Print a table; ``align`` ("l"/"r" per column) overrides ``left``."""
        if align is None:
            align = "l" * left + "r" * (len(headers) - left)
        if not self._rich:
            print()
        print_table(title, headers, rows, align=align)
        if not self._rich:
            print()

    def waterfall(self, trace: Trace) -> None:
        width = 40
        total = trace.duration_ms or 1.0
        rows = []
        for depth, span in trace.walk():
            start = round(width * span.start_offset_ms / total)
            length = max(1, round(width * span.duration_ms / total))
            bar = " " * start + "#" * min(length, width - start if start < width else 1)
            rows.append(
                (
                    "  " * depth + f"{span.service}/{span.method}",
                    span.server or "-",
                    span.code,
                    f"+{span.start_offset_ms:.3f}",
                    _ms(span.duration_ms),
                    bar.ljust(width),
                )
            )
        self.line(f"trace {trace.trace_id}: {trace.span_count} spans, {_ms(trace.duration_ms)}")
        self.table(
            "",
            ("call", "replica", "code", "start ms", "duration", "timeline"),
            rows,
            align="lllrrl",
        )
