from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from trio_micro.observe import configure_logging


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    # configure_logging changes process-wide state; other test files rely on the defaults.
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_have_the_fixed_fields() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    structlog.get_logger("rpc").info("rpc.call.complete", duration_ms=1.5, peer="10.0.0.1")

    [record] = _records(out.getvalue())
    assert record["event"] == "rpc.call.complete"
    assert record["level"] == "info"
    assert record["logger"] == "rpc"
    assert record["duration_ms"] == 1.5
    assert record["peer"] == "10.0.0.1"
    assert record["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(record["timestamp"])
    assert stamp.utcoffset() == UTC.utcoffset(None)


def test_logger_without_a_name_has_no_logger_field() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    structlog.get_logger().info("app.started")

    [record] = _records(out.getvalue())
    assert "logger" not in record


def test_json_lines_include_contextvars() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    structlog.contextvars.bind_contextvars(trace_id="t-1")
    structlog.get_logger().info("rpc.call.complete")

    [record] = _records(out.getvalue())
    assert record["trace_id"] == "t-1"


async def test_contextvars_bound_in_a_task_stay_in_that_task() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    log = structlog.get_logger()

    async def handle(request_id: str) -> None:
        structlog.contextvars.bind_contextvars(request_id=request_id)
        await trio.lowlevel.checkpoint()  # interleave the two handlers
        log.info("request.handled", handler=request_id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle, "a")
        nursery.start_soon(handle, "b")
    log.info("parent.done")

    records = _records(out.getvalue())
    handled = [r for r in records if r["event"] == "request.handled"]
    assert {(r["handler"], r["request_id"]) for r in handled} == {("a", "a"), ("b", "b")}
    [parent] = [r for r in records if r["event"] == "parent.done"]
    assert "request_id" not in parent


def test_exception_is_a_string_field() -> None:
    out = io.StringIO()
    configure_logging(file=out)
    try:
        raise ValueError("bad frame")
    except ValueError:
        structlog.get_logger().exception("rpc.call.failed")

    [record] = _records(out.getvalue())
    assert record["level"] == "error"
    assert isinstance(record["exception"], str)
    assert "Traceback" in record["exception"]
    assert "ValueError: bad frame" in record["exception"]


def test_values_json_cannot_hold_do_not_break_the_call() -> None:
    class BrokenRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    cyclic: list[object] = []
    cyclic.append(cyclic)
    out = io.StringIO()
    configure_logging(file=out)
    log = structlog.get_logger()
    log.info("plain", payload=b"\x00\x01", error=KeyError("k"), obj=object(), by_pair={(1, 2): 3})
    log.info("hard", cyclic=cyclic, broken=BrokenRepr(), surrogate="\ud800")

    plain, hard = _records(out.getvalue())
    assert plain["payload"] == "AAE="  # bytes: base64, msgspec's lossless convention
    assert plain["error"] == "KeyError('k')"
    assert plain["obj"].startswith("<object object at ")
    assert plain["by_pair"] == {"(1, 2)": 3}
    assert hard["cyclic"] == ["<list nested too deeply or cyclic>"]
    assert "repr() failed" in hard["broken"]
    assert hard["surrogate"] == "\\ud800"


def test_binary_file_gets_json_lines() -> None:
    out = io.BytesIO()
    configure_logging(file=out)
    structlog.get_logger("svc").info("svc.ready", port=8080)

    [record] = _records(out.getvalue().decode())
    assert record["event"] == "svc.ready"
    assert record["logger"] == "svc"
    assert record["port"] == 8080


def test_path_is_appended_to_and_closed_on_reconfigure(tmp_path: Path) -> None:
    path = tmp_path / "service.log"
    path.write_text('{"event":"earlier"}\n')
    configure_logging(file=path)
    structlog.get_logger().info("svc.ready")
    configure_logging(file=str(path))  # reconfiguring closes the first file
    structlog.get_logger().info("svc.stopping")
    configure_logging(file=io.StringIO())

    events = [r["event"] for r in _records(path.read_text())]
    assert events == ["earlier", "svc.ready", "svc.stopping"]


def test_default_file_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    structlog.get_logger().info("svc.ready")

    [record] = _records(capsys.readouterr().out)
    assert record["event"] == "svc.ready"


def test_level_filters_lower_records() -> None:
    out = io.StringIO()
    configure_logging(file=out, level="WARNING")
    log = structlog.get_logger()
    log.info("quiet")
    log.warning("loud")
    log.debug("quieter")

    assert [r["event"] for r in _records(out.getvalue())] == ["loud"]


def test_numeric_level_is_accepted() -> None:
    out = io.StringIO()
    configure_logging(file=out, level=10)
    structlog.get_logger().debug("chatty")

    assert [r["event"] for r in _records(out.getvalue())] == ["chatty"]


def test_calling_twice_reconfigures() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(file=first)
    log = structlog.get_logger()
    log.info("one")
    configure_logging(file=second, level="error")
    log.info("dropped")
    log.error("two")

    assert [r["event"] for r in _records(first.getvalue())] == ["one"]
    assert [r["event"] for r in _records(second.getvalue())] == ["two"]


def test_console_format_is_for_people() -> None:
    out = io.StringIO()
    configure_logging(format="console", file=out, colors=False)
    structlog.contextvars.bind_contextvars(trace_id="t-9")
    structlog.get_logger("rpc").info("rpc.call.complete", duration_ms=3)

    line = out.getvalue()
    assert "rpc.call.complete" in line
    assert "duration_ms=3" in line
    assert "trace_id=t-9" in line
    assert "[rpc]" in line
    assert "\x1b[" not in line  # no colour codes
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_console_format_renders_exceptions() -> None:
    out = io.StringIO()
    configure_logging(format="console", file=out, colors=False)
    try:
        raise ValueError("bad frame")
    except ValueError:
        structlog.get_logger().exception("rpc.call.failed")

    assert "ValueError" in out.getvalue()
    assert "bad frame" in out.getvalue()


def test_console_format_to_a_binary_file() -> None:
    out = io.BytesIO()
    configure_logging(format="console", file=out, colors=False)
    structlog.get_logger().info("svc.ready", port=8080)

    assert b"svc.ready" in out.getvalue()
    assert b"port=8080" in out.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "error", "shown"),
    [
        ({"format": "xml"}, ValueError, "'xml'"),
        ({"format": 1}, TypeError, "1"),
        ({"level": "loud"}, ValueError, "'loud'"),
        ({"level": 15}, ValueError, "15"),
        ({"level": True}, TypeError, "True"),
        ({"level": 2.5}, TypeError, "2.5"),
        ({"file": 42}, TypeError, "42"),
        ({"colors": "yes"}, TypeError, "'yes'"),
    ],
)
def test_bad_arguments_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], shown: str
) -> None:
    with pytest.raises(error) as excinfo:
        configure_logging(**kwargs)
    assert shown in str(excinfo.value)
