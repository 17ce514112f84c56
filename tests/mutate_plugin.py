"""A pytest plugin for `make mutate` only: ``[tool.mutmut]`` loads it with ``-p``.

mutmut names each mutant after the module that defines the mutated function, and its
trampolines check a function's ``__module__`` both to record which tests reach a function
and to decide whether the active mutant is theirs. Each package's `fixup_module_metadata`
renames ``__module__`` to the public package (``trio_micro.toolkit._ratelimit`` becomes
``trio_micro.toolkit``), so mutmut would find no test for any public method and would never
switch its mutants on: they would all "survive". This plugin gives every function back the
name of the module whose file defines it, before any test runs.

It also narrows each mutant's tests to the ones that matter for its module (`TESTS_FOR`):
mutmut runs every test that reached the mutated function, and end-to-end tests elsewhere
(the CLI, the examples, the registry over real sockets) reach most hot code, which would
make each mutant cost seconds instead of a fraction of one. The normal test runs never load
this plugin.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import pytest

_PACKAGES = ("toolkit", "protocol", "observe", "rpc", "registry", "analysis")

# Mutated module -> the test files (node id prefixes) that test it.
TESTS_FOR: dict[str, tuple[str, ...]] = {
    "trio_micro.toolkit._ratelimit": ("tests/toolkit/test_ratelimit.py",),
    "trio_micro.toolkit._singleflight": ("tests/toolkit/test_singleflight.py",),
    # _forward is also open_throttle's loop: its limiter path is tested there.
    "trio_micro.toolkit._channels": (
        "tests/toolkit/test_channels.py",
        "tests/toolkit/test_throttle.py",
    ),
    # Not test_streams_state.py: its Hypothesis state machine reaches every method and
    # takes 6 s, which would make each of the 646 mutants cost that much.
    "trio_micro.protocol._connection": (
        "tests/protocol/test_connection.py",
        "tests/protocol/test_streams.py",
        "tests/protocol/test_compression.py",  # the compression glue
    ),
    "trio_micro.protocol._codec": ("tests/protocol/",),
    "trio_micro.protocol._compression": ("tests/protocol/test_compression.py",),
    "trio_micro.rpc._retry": ("tests/rpc/test_retry.py",),
    # The success-rate check and the slow-call tracker have their own files; not the
    # gray-failure tests over channels (a second or more each), only its unit tests.
    "trio_micro.rpc._balancing": (
        "tests/rpc/test_balancing.py",
        "tests/rpc/test_success_rate.py",
        "tests/rpc/test_gray_failure.py::test_latency_tracker",
        "tests/rpc/test_gray_failure.py::test_slow_call",
    ),
    "trio_micro.rpc._server_calls": (
        "tests/rpc/test_server.py",
        "tests/rpc/test_calls.py",
        "tests/rpc/test_cancellation.py",
        "tests/rpc/test_stream_failures.py",
        "tests/rpc/test_call_workers.py",
        "tests/rpc/test_streams.py",
        "tests/rpc/test_hostile_memory.py",  # stall_timeout, max_stalled_streams, byte budgets
    ),
    "trio_micro.registry._server": (
        "tests/registry/test_server_leases.py",
        "tests/registry/test_contract.py",
        "tests/registry/test_auth.py",  # the token and client-certificate checks
        "tests/registry/test_ownership.py",  # takeovers, the lease table's bounds
    ),
    "trio_micro.registry._memory": (
        "tests/registry/test_memory.py",
        "tests/registry/test_contract.py",
    ),
    # Only the sketch's own tests: the Hypothesis tests elsewhere in tests/analysis take
    # about 30 s a mutant on a loaded machine, and test_sketch.py pins the sketch's behaviour.
    "trio_micro.analysis._sketch": ("tests/analysis/test_sketch.py",),
}


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # mutmut names the active mutant "<module>.<function>__mutmut_<n>" in this variable.
    module = os.environ.get("MUTANT_UNDER_TEST", "").rpartition(".")[0]
    prefixes = TESTS_FOR.get(module)
    if prefixes is None:
        return
    deselected = [item for item in items if not item.nodeid.startswith(prefixes)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.nodeid.startswith(prefixes)]
