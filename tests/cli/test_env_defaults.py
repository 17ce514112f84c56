"""Environment-variable defaults of the common flags (cli/_common.py ENV_DEFAULTS)."""

from __future__ import annotations

import argparse

import pytest

from trio_micro.cli._common import ENV_DEFAULTS, apply_environment_defaults, seconds
from trio_micro.cli._main import build_parser

pytestmark = pytest.mark.usefixtures("_clean_environment")


@pytest.fixture
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ENV_DEFAULTS.values():
        monkeypatch.delenv(variable, raising=False)


def test_the_variable_gives_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_MICRO_TIMEOUT", "2.5")
    args = build_parser("call").parse_args(["call", "127.0.0.1:1", "a.b"])

    assert args.timeout == 2.5


def test_the_command_line_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_MICRO_REGISTRY", "etcd://10.0.0.1:2379")
    args = build_parser("serve").parse_args(["serve", "m:a", "--registry", "127.0.0.1:7000"])

    assert args.registry == "127.0.0.1:7000"


def test_an_unset_or_empty_variable_keeps_the_flags_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIO_MICRO_LOG_LEVEL", "")
    args = build_parser("serve").parse_args(["serve", "m:a"])

    assert (args.log_level, args.registry) == ("info", None)


def test_a_bad_value_is_a_usage_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIO_MICRO_TIMEOUT", "soon")
    with pytest.raises(SystemExit) as exit_:
        build_parser("health").parse_args(["health", "127.0.0.1:1"])

    assert exit_.value.code == 2
    assert "TRIO_MICRO_TIMEOUT: expected a number of seconds > 0, got 'soon'" in (
        capsys.readouterr().err
    )


def test_a_value_outside_the_choices_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIO_MICRO_LOG_LEVEL", "loud")
    with pytest.raises(SystemExit):
        build_parser("serve").parse_args(["serve", "m:a"])

    assert "TRIO_MICRO_LOG_LEVEL: invalid choice 'loud'" in capsys.readouterr().err


def _helps(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "500")  # one line per flag
    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return "\n".join(sub.format_help() for sub in commands.choices.values())


def test_help_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    [line] = [line for line in _helps(monkeypatch).splitlines() if line.startswith("  --registry ")]

    assert line.endswith("[env: TRIO_MICRO_REGISTRY]")


def test_every_variable_is_used_by_some_command(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _helps(monkeypatch)

    assert [v for v in ENV_DEFAULTS.values() if f"[env: {v}]" not in text] == []


def test_a_flag_without_a_value_takes_no_environment_default() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", action="store_true")
    apply_environment_defaults(parser, {"TRIO_MICRO_TIMEOUT": "1"})

    assert parser.parse_args([]).timeout is False


def test_the_type_sees_plain_text_from_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=seconds())
    apply_environment_defaults(parser, {"TRIO_MICRO_TIMEOUT": "3"})

    assert parser.parse_args([]).timeout == 3.0
    assert parser.parse_args(["--timeout", "4"]).timeout == 4.0
