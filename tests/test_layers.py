"""The layers of docs/design.md section 2, checked on the source: no module imports a layer
above its own, or another package's private module (or private name).

Read with :mod:`ast`, not by importing, so that an import inside a function or under
``TYPE_CHECKING`` counts as much as one at the top.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

import trio_micro

ROOT = pathlib.Path(trio_micro.__file__).parent
REPO = ROOT.parent

# docs/design.md section 2, bottom to top. A module may import its own package and any
# package of a lower rank; packages of one rank are independent of each other. The
# root's private helpers (trio_micro._errors, _validate, _lazy, _version) are below
# everything; the root package itself (a facade re-exporting the toolkit) and
# ``python -m trio_micro`` are above everything.
RANKS = {
    "toolkit": 1,
    "protocol": 1,
    "observe": 1,
    "rpc": 2,
    "registry": 3,
    "analysis": 3,
    # The asyncio client: the protocol and rpc's service definitions (which don't import
    # trio: rpc's names are lazy), never rpc's trio machinery.
    "aio": 3,
    # The OpenTelemetry bridge: interceptors (rpc) that rebind observe's span.
    "otel": 3,
    # The Connect HTTP gateway: calls through rpc (and registry targets, via the CLI).
    "gateway": 4,
    "supervise": 4,
    # What users import in their tests (and the pytest plugin): servers, channels and
    # registries to test with, over rpc, registry and observe.
    "testing": 4,
    "cli": 5,
}
TOP = 6


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: pathlib.Path) -> bool:
    return path.name == "__init__.py"


def exists(module: str) -> bool:
    """Whether ``module`` (``trio_micro.x.y``) is a module or package of the source tree."""
    base = REPO.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(path: pathlib.Path) -> Iterator[tuple[int, str]]:
    """``(line, name)`` for each trio_micro module or name that the file imports.

    ``from pkg import name`` yields ``pkg.name``: the submodule when there is one, else the
    name as found in ``pkg``.
    """
    module = module_name(path)
    package = module if is_package(path) else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{source}.{alias.name}"


def owner_of_private(name: str) -> str | None:
    """The package whose private part ``name`` reaches into, or ``None`` if it is public.

    ``trio_micro.observe._trace._current`` -> ``trio_micro.observe``.
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def rank(module: str) -> int:
    """The layer of a module of the package (``trio_micro.rpc._server`` -> rpc's)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return TOP
    if parts[1].startswith("_"):
        return 0
    return RANKS[parts[1]]


def layer_target(name: str) -> str:
    """The module an imported name belongs to: itself if a module, else its parent."""
    return name if exists(name) else name.rpartition(".")[0]


PACKAGE_FILES = sorted(ROOT.rglob("*.py"))
OUTSIDE_FILES = sorted(
    path for folder in ("examples", "benchmarks") for path in (REPO / folder).rglob("*.py")
)


def test_every_package_has_a_rank() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(RANKS)


def test_the_import_scan_sees_imports_in_functions_and_relative_ones() -> None:
    found = {name for _, name in imported_modules(ROOT / "cli" / "_call.py")}
    assert "trio_micro.registry" in found  # imported inside check_target
    assert "trio_micro.rpc" in found  # `from .. import rpc`


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_another_packages_private_module(path: pathlib.Path) -> None:
    module = module_name(path)
    leaks = [
        f"line {line}: {name}"
        for line, name in imported_modules(path)
        if name.startswith("trio_micro.")
        and (owner := owner_of_private(name)) is not None
        and module != owner
        and not module.startswith(owner + ".")
    ]
    assert not leaks, f"{module} imports private parts of other packages: {leaks}"


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_a_layer_above_its_own(path: pathlib.Path) -> None:
    module = module_name(path)
    own_package = ".".join(module.split(".")[:2])
    upward = [
        f"line {line}: {name}"
        for line, name in imported_modules(path)
        if name.startswith("trio_micro.")
        and not (target := layer_target(name)).startswith(own_package + ".")
        and target != own_package
        and rank(target) >= rank(module)
        and rank(module) != TOP
    ]
    assert not upward, f"{module} (layer {rank(module)}) imports upward or sideways: {upward}"


@pytest.mark.parametrize("path", OUTSIDE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_examples_and_benchmarks_use_only_public_modules(path: pathlib.Path) -> None:
    leaks = [
        f"line {line}: {name}"
        for line, name in imported_modules(path)
        if name.startswith("trio_micro") and owner_of_private(name) is not None
    ]
    assert not leaks, f"{path.name} imports private parts of trio_micro: {leaks}"


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("trio_micro.observe._trace._current", "trio_micro.observe"),
        ("trio_micro.observe.current_span", None),
        ("trio_micro._validate.check_int", "trio_micro"),
        ("trio_micro.__version__", None),
    ],
)
def test_owner_of_private(name: str, owner: str | None) -> None:
    assert owner_of_private(name) == owner
