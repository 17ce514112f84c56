"""Exit codes that every command shares (``cli/_common.py``): malformed arguments, errors,
signals, and the exit codes in every ``--help``.

The signal tests run ``python -m trio_micro ...`` for real. They send the signal once the
command handles SIGTERM itself (``SigCgt`` in ``/proc/PID/status``: the runner's handlers,
or Trio's signal receiver, are in place), then wait for the exit, all under ``fail_after``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from trio_micro.cli import main
from trio_micro.cli._common import (
    CommandError,
    Interrupted,
    integer,
    key_value,
    number,
    run_command,
)

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0  # generous: the machine is shared; each wait ends as soon as its condition holds
GET_USER = "grpc.testing.TestService.get_user"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc: Linux only")


# ---------------------------------------------------------------------- --help


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["registry"],
        ["call"],
        ["list"],
        ["bench"],
        ["demo"],
        ["logs"],
        ["logs", "summary"],
        ["logs", "trace"],
        ["logs", "slow"],
        ["logs", "errors"],
    ],
    ids=" ".join,
)
def test_every_help_lists_the_exit_codes(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    codes = out[out.index("exit codes:") :]
    assert "  1    an error" in codes
    assert "  2    malformed arguments" in codes
    assert "130  stopped by SIGINT (Ctrl-C); 143 by SIGTERM" in codes


@pytest.mark.parametrize("command", ["call", "list"])
def test_call_and_list_help_document_the_status_exit_codes(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "64+N a call ended with status code N" in capsys.readouterr().out


# ---------------------------------------------------------------------- malformed arguments


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["registry", "--port", "x"],
        ["registry", "--warmup", "-1"],
        ["registry", "--warmup", "inf"],
        ["call", "127.0.0.1:1"],
        ["list", "127.0.0.1:1", "--timeout", "0"],
        ["bench", "127.0.0.1:1", GET_USER, "-n", "0"],
        ["logs"],
        ["logs", "summary", "--top", "-1"],
        ["no-such-command"],
    ],
    ids=" ".join,
)
def test_malformed_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error: " in capsys.readouterr().err


def test_demo_says_where_the_demo_is_in_one_line_with_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--calls", "5"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("trio-micro demo: error: the demo is not part of the installed package")
    assert "make demo" in err


# ---------------------------------------------------------------------- the runner


def test_a_command_error_is_one_line_with_its_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def body() -> int:
        raise CommandError("it went wrong", code=7)

    assert run_command("x", body) == 7
    assert capsys.readouterr().err == "trio-micro x: error: it went wrong\n"


def test_command_errors_in_a_group_are_each_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def body() -> int:
        raise ExceptionGroup("", [CommandError("first"), ExceptionGroup("", [CommandError("b")])])

    assert run_command("x", body) == 1
    assert capsys.readouterr().err == "trio-micro x: error: first\ntrio-micro x: error: b\n"


def test_a_bug_keeps_its_traceback() -> None:
    def body() -> int:
        raise ExceptionGroup("", [CommandError("fine"), KeyError("a bug")])

    with pytest.raises(ExceptionGroup):
        run_command("x", body)


def test_a_signal_exits_128_plus_its_number(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise Interrupted(signal.SIGTERM)

    assert run_command("x", body) == 143
    assert capsys.readouterr().err == "trio-micro x: stopped by SIGTERM\n"


def test_the_runner_restores_the_signal_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    run_command("x", lambda: 0)
    assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------------- argument types


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (integer(0), "0", 0),
        (number("x", zero=True), "0", 0.0),
        (number("x", inf=True), "inf", float("inf")),
        (key_value, "k=a=b", ("k", "a=b")),
        (key_value, "k=", ("k", "")),
    ],
)
def test_argument_types_accept(parse: object, text: str, value: object) -> None:
    assert parse(text) == value  # type: ignore[operator]


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (integer(1), "0", "expected an integer >= 1, got '0'"),
        (number("calls per second"), "0", "expected calls per second > 0, got '0'"),
        (number("x"), "inf", "expected x > 0, got 'inf'"),
        (number("x", zero=True), "nan", "expected x >= 0, got 'nan'"),
        (key_value, "novalue", "expected KEY=VALUE, got 'novalue'"),
        (key_value, "a b=1", "expected KEY=VALUE, got 'a b=1'"),
    ],
)
def test_argument_types_refuse(parse: object, text: str, message: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)  # type: ignore[operator]


# ---------------------------------------------------------------------- signals


@pytest.fixture
async def silent_target() -> AsyncIterator[str]:
    """``host:port`` of a listener that completes connections and never answers."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        sock.listen()
        host, port = sock.getsockname()
        yield f"{host}:{port}"


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    [mask] = [line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")]
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


async def _stop_with(argv: list[str], signum: int) -> tuple[int, str]:
    """Start ``trio-micro *argv``, send ``signum`` once it handles signals; return its exit
    code and stderr."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_micro", *argv],
        stdin=subprocess.PIPE,  # kept open: `logs` waits on it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        with trio.fail_after(WAIT):
            while not _catches_sigterm(process.pid):  # noqa: ASYNC110 - another process
                await trio.sleep(0.01)
            process.send_signal(signum)
            assert process.stderr is not None
            err = b""
            while data := await process.stderr.receive_some():
                err += data
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for stream in (process.stdin, process.stderr):
            if stream is not None:
                await stream.aclose()
    return code, err.decode()


@linux_only
@pytest.mark.parametrize(
    ("argv", "signum"),
    [
        (["call", "{target}", GET_USER, "{{}}", "--timeout", "60"], signal.SIGINT),
        (["list", "{target}", "--timeout", "60"], signal.SIGTERM),
        (["bench", "{target}", GET_USER, "--timeout", "60", "--quiet"], signal.SIGINT),
        (["registry", "--port", "0"], signal.SIGTERM),
        (["serve", "tests.cli._slow_service:SlowService"], signal.SIGINT),
        (["logs", "summary"], signal.SIGTERM),
        (["logs", "slow"], signal.SIGINT),
    ],
    ids=lambda v: v if isinstance(v, signal.Signals) else v[0],
)
async def test_a_signal_stops_a_command_with_128_plus_its_number(
    silent_target: str, argv: list[str], signum: signal.Signals
) -> None:
    argv = [arg.format(target=silent_target) for arg in argv]
    code, err = await _stop_with(argv, signum)
    assert code == 128 + signum, err
    assert f"trio-micro {argv[0]}: stopped by {signum.name}\n" in err
    assert "Traceback" not in err


def test_an_interrupted_that_python_dropped_is_still_a_stop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Python runs a signal handler between any two bytecodes; in an at-fork hook or a
    # __del__ its exception is dropped (and reported to sys.unraisablehook).
    class Dropper:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGTERM)

    def body() -> int:
        Dropper()  # collected at once: the handler's Interrupted is dropped in __del__
        return 0

    assert run_command("x", body) == 143
    assert capsys.readouterr().err == "trio-micro x: stopped by SIGTERM\n"


# ---------------------------------------------------------------------- the signal policy


async def test_a_signal_while_serving_drains_and_a_second_cancels() -> None:
    from structlog.testing import capture_logs

    from trio_micro.cli._common import Stopper

    with capture_logs() as logs, trio.CancelScope() as scope:
        stopper = Stopper(scope, "serve")
        stopper.serving()
        stopper.receive(signal.SIGTERM)
        await stopper.wait()  # returns: the body drains
        assert not scope.cancel_called
        stopper.receive(signal.SIGINT)
        assert scope.cancel_called
    assert (stopper.signal, stopper.forced) == ("SIGTERM", True)
    assert [(r["event"], r["signal"]) for r in logs] == [
        ("serve.stopping", "SIGTERM"),
        ("serve.forced", "SIGINT"),
    ]


async def test_a_signal_before_serving_cancels_at_once() -> None:
    from trio_micro.cli._common import Stopper

    with trio.CancelScope() as scope:
        stopper = Stopper(scope, None)
        stopper.receive(signal.SIGINT)
        await trio.sleep_forever()  # cancelled by the stopper
    assert scope.cancelled_caught
    assert (stopper.signum, stopper.forced) == (signal.SIGINT, False)


def test_print_json_shows_bytes_as_base64_and_extensions_as_objects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import msgspec

    from trio_micro.cli._output import print_json

    print_json({"b": b"\x00\x01", "x": msgspec.msgpack.Ext(5, b"\xff"), "n": float("nan")})
    assert capsys.readouterr().out == ('{"b":"AAE=","x":{"ext_code":5,"data":"/w=="},"n":null}\n')
