"""The JSON format's one-processor rendering keeps what the separate processors did."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from trio_micro.observe import configure_logging


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _one_record(out: io.StringIO) -> dict[str, Any]:
    [line] = out.getvalue().splitlines()
    record: dict[str, Any] = json.loads(line)
    return record


def test_fixed_keys_come_first_in_order() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    structlog.contextvars.bind_contextvars(trace_id="t-1")
    structlog.get_logger("rpc").bind(peer="p").info("rpc.call.complete", code="OK")
    assert list(_one_record(out)) == [
        "timestamp", "level", "logger", "event", "peer", "code", "trace_id",
    ]  # fmt: skip


def test_warn_and_exception_map_to_level_names() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    structlog.get_logger().warn("app.odd")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("app.failed")
    warned, failed = (json.loads(line) for line in out.getvalue().splitlines())
    assert warned["level"] == "warning"
    assert failed["level"] == "error"
    assert "RuntimeError: boom" in failed["exception"]


def test_a_bound_logger_name_wins_and_a_bound_timestamp_is_replaced() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    structlog.get_logger("rpc").info("app.x", logger="custom", timestamp="yesterday")
    record = _one_record(out)
    assert record["logger"] == "custom"
    assert record["timestamp"] != "yesterday"
    assert record["timestamp"].endswith("Z")


def test_stack_info_names_the_caller_not_the_renderer() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    structlog.get_logger().info("app.where", stack_info=True)
    record = _one_record(out)
    assert "stack_info" not in record
    last_frame = record["stack"].splitlines()[-2]
    assert "test_log_json_line.py" in last_frame
    assert "test_stack_info_names_the_caller_not_the_renderer" in last_frame
