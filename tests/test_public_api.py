"""Every package re-exports its public names in a complete ``__all__``."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
import types

import pytest

import trio_micro

PACKAGES = [
    "trio_micro",
    *sorted(
        name
        for _, name, is_pkg in pkgutil.walk_packages(trio_micro.__path__, "trio_micro.")
        if is_pkg
    ),
]

# Private modules whose ``__all__`` is internal API shared between subpackages.
INTERNAL_MODULES = {"trio_micro._validate"}


def _defined_public_names(package: types.ModuleType) -> set[str]:
    """Public classes and functions defined in the package's private modules."""
    names: set[str] = set()
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") or info.ispkg:
            continue
        if f"{package.__name__}.{info.name}" in INTERNAL_MODULES:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, value in vars(module).items():
            if name.startswith("_") or not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            if getattr(value, "__module__", None) == module.__name__ and name in getattr(
                module, "__all__", ()
            ):
                names.add(name)
    return names


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_resolve(name: str) -> None:
    # Sorting is ruff's RUF022 (isort-style: constants, classes, functions).
    package = importlib.import_module(name)
    for attr in package.__all__:
        assert hasattr(package, attr), f"{name}.__all__ names missing attribute {attr!r}"


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_every_public_name_of_its_private_modules(name: str) -> None:
    package = importlib.import_module(name)
    missing = _defined_public_names(package) - set(package.__all__)
    assert not missing, f"{name}.__all__ lacks {sorted(missing)}"


def test_top_level_reexports_the_toolkit() -> None:
    toolkit = importlib.import_module("trio_micro.toolkit")
    missing = set(toolkit.__all__) - set(trio_micro.__all__)
    assert not missing, f"trio_micro.__all__ lacks toolkit names {sorted(missing)}"


def test_package_ships_py_typed_marker() -> None:
    assert (pathlib.Path(trio_micro.__file__).parent / "py.typed").is_file()
