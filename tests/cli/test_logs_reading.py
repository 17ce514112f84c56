"""``trio-micro logs`` reads byte ranges of a file in the same chunks, however it reads."""

from __future__ import annotations

import io
import pathlib

import pytest

from trio_micro.cli import _logs

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
    monkeypatch.setattr(_logs, "CHUNK_SIZE", chunk_size)
    for start, end in [(0, len(data)), (5, len(data) - 3), (0, 100), (0, len(data) + 50)]:
        got = [bytes(chunk) for chunk in _logs._range_chunks(str(log), start, end)]
        stream = io.BytesIO(data)
        stream.seek(start)
        assert got == list(_logs._chunks(stream, end - start)), (start, end)


def test_range_chunks_of_an_empty_range_are_none(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "access.jsonl"
    log.write_bytes(b"{}\n{}\n")
    assert list(_logs._range_chunks(str(log), 3, 3)) == []
