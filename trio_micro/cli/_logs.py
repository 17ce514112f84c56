"""``trio-micro logs``: summaries, traces, slow calls and errors of JSON-lines access logs.

Theory of operation: inputs (files, folders, stdin) are read in binary chunks of
:data:`CHUNK_SIZE`, cut at the last newline, and handed whole to the analysis layer, which
decodes a chunk with one msgspec call. Large inputs are cut into byte ranges aligned to
line starts and summarised by a pool of worker processes (one per available CPU); their
:class:`~trio_micro.analysis.LogSummary` objects merge exactly. Memory per process is about
one chunk and its decoded records, whatever the size of the log.

Exit codes (:mod:`._common`): 0 done (``trace``: the trace was found); 1 an input can't be
read or the report can't be written (one line on stderr), or ``trace`` found no call with
the trace id; 2 malformed arguments; 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from ..analysis import (
    DB_QUERY_EVENT,
    RELATIVE_ERROR,
    LogSummary,
    RecordFilter,
    SummaryBuilder,
    merge_summaries,
)
from ._common import (
    CommandError,
    epilog,
    integer,
    print_json,
    print_table,
    run_command,
    timestamp,
)

if TYPE_CHECKING:
    from ..analysis import Trace

# The process pool, the trace and the HTML report are imported where they are used: a
# small input should not pay for them at start-up.

__all__: list[str] = []  # internal to the cli package

#: Bytes read at a time (one chunk is decoded at once).
CHUNK_SIZE: Final = 4 * 1024 * 1024
#: Inputs smaller than this are summarised in-process (a pool costs more than it saves).
PARALLEL_MIN_BYTES: Final = 24 * 1024 * 1024
_SUFFIXES: Final = (".jsonl", ".log")
_PREADV: Final = hasattr(os, "preadv")
_ADVISE: Final = hasattr(os, "posix_fadvise")


@dataclass(frozen=True, slots=True)
class _Options:
    filter: RecordFilter
    slowest: int


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

    # The exit codes, in the --help of `logs` and of each of its commands.
    helps = {
        "epilog": epilog(ok="done (trace: 1 when no call has the trace id)"),
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


def _options(args: argparse.Namespace) -> _Options:
    return _Options(
        filter=RecordFilter(
            since=args.since,
            until=args.until,
            services=frozenset(args.service),
            methods=frozenset(args.method),
            codes=frozenset(args.code),
        ),
        slowest=args.top,
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


def _chunks(stream: IO[bytes], limit: int | None = None) -> Iterator[bytes]:
    """Yield runs of whole lines (the last may lack its newline) from ``stream``.

    Reads at most ``limit`` bytes when given.
    """
    pending = b""
    remaining = limit
    while True:
        size = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
        data = stream.read(size) if size else b""
        if not data:
            break
        if remaining is not None:
            remaining -= len(data)
        cut = data.rfind(b"\n")
        if cut < 0:
            pending += data
            continue
        yield pending + data[: cut + 1]
        pending = data[cut + 1 :]
    if pending:
        yield pending


def _range_chunks(path: str, start: int, end: int) -> Iterator[bytearray]:
    """Yield runs of whole lines (the last may lack its newline) of bytes ``[start, end)``
    of the file at ``path``: the same chunks as :func:`_chunks`, with less copying.

    Every item is the same ``bytearray``, refilled by the next step: use it before asking
    for the next. Each read (``os.preadv``) goes into it after the unfinished line that the
    previous chunk left, so a chunk costs one copy of the data and no allocation (a new
    4 MiB ``bytes`` per read costs page faults, and joining the unfinished line to it two
    more copies).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        buffer = bytearray()
        kept = 0  # bytes of an unfinished line at the start of the buffer
        pos = start
        while pos < end:
            if _ADVISE:  # the kernel reads the next chunk while this one is summarised
                os.posix_fadvise(fd, pos + CHUNK_SIZE, CHUNK_SIZE, os.POSIX_FADV_WILLNEED)
            want = min(CHUNK_SIZE, end - pos)
            # Resizing by a little within the capacity that the buffer keeps does not
            # reallocate.
            if len(buffer) > kept + want:
                del buffer[kept + want :]
            else:
                buffer.extend(bytes(kept + want - len(buffer)))
            view = memoryview(buffer)
            try:
                got = os.preadv(fd, [view[kept:]], pos)
            finally:
                view.release()
            if not got:  # the file shrank
                break
            pos += got
            kept += got
            del buffer[kept:]
            cut = buffer.rfind(b"\n")
            if cut < 0:  # no line end yet: read on
                continue
            tail = bytes(buffer[cut + 1 :])
            del buffer[cut + 1 :]
            yield buffer
            # Same length: a buffer cut to a fraction of its size gives its memory back.
            buffer[: len(tail)] = tail
            kept = len(tail)
        if kept:  # the last line, without its newline
            del buffer[kept:]
            yield buffer
    finally:
        os.close(fd)


