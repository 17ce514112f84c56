"""The batch kernel of ``SummaryBuilder`` against a plain per-record reference.

The kernel (``trio_micro/analysis/_kernel.py``) takes shortcuts: columns pulled out with
``map``, counted pairs of key and latency bucket, first and last calls found by searching,
runs of the time series found by bisection, unsorted batches sorted first. The reference
below counts one record at a time, the obvious way; on random logs cut into random
chunks, both must give the same summary.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trio_micro.analysis import (
    ErrorSample,
    LatencySketch,
    LogSummary,
    SlowCall,
    SummaryBuilder,
)

T0 = datetime(2026, 11, 26, 10, 59, 0, tzinfo=UTC)  # the hour turns within the log
CODES = ("OK", "OK", "OK", "NOT_FOUND", "INTERNAL")
SLOWEST, ERRORS, BUCKETS = 4, 3, 6


@dataclass(frozen=True)
class Call:
    at_us: int  # microseconds after T0
    service: str
    method: str
    server: str | None
    code: str
    duration_ms: float
    cache: str | int | None
    peer: str

    @property
    def timestamp(self) -> datetime:
        return T0 + timedelta(microseconds=self.at_us)

    def line(self) -> bytes:
        stamp = self.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        fields: dict[str, Any] = {
            "timestamp": stamp,
            "event": "rpc.call.complete" if self.code == "OK" else "rpc.call.failed",
            "service": self.service,
            "method": self.method,
            "server": self.server,
            "code": self.code,
            "duration_ms": self.duration_ms,
            "cache": self.cache,
            "peer": self.peer,
            "trace_id": f"trace-{self.peer}",
            "message": None if self.code == "OK" else f"failed at {self.at_us}",
        }
        return msgspec.json.encode({k: v for k, v in fields.items() if v is not None}) + b"\n"


QUERY = b'{"timestamp":"2026-11-26T10:59:00.5Z","event":"db.query","server":"a:1"}\n'

calls = st.builds(
    Call,
    # Milliseconds, and a microsecond part away from whole milliseconds: the two ways of
    # parsing a time (bulk and datetime) may differ in the last bit, which must not move
    # a call across a bucket edge.
    at_us=st.tuples(st.integers(0, 120_000), st.integers(100, 900)).map(
        lambda t: t[0] * 1000 + t[1]
    ),
    service=st.sampled_from(["users", "orders"]),
    method=st.sampled_from(["Get", "List"]),
    server=st.sampled_from(["a:1", "b:1", None]),
    code=st.sampled_from(CODES),
    # Whole milliseconds often, so that the slowest calls tie.
    duration_ms=st.one_of(
        st.integers(0, 20).map(float), st.floats(0, 1e4, allow_nan=False, allow_infinity=False)
    ),
    cache=st.sampled_from(["hit", "miss", None, 7]),
    peer=st.sampled_from(["p1", "p2", "p3"]),
)


def reference(log: list[Call], queries: int) -> dict[str, Any]:
    """The summary, one record at a time."""
    groups: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for c in log:
        g = groups.setdefault(
            (c.service, c.method, c.server),
            {"codes": Counter(), "fields": {}, "latency": LatencySketch(), "times": []},
        )
        g["codes"][c.code] += 1
        if c.cache is not None:
            g["fields"].setdefault("cache", Counter())[str(c.cache)] += 1
        g["latency"].add(c.duration_ms)
        g["times"].append(c.timestamp.timestamp())
    slowest = sorted(
        (
            SlowCall(
                c.duration_ms,
                c.timestamp,
                c.service,
                c.method,
                c.server or "",
                c.peer,
                c.code,
                f"trace-{c.peer}",
                "",
            )
            for c in log
        ),
        reverse=True,
    )[:SLOWEST]
    errors = sorted(
        (
            ErrorSample(
                c.timestamp,
                c.service,
                c.method,
                c.server or "",
                c.peer,
                c.code,
                f"failed at {c.at_us}",
                c.duration_ms,
                f"trace-{c.peer}",
                "",
            )
            for c in log
            if c.code != "OK"
        ),
        reverse=True,
    )[:ERRORS]
    timeline: dict[int, list[Any]] = {}
    if log:
        ticks = [math.floor(c.timestamp.timestamp() * 1000) for c in log]
        level = 0
        while (max(ticks) >> level) - (min(ticks) >> level) >= BUCKETS:
            level += 1
        for c, tick in zip(log, ticks, strict=True):
            cell = timeline.setdefault(tick >> level, [0, 0, LatencySketch()])
            cell[0] += 1
            cell[1] += c.code != "OK"
            cell[2].add(c.duration_ms)
    return {
        "groups": {
            key: (
                dict(g["codes"]),
                {name: dict(counts) for name, counts in g["fields"].items()},
                g["latency"],
                min(g["times"]),
                max(g["times"]),
            )
            for key, g in sorted(
                groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
            )
        },
        "slowest": tuple(slowest),
        "errors": tuple(errors),
        "timeline": [
            (calls, errs, sketch) for _j, (calls, errs, sketch) in sorted(timeline.items())
        ],
        "events": {"db.query": {"a:1": queries}} if queries else {},
        "records": len(log),
    }


def fast(summary: LogSummary) -> dict[str, Any]:
    return {
        "groups": {
            key: (dict(g.codes), dict(g.fields), g.latency, g.first, g.last)
            for key, g in summary.groups.items()
        },
        "slowest": summary.slowest,
        "errors": summary.recent_errors,
        "timeline": [(b.calls, b.errors, b.latency) for b in summary.timeline],
        "events": summary.event_counts,
        "records": summary.calls,
    }


def same(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Equal, times of groups within a microsecond (parsed two ways)."""
    if ours.keys() != theirs.keys() or list(ours["groups"]) != list(theirs["groups"]):
        return False
    for key, (codes, fields, latency, first, last) in ours["groups"].items():
        codes2, fields2, latency2, first2, last2 = theirs["groups"][key]
        if (codes, fields, latency) != (codes2, fields2, latency2):
            return False
        if not (
            math.isclose(first, first2, abs_tol=1e-6) and math.isclose(last, last2, abs_tol=1e-6)
        ):
            return False
    return all(ours[k] == theirs[k] for k in ("slowest", "errors", "timeline", "events", "records"))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(calls, max_size=80),
    st.booleans(),
    st.lists(st.integers(0, 80), max_size=4),
    st.lists(st.integers(0, 80), max_size=3),
)
def test_the_kernel_gives_the_summary_of_the_plain_reference(
    log: list[Call], in_order: bool, cuts: list[int], query_at: list[int]
) -> None:
    # Lines that differ only in peer would be indistinguishable to the line finder.
    assume(len({(c.at_us, c.service, c.method, c.code, c.duration_ms) for c in log}) == len(log))
    if in_order:
        log = sorted(log, key=lambda c: c.at_us)
    lines = [c.line() for c in log]
    for i in sorted(query_at, reverse=True):
        lines.insert(min(i, len(lines)), QUERY)
    bounds = sorted({0, len(lines), *(min(i, len(lines)) for i in cuts)})
    builder = SummaryBuilder(
        slowest=SLOWEST,
        error_samples=ERRORS,
        max_time_buckets=BUCKETS,
        group_by=("cache",),
        count_events=("db.query",),
    )
    for start, end in itertools.pairwise(bounds):
        builder.add_json_lines(b"".join(lines[start:end]))
    assert same(fast(builder.build()), reference(log, len(query_at)))
