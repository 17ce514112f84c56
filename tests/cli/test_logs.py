from __future__ import annotations

import io
import json
import pathlib
import sys

import pytest

from trio_micro.analysis import _files
from trio_micro.cli import main

from ..analysis._records import line, record


def write_log(path: pathlib.Path, *, extra: bytes = b"") -> pathlib.Path:
    recs = [
        (
            record(at=0.010, service="gateway", method="Handle", span_id="root", duration_ms=10),
            None,
        ),
        (record(at=0.004, span_id="u", parent_span_id="root", duration_ms=3), "hit"),
        (record(at=0.008, span_id="u2", parent_span_id="root", duration_ms=2), "miss"),
        (
            record(
                at=1.0, code="NOT_FOUND", message="user 7 not found", trace_id="t2", span_id="x"
            ),
            None,
        ),
    ]
    path.write_bytes(b"".join(line(r, cache=cache) for r, cache in recs) + extra)
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["logs", *argv, "--json"]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_summary_json_counts_calls_per_method(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(capsys, "summary", str(write_log(tmp_path / "a.jsonl")))
    methods = {(m["service"], m["method"]): m["calls"] for m in data["methods"]}  # type: ignore[attr-defined]
    assert methods == {("gateway", "Handle"): 1, ("users", "GetUser"): 3}


def test_summary_reports_malformed_lines_without_failing(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "a.jsonl", extra=b'garbage\n\xff\xfe\n{"timestamp":')
    data = run_json(capsys, "summary", str(log))
    assert data["calls"] == 4
    assert data["input"]["malformed_total"] == 3  # type: ignore[index]


def test_folder_input_reads_jsonl_and_log_files(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_log(tmp_path / "a.jsonl")
    write_log(tmp_path / "b.log")
    (tmp_path / "notes.txt").write_text("not a log")
    assert run_json(capsys, "summary", str(tmp_path))["calls"] == 8


def test_stdin_is_read_when_no_paths_given(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_log(tmp_path / "a.jsonl").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run_json(capsys, "summary")["calls"] == 4


def test_missing_file_exits_nonzero_with_clear_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "summary", str(tmp_path / "nope.jsonl")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_bad_since_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["logs", "summary", "--since", "yesterday"])
    assert exc.value.code == 2
    assert "ISO-8601" in capsys.readouterr().err


def test_filters_apply_to_summary(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(write_log(tmp_path / "a.jsonl"))
    data = run_json(capsys, "summary", log, "--service", "users", "--code", "OK")
    assert data["calls"] == 2
    data = run_json(capsys, "summary", log, "--since", "2026-11-26T10:00:00.5Z")
    assert data["calls"] == 1


def test_slow_lists_top_n_slowest(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(capsys, "slow", "--top", "2", str(write_log(tmp_path / "a.jsonl")))
    assert [c["duration_ms"] for c in data["slowest"]] == [10, 3]  # type: ignore[attr-defined]


def test_errors_lists_codes_and_messages(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(capsys, "errors", str(write_log(tmp_path / "a.jsonl")))
    assert data["errors_by_code"] == [
        {"service": "users", "method": "GetUser", "code": "NOT_FOUND", "calls": 1}
    ]
    assert data["recent_errors"][0]["message"] == "user 7 not found"  # type: ignore[index]


def test_trace_json_is_the_call_tree(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(capsys, "trace", "t1", str(write_log(tmp_path / "a.jsonl")))
    spans = [(s["depth"], s["span_id"]) for s in data["spans"]]  # type: ignore[attr-defined]
    assert spans == [(0, "root"), (1, "u"), (1, "u2")]


def test_trace_not_found_exits_one(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "trace", "zzz", str(write_log(tmp_path / "a.jsonl"))]) == 1
    assert "no calls with trace_id" in capsys.readouterr().out


def test_plain_text_summary_shows_method_table(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "summary", str(write_log(tmp_path / "a.jsonl"))]) == 0
    out = capsys.readouterr().out
    assert "users/GetUser" in out
    assert "\x1b[" not in out  # no terminal styling when not a terminal


def test_plain_text_trace_shows_waterfall(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "trace", "t1", str(write_log(tmp_path / "a.jsonl"))]) == 0
    out = capsys.readouterr().out
    assert "gateway/Handle" in out
    assert "#" in out


def test_html_report_is_one_file_with_svg_plots(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.html"
    log = str(write_log(tmp_path / "a.jsonl"))
    assert main(["logs", "summary", log, "--html", str(report)]) == 0
    html = report.read_text()
    assert html.count("<svg") >= 4
    assert "<script" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_trace_html_report_contains_waterfall(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "trace.html"
    log = str(write_log(tmp_path / "a.jsonl"))
    assert main(["logs", "trace", "t1", log, "--html", str(report)]) == 0
    assert "Trace t1" in report.read_text()


def test_parallel_byte_ranges_give_same_summary_as_one_process(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recs = [record(at=i * 0.01, duration_ms=1 + i % 97, server=f"s{i % 3}") for i in range(3000)]
    log = tmp_path / "big.jsonl"
    log.write_bytes(b"".join(line(r) for r in recs))
    monkeypatch.setattr(_files, "CHUNK_SIZE", 4096)
    monkeypatch.setattr(_files, "PARALLEL_MIN_BYTES", 0)
    one = run_json(capsys, "summary", str(log), "--jobs", "1")
    two = run_json(capsys, "summary", str(log), "--jobs", "2")
    for data in (one, two):
        data["latency_ms"]["mean_ms"] = round(data["latency_ms"]["mean_ms"], 6)  # type: ignore[index]
        for m in data["methods"]:  # type: ignore[attr-defined]
            m["mean_ms"] = round(m["mean_ms"], 6)
            for p in m["replicas"]:
                p["mean_ms"] = round(p["mean_ms"], 6)
        for b in data["timeline"]["buckets"]:  # type: ignore[index]
            b["mean_ms"] = round(b["mean_ms"], 6)
    assert one == two
    assert one["calls"] == 3000


def test_plain_text_summary_shows_replicas_and_counted_events(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = (
        b'{"timestamp":"2026-11-26T10:00:00Z","event":"users.db.query","server":"10.0.0.1:50051"}\n'
    )
    log = str(write_log(tmp_path / "a.jsonl", extra=db))
    assert main(["logs", "summary", log, "--count-event", "users.db.query"]) == 0
    out = capsys.readouterr().out
    assert "replica" in out
    assert "Events counted" in out
    assert "10.0.0.1:50051" in out
    # Both tables name the replica, so check the rows: calls per replica, queries per replica.
    rows = [row.split() for row in out.splitlines()]
    assert "Replicas (by the server that served the call)" in out
    assert ["users/GetUser", "10.0.0.1:50051", "3"] in [row[:3] for row in rows]
    assert ["users.db.query", "10.0.0.1:50051", "1"] in rows


def test_group_by_counts_each_method_calls_by_field_value(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(capsys, "summary", str(write_log(tmp_path / "a.jsonl")), "--group-by", "cache")
    by_method = {f"{m['service']}/{m['method']}": m["fields"] for m in data["methods"]}  # type: ignore[attr-defined]
    assert by_method == {"gateway/Handle": {}, "users/GetUser": {"cache": {"hit": 1, "miss": 1}}}
    assert data["group_by"] == ["cache"]


def test_group_by_adds_a_column_of_value_shares(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(write_log(tmp_path / "a.jsonl"))
    assert main(["logs", "summary", log, "--group-by", "cache"]) == 0
    rows = [row.split() for row in capsys.readouterr().out.splitlines()]
    assert ["hit", "50.0%,", "miss", "50.0%"] in [row[-4:] for row in rows if row]


def test_group_by_a_field_the_summary_reads_is_an_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(write_log(tmp_path / "a.jsonl"))
    assert main(["logs", "summary", log, "--group-by", "service"]) == 1
    assert "cannot group by 'service'" in capsys.readouterr().err
