"""Every package re-exports its public names in a complete ``__all__``."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pickle
import pkgutil
import subprocess
import sys
import types
import typing

import msgspec
import msgspec.inspect
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
            # Defined there: its __module__ is the module, or the package once fixed up.
            defined = getattr(value, "__module__", None) in (module.__name__, package.__name__)
            if defined and name in getattr(module, "__all__", ()):
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


def _exported_classes_and_functions() -> list[tuple[str, str, object]]:
    found: list[tuple[str, str, object]] = []
    # trio_micro.cli exports only the console entry point, `main`; not library API.
    for name in (p for p in PACKAGES if p != "trio_micro.cli"):
        package = importlib.import_module(name)
        for attr in package.__all__:
            value = getattr(package, attr)
            if inspect.isclass(value) or inspect.isfunction(value):
                found.append((name, attr, value))
    return found


EXPORTED = _exported_classes_and_functions()


@pytest.mark.parametrize(
    ("package", "name", "value"), EXPORTED, ids=[f"{p}.{n}" for p, n, _ in EXPORTED]
)
def test_module_of_a_public_name_is_the_public_package_it_is_found_in(
    package: str, name: str, value: object
) -> None:
    # The package that exports it, or (rpc.Status, the top-level toolkit names) the public
    # package that defines it: never a private module.
    module = value.__module__
    assert not any(part.startswith("_") for part in module.split(".")), module
    assert getattr(importlib.import_module(module), name) is value
    assert module == package or module in PACKAGES


def test_reprs_and_tracebacks_show_the_public_name() -> None:
    from trio_micro import rpc

    assert repr(rpc.RpcError) == "<class 'trio_micro.rpc.RpcError'>"
    assert rpc.RpcError.__init__.__module__ == "trio_micro.rpc"
    assert repr(rpc.Status) == "<enum 'Status'>"
    assert rpc.Status.__module__ == "trio_micro.protocol"
    assert trio_micro.TrioMicroError.__module__ == "trio_micro"
    assert trio_micro.TaskGroup.__module__ == "trio_micro.toolkit"


def test_private_methods_keep_their_module_for_task_names() -> None:
    # Task names are fn.__module__ + fn.__qualname__: the task tree shows where code is.
    private_methods = [
        attr
        for _, _, value in EXPORTED
        if inspect.isclass(value)
        for name, attr in vars(value).items()
        if inspect.isfunction(attr)
        and name.startswith("_")
        and not name.endswith("__")
        and attr.__module__.startswith("trio_micro.")
    ]
    assert private_methods
    for method in private_methods:
        assert method.__module__.rpartition(".")[2].startswith("_"), method


def test_a_lazy_module_fixes_all_its_names_on_first_use() -> None:
    # A fresh interpreter: DebugServer is handed out by open_debug_server, never looked up.
    code = (
        "import sys, trio_micro.observe as observe\n"
        "observe.open_debug_server\n"
        "cls = sys.modules['trio_micro.observe._debug'].DebugServer\n"
        "assert cls.__module__ == 'trio_micro.observe', cls.__module__\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("package", "name", "value"),
    [(p, n, v) for p, n, v in EXPORTED if inspect.isclass(v)],
    ids=[f"{p}.{n}" for p, n, v in EXPORTED if inspect.isclass(v)],
)
def test_type_hints_of_public_classes_still_resolve(package: str, name: str, value: type) -> None:
    # Annotations are strings (PEP 563), evaluated in sys.modules[cls.__module__]: the
    # fixup evaluates them where they were written before it changes __module__.
    typing.get_type_hints(value)
    if issubclass(value, msgspec.Struct):
        msgspec.inspect.type_info(value)


def test_public_exceptions_and_structs_pickle_by_their_public_name() -> None:
    from trio_micro import protocol, rpc

    error = pickle.loads(pickle.dumps(rpc.RpcError(rpc.Status.NOT_FOUND, "x", {"k": "v"})))
    assert (error.code, error.message, error.details) == (rpc.Status.NOT_FOUND, "x", {"k": "v"})
    assert b"trio_micro.rpc" in pickle.dumps(rpc.Endpoint("h", 1))
    settings = protocol.Settings(max_frame_size=1 << 20)
    assert b"trio_micro.protocol\x94" in pickle.dumps(settings)
    assert pickle.loads(pickle.dumps(settings)) == settings


_FAKE_MODULE = """
from __future__ import annotations
from typing import TYPE_CHECKING, Any
if TYPE_CHECKING:
    from decimal import Decimal

class Thing:
    known: Any
    unknown: Decimal

    def public(self) -> None: ...
    def _private(self) -> None: ...
    def __repr__(self) -> str: return "Thing()"

def make() -> Thing:
    return Thing()

INSTANCE = Thing()
"""


def test_fixup_module_metadata_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from trio_micro._lazy import fixup_module_metadata

    module = types.ModuleType("fakepkg._impl")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(_FAKE_MODULE, "<fakepkg._impl>", "exec"), vars(module))
    thing, make = module.Thing, module.make
    fixup_module_metadata("fakepkg", {"Thing": thing, "make": make, "INSTANCE": module.INSTANCE})
    assert (thing.__module__, make.__module__) == ("fakepkg", "fakepkg")
    assert (thing.public.__module__, thing.__repr__.__module__) == ("fakepkg", "fakepkg")
    assert thing._private.__module__ == "fakepkg._impl"
    assert "__module__" not in vars(module.INSTANCE)
    # Resolved where written; a name only type checkers import stays a string.
    assert vars(thing)["__annotations__"] == {"known": typing.Any, "unknown": "Decimal"}


def test_fixup_module_metadata_leaves_names_of_other_packages() -> None:
    from trio_micro._lazy import fixup_module_metadata

    status = importlib.import_module("trio_micro.protocol").Status
    fixup_module_metadata("trio_micro.rpc", {"Status": status, "len": len})
    assert status.__module__ == "trio_micro.protocol"