def _ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """Cut ``path`` into at most ``parts`` byte ranges, each starting at a line start."""
    size = path.stat().st_size
    if parts <= 1 or size < 2 * CHUNK_SIZE:
        return [(0, size)]
    bounds = [0]
    with path.open("rb") as f:
        for i in range(1, parts):
            f.seek(size * i // parts)
            f.readline()  # to the start of the next line
            position = f.tell()
            if bounds[-1] < position < size:
                bounds.append(position)
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def _summarize_range(path: str, start: int, end: int, options: _Options) -> LogSummary:
    """Worker: summarise bytes ``[start, end)`` of ``path``."""
    # The cyclic GC finds nothing to free here (records are acyclic) but would walk
    # millions of young objects; pausing it roughly halves the time.
    enabled = gc.isenabled()
    gc.disable()
    try:
        builder = SummaryBuilder(filter=options.filter, slowest=options.slowest)
        if _PREADV:
            for chunk in _range_chunks(path, start, end):
                builder.add_json_lines(chunk)
        else:  # pragma: no cover - no os.preadv (Windows)
            with open(path, "rb") as f:
                f.seek(start)
                for data in _chunks(f, end - start):
                    builder.add_json_lines(data)
        return builder.build()
    finally:
        if enabled:
            gc.enable()


def _summarize_stream(stream: IO[bytes], options: _Options) -> LogSummary:
    enabled = gc.isenabled()
    gc.disable()
    try:
        builder = SummaryBuilder(filter=options.filter, slowest=options.slowest)
        for chunk in _chunks(stream):
            builder.add_json_lines(chunk)
        return builder.build()
    finally:
        if enabled:
            gc.enable()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _summarize(args: argparse.Namespace) -> LogSummary:
    options = _options(args)
    inputs = _expand(args.paths)
    jobs = args.jobs or _cpus()
    files = [p for p in inputs if p is not None]
    total = sum(p.stat().st_size for p in files)
    summaries: list[LogSummary] = []
    if jobs > 1 and total >= PARALLEL_MIN_BYTES:
        # Ranges of about total/jobs bytes, so that every worker gets a fair share.
        units = [
            (str(p), start, end)
            for p in files
            for start, end in _ranges(p, max(1, round(jobs * p.stat().st_size / total)))
        ]
        # fork: the workers start with everything imported (a fresh interpreter would
        # spend longer importing than summarising its share).
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("fork")
        workers = min(jobs, len(units))
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_summarize_range, *unit, options) for unit in units]
            file_summaries = [f.result() for f in futures]
        if None in inputs:
            file_summaries.append(_summarize_stream(sys.stdin.buffer, options))
        summaries = file_summaries
    else:
        for item in inputs:
            if item is None:
                summaries.append(_summarize_stream(sys.stdin.buffer, options))
            else:
                summaries.append(_summarize_range(str(item), 0, item.stat().st_size, options))
    return merge_summaries(summaries)


# --- commands ---------------------------------------------------------------------------


def _cmd_summary(args: argparse.Namespace) -> int:
    summary = _summarize(args)
    _maybe_html(args, summary)
    if args.json:
        _print_json(summary.to_dict())
        return 0
    out = _Output()
    out.summary_header(summary)
    out.table(
        "Methods",
        ("method", "calls", "errors", "err%", "p50", "p90", "p99", "max", "calls/s", "cache hit"),
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
                "-" if m.cache_hit_ratio is None else f"{m.cache_hit_ratio:.1%}",
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
    if summary.db_queries:
        out.table(
            f"Database queries ({DB_QUERY_EVENT})",
            ("replica", "queries"),
            [(server or "-", f"{n:,}") for server, n in summary.db_queries.items()],
        )
    out.input_footer(summary)
    return 0


def _cmd_slow(args: argparse.Namespace) -> int:
    summary = _summarize(args)
    _maybe_html(args, summary)
    data = summary.to_dict()
    if args.json:
        _print_json({"slowest": data["slowest"], "input": data["input"]})
        return 0
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
    return 0


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
        return 0
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
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    options = _options(args)
    needle = args.trace_id.encode("utf-8")
    inputs = _expand(args.paths)

    def matching_lines() -> Iterator[bytes]:
        # A substring test skips most chunks and lines without decoding them.
        for item in inputs:
            opened = contextlib.nullcontext(sys.stdin.buffer) if item is None else item.open("rb")
            with opened as f:
                for chunk in _chunks(f):
                    if needle in chunk:
                        yield from (line for line in chunk.split(b"\n") if needle in line)

    from ..analysis import build_trace, iter_call_records

    records = [r for r in iter_call_records(matching_lines()) if options.filter.matches(r)]
    trace = build_trace(records, args.trace_id)
    if args.html is not None:
        builder = SummaryBuilder(filter=options.filter)
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
                "cache": s.cache,
                "message": s.message,
            }
            for depth, s in trace.walk()
        ],
    }


# --- output -----------------------------------------------------------------------------


def _ms(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


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
    print(f"wrote {path}", file=sys.stderr)


class _Output:
    """Tables with rich at a terminal, aligned plain text otherwise."""

    def __init__(self) -> None:
        self._rich = sys.stdout.isatty()

    def line(self, text: str) -> None:
        print(text)

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
