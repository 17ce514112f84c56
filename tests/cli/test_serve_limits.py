"""``trio-micro serve``'s limit flags (issue #15): finite defaults, passed on to rpc.serve."""

from __future__ import annotations

import math

import pytest

from trio_micro.cli import main
from trio_micro.cli._main import build_parser
from trio_micro.cli._serve_args import _check_args

SLOW = "tests.cli._slow_service:SlowService"


def test_the_command_has_finite_defaults() -> None:
    config = _check_args(build_parser().parse_args(["serve", SLOW]))
    assert config.limits == {
        "max_connections": 1000,
        "max_connections_per_peer": 100,
        "max_concurrent_streams": 100,
        "idle_timeout": 300.0,
        "stall_timeout": 30.0,
    }


def test_flags_set_the_limits() -> None:
    argv = ["--max-connections", "5", "--max-connections-per-peer", "2"]
    argv += ["--max-concurrent-streams", "7"]
    argv += ["--idle-timeout", "inf", "--stall-timeout", "0.5"]
    config = _check_args(build_parser().parse_args(["serve", SLOW, *argv]))
    assert config.limits == {
        "max_connections": 5,
        "max_connections_per_peer": 2,
        "max_concurrent_streams": 7,
        "idle_timeout": math.inf,
        "stall_timeout": 0.5,
    }


def test_help_gives_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("(default: 1000)", "(default: 100)", "(default: 300)", "(default: 30)"):
        assert text in out
