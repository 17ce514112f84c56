"""The package metadata, the lock and the sdist agree with each other and with the tests."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import trio_micro

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = (ROOT / "requirements.lock").read_text(encoding="utf-8")
# `name==version \` then `--hash=sha256:...` lines, as `uv pip compile --generate-hashes` writes.
PINNED = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)(?:\s*;[^\\]*)?\s*\\$", re.M)


def locked() -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in PINNED.findall(LOCK)}


def declared() -> list[Requirement]:
    """Every requirement pyproject.toml declares: runtime, then each dependency group's."""
    requirements = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    for group in PYPROJECT["dependency-groups"].values():
        requirements += [Requirement(item) for item in group if isinstance(item, str)]
    return requirements


def test_the_version_is_written_once() -> None:
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert importlib.metadata.version("trio-micro") == trio_micro.__version__


def test_every_lock_entry_is_pinned_with_hashes() -> None:
    entries = LOCK.split("\n    # via")
    pins = locked()
    assert pins, "no pinned requirement found"
    requirement_lines = [line for line in LOCK.splitlines() if line[:1] not in ("", " ", "#")]
    assert len(requirement_lines) == len(pins), requirement_lines
    for entry in entries[:-1]:
        assert "--hash=sha256:" in entry.rpartition("==")[2], entry[-200:]


def test_the_lock_satisfies_every_declared_requirement() -> None:
    # A requirement changed in pyproject.toml without `make lock` fails here.
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {requirement}: run `make lock`"
        )


# What the published extras install, also in the test group so that the suite tests the
# code behind them: optional runtime dependencies, not dev tools.
EXTRA_RUNTIME = {"opentelemetry-api", "pyinstrument", "zstandard"}


def test_no_dev_tool_is_a_published_extra() -> None:
    extras = PYPROJECT["project"].get("optional-dependencies", {})
    tools = {canonicalize_name(r.name) for r in declared()} - {
        canonicalize_name(Requirement(text).name) for text in PYPROJECT["project"]["dependencies"]
    }
    tools -= EXTRA_RUNTIME
    for extra, requirements in extras.items():
        names = {canonicalize_name(Requirement(text).name) for text in requirements}
        assert not names & tools, f"extra {extra!r} carries dev tools {names & tools}"


def test_classifiers_claim_every_python_from_the_floor_up_to_this_one() -> None:
    # CI runs the suite on its oldest and newest Python: each run checks its own is claimed.
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    minors = sorted(
        int(c.rsplit(".", 1)[1])
        for c in PYPROJECT["project"]["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert minors == list(range(11, minors[-1] + 1))
    assert sys.version_info[:2] <= (3, minors[-1]), f"add the classifier for {sys.version}"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list tracked files")
def test_the_sdist_holds_every_file_its_tests_read(tmp_path: pathlib.Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "tests", "examples", "docs", "trio_micro"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout (an unpacked sdist, say)")
    built = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        archive.extractall(tmp_path / "unpacked", filter="data")
    missing = sorted(set(tracked.stdout.split()) - names)
    assert missing == [], missing
    # The unpacked sdist's tests import and collect, from its own files.
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
    )
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    assert " tests collected" in collected.stdout
