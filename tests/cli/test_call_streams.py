"""``trio-micro call`` on client- and bidi-stream methods: one request per JSON line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trio_micro import rpc

from ..rpc.test_streams import Shapes
from .test_call import cli

pytestmark = pytest.mark.usefixtures("quiet_logging")


@pytest.fixture
async def target() -> AsyncIterator[str]:
    async with rpc.open_server([Shapes()], host="127.0.0.1", port=0) as server:
        host, port = server.address
        yield f"{host}:{port}"


async def test_a_client_stream_sends_the_lines_of_a_file(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"n": 1}\n\n{"n": 2}\n')
    assert await cli("call", target, "shapes.add", f"@{requests}") == 0
    assert json.loads(capsys.readouterr().out) == {"total": 3, "count": 2}


async def test_a_bidi_stream_prints_one_line_per_answer(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("call", target, "shapes.double", '{"n": 1}\n{"n": 2}') == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [{"n": 2}, {"n": 4}]


async def test_a_bad_request_line_is_a_usage_error_naming_the_line(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("call", target, "shapes.add", '{"n": 1}\n[1]') == 2
    assert "request line 2" in capsys.readouterr().err


async def test_a_missing_request_file_is_a_usage_error(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("call", target, "shapes.add", f"@{tmp_path / 'none.jsonl'}") == 2
    assert "can't read the requests" in capsys.readouterr().err
