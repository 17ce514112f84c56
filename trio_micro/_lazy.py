"""Lazy re-exports for the package ``__init__`` modules (PEP 562).

A package lists which private module defines each public name; :func:`lazy_exports`
returns the module-level ``__getattr__`` and ``__dir__`` that import a name on first use
and cache it in the package, so that importing the package costs nothing until a name is
used (``trio-micro logs`` must not pay for importing Trio or structlog).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__: list[str] = []


def lazy_exports(
    package: str,
    namespace: dict[str, Any],
    modules: Mapping[str, Iterable[str]],
    public: Iterable[str],
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package``.

    Args:
        package: The package's ``__name__``.
        namespace: Its ``globals()``: where a name is cached once imported.
        modules: Module name relative to the package (``"._trace"``) -> the names it
            defines; a name may also be the module's own (``"toolkit"`` for
            ``".toolkit"``), which then resolves to the module itself.
        public: The package's ``__all__`` (what ``dir()`` lists besides the namespace).
    """
    where = {name: module for module, names in modules.items() for name in names}
    listed = frozenset(public)

    def getattr_(name: str) -> object:
        """Import ``name`` from its module on first access, and cache it in the package."""
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module, package)
        value = imported if module == f".{name}" else getattr(imported, name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *listed})

    return getattr_, dir_
