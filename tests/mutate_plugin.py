"""A pytest plugin for `make mutate` only: ``[tool.mutmut]`` loads it with ``-p``.

mutmut names each mutant after the module that defines the mutated function, and its
trampolines check a function's ``__module__`` both to record which tests reach a function
and to decide whether the active mutant is theirs. Each package's `fixup_module_metadata`
renames ``__module__`` to the public package (``trio_micro.toolkit._ratelimit`` becomes
``trio_micro.toolkit``), so mutmut would find no test for any public method and would never
switch its mutants on: they would all "survive". This plugin gives every function back the
name of the module whose file defines it, before any test runs. It changes nothing else,
and the normal test runs never load it.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest

_PACKAGES = ("toolkit", "protocol", "observe", "rpc", "registry", "analysis")


def _functions_of(attr: object) -> list[types.FunctionType]:
    """The functions behind a class attribute, and whatever they wrap."""
    if isinstance(attr, staticmethod | classmethod):
        attr = attr.__func__
    found: list[types.FunctionType] = []
    for candidate in (attr.fget, attr.fset) if isinstance(attr, property) else (attr,):
        while isinstance(candidate, types.FunctionType):
            found.append(candidate)
            candidate = getattr(candidate, "__wrapped__", None)
    return found


def _restore(module: types.ModuleType) -> None:
    path = getattr(module, "__file__", None)
    for value in list(vars(module).values()):
        for attr in list(vars(value).values()) if isinstance(value, type) else [value]:
            for function in _functions_of(attr):
                if function.__code__.co_filename == path:
                    function.__module__ = module.__name__


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name in _PACKAGES:
        package = importlib.import_module(f"trio_micro.{name}")
        for public in package.__all__:  # a lazy package fixes a module on first access
            getattr(package, public)
    for name, module in list(sys.modules.items()):
        if name.startswith("trio_micro.") and name.rpartition(".")[2].startswith("_"):
            _restore(module)
