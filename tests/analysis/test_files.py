"""``analysis.summarize_files``: byte ranges read in the same chunks however they are read,
ranges cut at line starts, paths and streams summarised as one log."""

from __future__ import annotations

import io
import pathlib

import pytest

from trio_micro.analysis import _files, find_trace_records, summarize_files

from ._records import line, record

LINES = [b"", b"x", b"{}", b"y" * 50, b"z" * 300, b"w" * 5000]


@pytest.mark.parametrize("ending", [b"", b"\n", b"no newline at the end"])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 301, 4096, 1 << 20])
def test_range_chunks_equal_buffered_chunks(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, chunk_size: int, ending: bytes
) -> None:
    # Same chunks, so that float sums (added per chunk) come out the same.
    data = b"\n".join(LINES[(i * 7) % len(LINES)] for i in range(120)) + ending
    log = tmp_path / "access.jsonl"
    log.write_bytes(data)
    monkeypatch.setattr(_files, "CHUNK_SIZE", chunk_size)
    for start, end in [(0, len(data)), (5, len(data) - 3), (0, 100), (0, len(data) + 50)]:
        got = [bytes(chunk) for chunk in _files._range_chunks(str(log), start, end)]
        stream = io.BytesIO(data)
        stream.seek(start)
        assert got == list(_files._chunks(stream, end - start)), (start, end)


def test_range_chunks_of_an_empty_range_are_none(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "access.jsonl"
    log.write_bytes(b"{}\n{}\n")
    assert list(_files._range_chunks(str(log), 3, 3)) == []


def test_ranges_start_at_line_starts(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_files, "CHUNK_SIZE", 10)
    log = tmp_path / "a.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    data = log.read_bytes()
    ranges = _files._ranges(log, len(data), 4)
    assert ranges[0][0] == 0
    assert ranges[-1][1] == len(data)
    assert all(data[start - 1 : start] == b"\n" for start, _ in ranges[1:])


def write(path: pathlib.Path, *ats: float) -> pathlib.Path:
    path.write_bytes(b"".join(line(record(at=at, trace_id=f"t{at}")) for at in ats))
    return path


def test_paths_and_streams_are_summarised_as_one_log(tmp_path: pathlib.Path) -> None:
    a = write(tmp_path / "a.jsonl", 0, 1)
    stream = io.BytesIO(write(tmp_path / "b.jsonl", 2).read_bytes())
    summary = summarize_files([a, str(a), stream], jobs=1)
    assert (summary.calls, summary.input.malformed_total) == (5, 0)


def test_no_inputs_give_an_empty_summary() -> None:
    assert summarize_files([], group_by=("cache",)).calls == 0


def test_jobs_below_one_are_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="jobs"):
        summarize_files([write(tmp_path / "a.jsonl", 0)], jobs=0)


def test_a_parallel_summary_equals_one_process(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = write(tmp_path / "a.jsonl", *(i / 100 for i in range(2000)))
    monkeypatch.setattr(_files, "CHUNK_SIZE", 4096)
    monkeypatch.setattr(_files, "PARALLEL_MIN_BYTES", 0)
    one = summarize_files([log], jobs=1, group_by=("cache",))
    two = summarize_files([log], jobs=2, group_by=("cache",))
    assert (two.calls, two.group_by, two.groups.keys()) == (
        one.calls,
        one.group_by,
        one.groups.keys(),
    )
    assert two.latency() == one.latency()


def test_find_trace_records_keeps_the_records_of_the_trace(tmp_path: pathlib.Path) -> None:
    log = write(tmp_path / "a.jsonl", 0, 1, 2)
    found = find_trace_records([log, io.BytesIO(log.read_bytes())], "t1")
    assert [r.trace_id for r in found] == ["t1", "t1"]
