"""How the package ``__init__`` modules export their names.

* :func:`lazy_exports` (PEP 562): a package lists which private module defines each
  public name and gets the module-level ``__getattr__`` and ``__dir__`` that import a name
  on first use and cache it in the package, so that importing the package costs nothing
  until a name is used (``trio-micro logs`` must not pay for importing Trio or structlog).
* :func:`fixup_module_metadata`: public classes and functions say they live in the package
  users import them from (``trio_micro.rpc.RpcError``, not ``trio_micro.rpc._errors``), as
  trio's function of that name does, so reprs, tracebacks, pickles and docs show the public
  name. A package with eager imports calls it at the end of its ``__init__``; the lazy
  ``__getattr__`` calls it for every name of a module it imports.
"""

from __future__ import annotations

import importlib
import sys
import types
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
    fixed: set[str] = set()  # modules whose names fixup_module_metadata has seen

    def getattr_(name: str) -> object:
        """Import ``name`` from its module on first access, and cache it in the package.

        The first access to any name of a module fixes the ``__module__`` of all the
        module's names listed in ``public``, so that a class the package hands out
        indirectly (``DebugServer``, from ``open_debug_server``) shows its public name too.
        """
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module, package)
        if module == f".{name}":
            value: object = imported
        else:
            value = getattr(imported, name)
            if module not in fixed:
                fixed.add(module)
                names = {n: getattr(imported, n) for n in modules[module] if n in listed}
                fixup_module_metadata(package, names)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *listed})

    return getattr_, dir_


def fixup_module_metadata(package: str, names: Mapping[str, object]) -> None:
    """Make the classes and functions in ``names`` say that they live in ``package``.

    Sets ``__module__`` of each class and function defined in a private module of
    ``package`` (``trio_micro.rpc._errors`` for ``trio_micro.rpc``), and of the public and
    special methods and the classes defined in such a class (not of ``_private`` methods,
    so that task names keep saying where a task's code is). Names defined elsewhere keep
    theirs: ``rpc.Status`` stays ``trio_micro.protocol.Status``. Constants and other
    instances are left alone.

    Args:
        package: The package's ``__name__``.
        names: Public name -> object, e.g. ``{name: globals()[name] for name in __all__}``.
    """
    prefix = f"{package}."
    seen: set[int] = set()

    def fix(obj: object) -> None:
        if id(obj) in seen or not isinstance(obj, type | types.FunctionType):
            return
        seen.add(id(obj))
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module.startswith(prefix):
            return
        if not any(part.startswith("_") for part in module[len(prefix) :].split(".")):
            return
        if isinstance(obj, type):
            _resolve_annotations(obj, module)
        obj.__module__ = package
        if isinstance(obj, type):
            # Not private methods: they run as tasks, whose names (the task tree, the task
            # monitor) show where the code is.
            for name, attr in vars(obj).items():
                if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
                    fix(_function_of(attr))

    for value in names.values():
        fix(value)


def _resolve_annotations(cls: type, module: str) -> None:
    """Evaluate the string annotations of ``cls`` in ``module``, where they were written.

    Under ``from __future__ import annotations`` annotations are strings, which
    :func:`typing.get_type_hints` and msgspec (a ``Struct``'s fields) evaluate in
    ``sys.modules[cls.__module__]``: once that names the package, a name that only the
    private module imports (``Any``, ``Annotated``, a private alias) would be missing.
    A name imported only under ``TYPE_CHECKING`` stays a string, as before.
    """
    # The class's own dict, changed in place (inspect.get_annotations returns a copy).
    annotations = cls.__dict__.get("__annotations__")  # noqa: RUF063
    if not annotations:
        return
    namespace = vars(sys.modules[module])
    local = dict(vars(cls))
    for name, value in annotations.items():
        if isinstance(value, str):
            try:
                annotations[name] = eval(value, namespace, local)
            except NameError:
                continue


def _function_of(attr: object) -> object:
    """The function behind a class attribute: a method, property getter or classmethod."""
    if isinstance(attr, staticmethod | classmethod):
        return attr.__func__
    if isinstance(attr, property):
        return attr.fget
    return attr
