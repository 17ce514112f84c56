"""``trio-micro logs`` at a terminal: a progress line for big inputs, a note when it waits
on the terminal's stdin; neither when not at a terminal."""

from __future__ import annotations

import io
import pathlib
import sys

import pytest

from trio_micro.cli import _logs, main

from ..analysis._records import line, record


class _TerminalStdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)

    def isatty(self) -> bool:
        return True


def _log(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "access.jsonl"
    path.write_bytes(line(record()))
    return path


def test_reading_a_terminals_stdin_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", _TerminalStdin(line(record())))

    assert main(["logs", "summary", "--json"]) == 0
    assert capsys.readouterr().err == _logs.WAITING_ON_TERMINAL + "\n"


def test_reading_a_pipe_says_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = _TerminalStdin(line(record()))
    monkeypatch.setattr(stdin, "isatty", lambda: False)
    monkeypatch.setattr(sys, "stdin", stdin)

    assert main(["logs", "summary", "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_a_big_input_shows_progress_on_a_terminal(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_logs, "PROGRESS_MIN_BYTES", 1)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)

    assert main(["logs", "summary", "--json", str(_log(tmp_path))]) == 0
    out, err = capsys.readouterr()
    assert "reading 1 file" in err
    assert '"calls":1' in out.replace(" ", "")


def test_no_progress_when_stderr_is_not_a_terminal(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_logs, "PROGRESS_MIN_BYTES", 1)

    assert main(["logs", "summary", "--json", str(_log(tmp_path))]) == 0
    assert capsys.readouterr().err == ""


def test_no_progress_for_a_small_input(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    assert main(["logs", "trace", "--json", "nope", str(_log(tmp_path))]) == 1
    assert capsys.readouterr().err == ""
