"""configure_logging: stdlib logging records through the same pipeline; NO_COLOR/FORCE_COLOR."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from trio_micro.observe import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_a_stdlib_record_is_a_json_line_with_its_logger_name() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    logging.getLogger("hypercorn.error").info("Running on %s", "127.0.0.1:8080")

    [record] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["logger"] == "hypercorn.error"
    assert record["event"] == "Running on 127.0.0.1:8080"
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_a_stdlib_exception_becomes_the_exception_field() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        logging.getLogger("httpx").exception("request failed")

    [record] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["level"] == "error"
    assert "ZeroDivisionError: boom" in record["exception"]


def test_stdlib_records_below_the_level_are_dropped() -> None:
    out = io.StringIO()
    configure_logging(file=out, level="warning")
    logging.getLogger("httpx").info("HTTP Request: GET /")
    logging.getLogger("httpx").warning("slow")

    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["slow"]


def test_stdlib_records_go_to_a_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    configure_logging(file=path)
    logging.getLogger("app").warning("caf\u00e9")
    configure_logging(file=io.StringIO())  # closes the file

    [record] = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert record["event"] == "caf\u00e9"


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(file=first)
    configure_logging(file=second)
    logging.getLogger("app").warning("once")

    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


def test_a_record_for_a_closed_file_is_dropped_quietly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    configure_logging(file=out)
    out.close()
    logging.getLogger("app").warning("lost")

    assert capsys.readouterr().err == ""


def test_console_format_renders_stdlib_records_too() -> None:
    out = io.StringIO()
    configure_logging(format="console", file=out, colors=False)
    logging.getLogger("hypercorn.error").warning("port in use")

    line = out.getvalue()
    assert "port in use" in line
    assert "hypercorn.error" in line
    assert "warning" in line
    assert line[:4].isdigit()  # starts with the timestamp, as structlog's records do


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _coloured(out: io.StringIO) -> bool:
    structlog.get_logger().warning("hello")
    return "\x1b[" in out.getvalue()


@pytest.mark.parametrize(
    ("env", "terminal", "expected"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"NO_COLOR": "1"}, True, False),
        ({"NO_COLOR": ""}, True, True),  # empty: unset, as no-color.org says
        ({"FORCE_COLOR": "1"}, False, True),
        ({"FORCE_COLOR": "0"}, False, False),
        ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, True, False),
    ],
)
def test_colors_follow_no_color_and_force_color(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], terminal: bool, expected: bool
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = _Terminal() if terminal else io.StringIO()
    configure_logging(format="console", file=out)

    assert _coloured(out) is expected


def test_an_explicit_colors_argument_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    configure_logging(format="console", file=out, colors=True)

    assert _coloured(out)


def test_the_http_clients_request_lines_are_dropped_at_info() -> None:
    out = io.StringIO()
    configure_logging(file=out, level="info")
    logging.getLogger("httpx").info("HTTP Request: POST /v3/lease/keepalive")
    logging.getLogger("httpcore.connection").info("connect_tcp.started")
    logging.getLogger("httpx").warning("retrying")
    logging.getLogger("hypercorn.error").info("Running")

    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["retrying", "Running"]


def test_the_http_clients_request_lines_are_kept_at_debug() -> None:
    out = io.StringIO()
    configure_logging(file=out, level="debug")
    logging.getLogger("httpx").info("HTTP Request: POST /v3/lease/keepalive")

    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == [
        "HTTP Request: POST /v3/lease/keepalive"
    ]
