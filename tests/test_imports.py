"""Lazy imports: the log analysis and ``trio-micro logs`` import neither Trio nor the
libraries of the services (their start-up time is part of every ``logs`` run).

Each check runs in a fresh interpreter, since this one has imported everything already.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

import trio_micro
from trio_micro import analysis, cli, observe

from .analysis._records import line, record

# What the services need and the analysis does not.
HEAVY = ("trio", "structlog", "rich", "httpx", "prometheus_client", "hypercorn")


def imported_after(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter; return which of HEAVY it left imported."""
    probe = (
        f"{code}\nimport sys, json\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: dict[str, bool] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_importing_the_package_imports_no_heavy_library() -> None:
    loaded = imported_after("import trio_micro, trio_micro.observe, trio_micro.analysis")
    assert not any(loaded.values()), loaded


def test_summarising_json_lines_imports_no_heavy_library() -> None:
    code = (
        "from trio_micro.analysis import SummaryBuilder\n"
        "builder = SummaryBuilder()\n"
        f"builder.add_json_lines({line(record())!r})\n"
        "assert builder.build().calls == 1\n"
    )
    loaded = imported_after(code)
    assert not any(loaded.values()), loaded


@pytest.mark.parametrize("command", ["summary", "slow", "errors"])
def test_logs_command_imports_no_heavy_library(tmp_path: pathlib.Path, command: str) -> None:
    log = tmp_path / "access.jsonl"
    log.write_bytes(line(record()))
    code = (
        "from trio_micro.cli import main\n"
        f"assert main(['logs', {command!r}, '--json', {str(log)!r}]) == 0\n"
    )
    loaded = imported_after(code)
    assert not any(loaded.values()), loaded


def test_version_imports_no_command() -> None:
    code = (
        "import contextlib, io\n"
        "from trio_micro.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--version'])\n"
        "assert out.getvalue().startswith('trio-micro '), out.getvalue()\n"
    )
    loaded = imported_after(code)
    assert not any(loaded.values()), loaded


def test_help_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from trio_micro.cli import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("logs", "registry", "serve", "call", "list", "demo"))


def test_a_toolkit_name_imports_the_toolkit_on_first_use() -> None:
    loaded = imported_after("import trio_micro\ntrio_micro.open_task_group")
    assert loaded["trio"]


def test_a_logging_name_imports_structlog_on_first_use() -> None:
    loaded = imported_after("import trio_micro.observe\ntrio_micro.observe.configure_logging")
    assert loaded["structlog"]


@pytest.mark.parametrize("package", [trio_micro, observe, analysis, cli], ids=lambda p: p.__name__)
def test_dir_lists_every_lazy_name_before_it_is_imported(package: object) -> None:
    # In a fresh interpreter, where no lazy name has been imported (and cached) yet.
    name = package.__name__  # type: ignore[attr-defined]
    code = (
        f"import importlib\npkg = importlib.import_module({name!r})\n"
        "missing = set(pkg.__all__) - set(dir(pkg))\n"
        "assert not missing, missing\n"
        "assert set(pkg.__all__) - set(vars(pkg)), 'nothing was lazy'\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=True)


@pytest.mark.parametrize("package", [trio_micro, observe, analysis, cli], ids=lambda p: p.__name__)
def test_unknown_name_raises_attribute_error(package: object) -> None:
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        package.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_star_import_gives_every_name() -> None:
    namespace: dict[str, object] = {}
    exec("from trio_micro import *", namespace)
    assert set(trio_micro.__all__) <= set(namespace)


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from trio_micro.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("logs", "registry", "serve", "call", "list", "bench", "demo"):
        assert f"    {command} " in out, command
