"""Hostile and broken input to the CLI (issue #15, defects 7 and 8): text output can't drive
the terminal or forge a line, and bad input is one line with a documented exit code."""

from __future__ import annotations

import io
import json
import pathlib
import sys

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_micro import registry
from trio_micro.cli._main import main
from trio_micro.cli._output import print_table, safe_text

from ..analysis._records import line, record
from .test_call import GET_USER, cli, free_port

pytestmark = pytest.mark.usefixtures("quiet_logging")

ESCAPE = "\x1b[2J\x1b]0;pwned\x07"  # clear the screen, set the window title


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("plain é 日本 ✓", "plain é 日本 ✓"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        (ESCAPE, "\\x1b[2J\\x1b]0;pwned\\x07"),
        ("\x9b31m\x7f", "\\x9b31m\\x7f"),
        ("\u202eexe.txt\u2028", "\\u202eexe.txt\\u2028"),
        ("\ud800", "\\ud800"),
    ],
)
def test_safe_text_escapes_controls_and_keeps_printable_text(text: str, safe: str) -> None:
    assert safe_text(text) == safe


def test_a_plain_table_escapes_every_cell(capsys: pytest.CaptureFixture[str]) -> None:
    print_table("t\n", ("name",), [("svc\nforged row",), (ESCAPE,)])
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert out.splitlines()[-2:] == ["svc\\nforged row", "\\x1b[2J\\x1b]0;pwned\\x07"]


async def test_call_escapes_the_servers_error_message(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    request = json.dumps({"status_code": 5, "status_message": f"no\nOK: forged{ESCAPE}"})
    assert await cli("call", target, "grpc.testing.TestService.unary_call", request) == 64 + 5
    err = capsys.readouterr().err
    assert err == "NOT_FOUND: no\\nOK: forged\\x1b[2J\\x1b]0;pwned\\x07\n"


def test_logs_errors_escapes_the_logged_message(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "a.jsonl"
    log.write_bytes(line(record(code="NOT_FOUND", message=f"x\n2026-01-01 forged{ESCAPE}")))
    assert main(["logs", "errors", str(log)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "forged" not in "".join(ln for ln in out.splitlines() if "x\\n2026" not in ln)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ('{"user_id": 1180591620717411303424}', "integer outside msgpack's range"),
        ('{"user_id": -9223372036854775809}', "integer outside msgpack's range"),
        ('{"a": ' + "[" * 65 + "]" * 65 + "}", "nested deeper than 64 levels"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON: nested too deeply"),
        ('{"a": 1' + "0" * 5000 + "}", "not valid JSON"),
    ],
    ids=["big-int", "small-int", "deep", "deeper-than-recursion", "huge-literal"],
)
async def test_call_refuses_json_msgpack_cant_carry_in_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request_: str,
    message: str,
) -> None:
    # In-process, so the argument may be 200 KB (a real argv could not). A request on
    # standard input ("-") is read only once the method's kind is known (a stream call's
    # requests are JSON lines), so only an argument is checked before connecting.
    assert await cli("call", "127.0.0.1:1", GET_USER, request_) == 2
    err = capsys.readouterr().err
    assert err.startswith("trio-micro call: error: the request ")
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", ["call", "list"])
@pytest.mark.parametrize("target", ["etcd://127.0.0.1:1/a%2Fb", "registry://127.0.0.1:1/bad$name"])
async def test_a_service_name_the_registry_refuses_is_a_bad_target(
    capsys: pytest.CaptureFixture[str], command: str, target: str
) -> None:
    argv = [command, target, *([GET_USER, "{}"] if command == "call" else [])]
    with trio.fail_after(10):
        assert await cli(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trio-micro {command}: error: bad TARGET: service must be 1-128")
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", ["summary", "errors", "slow"])
def test_logs_on_an_empty_folder_says_no_records_and_exits_0(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert main(["logs", command, str(tmp_path)]) == 0
    assert "0 call records" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["summary", "errors", "slow"])
@pytest.mark.parametrize("as_json", [False, True])
def test_logs_on_junk_exits_3_with_one_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], command: str, as_json: bool
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 8)
    assert main(["logs", command, str(junk), *(["--json"] if as_json else [])]) == 3
    err = capsys.readouterr().err
    assert err.startswith("trio-micro logs: error: no line of the input is a call record")
    assert err.count("\n") == 1


# Commands that return at once on any argument (never serve): fuzzed with arbitrary text.
# `serve`, `registry`, `gateway`, `bench` and `demo` serve or run for a while on valid
# arguments, so they are covered by the table of bad inputs below instead.
_QUICK = ["call", "list", "logs summary", "logs errors", "logs slow", "logs trace", "schema"]
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(_QUICK), args=st.lists(_text, max_size=4))
def test_fuzzed_arguments_never_give_a_traceback(command: str, args: list[str]) -> None:
    # Never a target that could answer: only unroutable or malformed ones reach the network.
    argv = [*command.split(), *args]
    if command in ("call", "list"):
        argv = [command, "127.0.0.1:1", *args, "--timeout", "0.5"]
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(b"not a log\n"))  # `logs` reads stdin by default
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.stdin = saved
    assert isinstance(code, int)
    assert 0 <= code < 256


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "no.such.module:Service"],
        ["serve", "json:nothing"],
        ["serve", "::"],
        ["serve", "examples.user_service:UserService", "--port", "70000"],
        ["registry", "--port", "-1"],
        ["gateway", "registry://h:1/bad$name", "--port", "0"],
        ["bench", "127.0.0.1:1", "x.y", "{bad json"],
        ["bench", "127.0.0.1:1", "x.y", '{"a": ' + "[" * 65 + "]" * 65 + "}"],
        ["health", "bad target"],
        ["schema", "no.such.module:Service"],
        ["logs", "summary", "--since", "yesterday"],
        ["logs", "summary", "--group-by", "", "/nonexistent"],
    ],
)
def test_bad_arguments_to_every_command_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    err = capsys.readouterr().err
    assert code in (1, 2), err
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0 or err.startswith("usage:"), err


# --- misleading failures (defect 9): say why, at once, not DEADLINE_EXCEEDED at --timeout


async def test_an_unknown_service_in_a_registry_fails_fast_saying_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with registry.open_registry_server() as srv:
        with trio.fail_after(10):  # --timeout is 60: only failing fast passes
            code = await cli("call", f"registry://{srv.target}/nosuch", GET_USER, "--timeout", "60")
    assert code == 64 + 14
    err = capsys.readouterr().err
    assert "UNAVAILABLE: service 'nosuch' has no endpoints" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("scheme", ["registry", "etcd"])
async def test_an_unreachable_registry_fails_fast_saying_so(
    capsys: pytest.CaptureFixture[str], scheme: str
) -> None:
    port = await free_port()
    with trio.fail_after(10):
        code = await cli("list", f"{scheme}://127.0.0.1:{port}/users", "--timeout", "60")
    assert code == 64 + 14
    assert "UNAVAILABLE: service 'users': registry unreachable at " in capsys.readouterr().err
