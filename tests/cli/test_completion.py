"""``trio-micro completion bash|zsh``: scripts generated from the argparse parsers."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from trio_micro.cli import main
from trio_micro.cli._completion import script, tables
from trio_micro.cli._main import _COMMANDS, build_parser


def test_an_unknown_shell_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "fish"]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "trio-micro completion: error: no completion for shell 'fish': expected bash or zsh\n"
    )


def test_the_tables_hold_every_command_and_sub_command() -> None:
    found = tables(build_parser())

    assert found.commands["trio-micro"] == list(_COMMANDS)
    assert {"summary", "trace", "slow", "errors"} <= set(found.commands["trio-micro logs"])


def test_the_tables_hold_flags_values_and_choices() -> None:
    found = tables(build_parser())

    assert "--log-level" in found.options["trio-micro serve"]
    assert "--log-file" in found.valued["trio-micro serve"]
    assert "--no-access-log" not in found.valued["trio-micro serve"]
    assert found.choices["trio-micro serve --log-level"] == [
        "debug",
        "info",
        "warning",
        "error",
        "critical",
    ]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_main_prints_the_script(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0

    out = capsys.readouterr().out
    assert "_trio_micro" in out
    assert out.rstrip().endswith("trio-micro")  # the line registering the function


BASH_PROBE = """
complete_words() {
    COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
    _trio_micro
    echo "${COMPREPLY[*]}"
}
complete_words trio-micro se
complete_words trio-micro serve --log-l
complete_words trio-micro serve --log-level w
complete_words trio-micro logs s
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_flags_and_choices() -> None:
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script("bash") + BASH_PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert result.stdout.splitlines() == ["serve", "--log-level", "warning", "summary slow"]


ZSH_PROBE = """
compadd() { shift; print -r -- "$*"; }
_files() { print -r -- "<files>"; }
probe() { words=("$@"); CURRENT=$#; _trio_micro; }
probe trio-micro serve --log-level w
probe trio-micro serve --log-file x
probe trio-micro logs s
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
def test_zsh_completes_flag_values_and_sub_commands() -> None:
    # compadd filters by the typed prefix itself in zsh: the probe's stand-in prints all.
    result = subprocess.run(
        ["zsh", "-f", "-c", "compdef() { :; }\n" + script("zsh") + ZSH_PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert result.stdout.splitlines() == [
        "debug info warning error critical",
        "<files>",
        "summary trace slow errors",
    ]


def test_other_commands_do_not_import_the_completion_module() -> None:
    code = (
        "import sys\n"
        "from trio_micro.cli._main import build_parser\n"
        "build_parser('call')\n"
        "print('trio_micro.cli._completion' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert result.stdout.strip() == "False"
