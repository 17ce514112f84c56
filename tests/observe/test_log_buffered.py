"""``configure_logging(flush_interval=...)``: records buffered, flushed by a thread."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from trio_micro import observe


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    observe.configure_logging(format="json", file=io.BytesIO())  # stops any flusher
    structlog.reset_defaults()


def test_records_wait_in_the_buffer_until_reconfigured(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    observe.configure_logging(format="json", file=path, flush_interval=3600)
    structlog.get_logger("rpc").info("rpc.call.complete", code="OK")
    assert path.read_bytes() == b""  # buffered: no write per record
    observe.configure_logging(format="json", file=io.BytesIO())
    [line] = path.read_bytes().splitlines()
    assert json.loads(line)["event"] == "rpc.call.complete"


class _FlushCounter(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushed = threading.Event()

    def flush(self) -> None:
        super().flush()
        self.flushed.set()


def test_the_flusher_thread_flushes_every_interval() -> None:
    out = _FlushCounter()
    observe.configure_logging(format="json", file=out, flush_interval=0.001)
    structlog.get_logger().info("hello")
    assert out.flushed.wait(timeout=10)
    assert b'"event":"hello"' in out.getvalue()


def test_buffered_records_are_flushed_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "exit.jsonl"
    code = (
        "import structlog; from trio_micro import observe; "
        f"observe.configure_logging(format='json', file={str(path)!r}, flush_interval=3600); "
        "structlog.get_logger().info('bye')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert json.loads(path.read_bytes())["event"] == "bye"


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError)],
)
def test_bad_flush_intervals_are_refused(value: float, error: type[Exception]) -> None:
    with pytest.raises(error, match="flush_interval"):
        observe.configure_logging(format="json", file=io.BytesIO(), flush_interval=value)


def test_a_flush_interval_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match="flush_interval"):
        observe.configure_logging(format="json", file=io.BytesIO(), flush_interval="1")  # type: ignore[arg-type]


def test_a_text_stream_cannot_be_buffered() -> None:
    with pytest.raises(ValueError, match="flush_interval needs a path or a binary file"):
        observe.configure_logging(format="json", file=io.StringIO(), flush_interval=1.0)
