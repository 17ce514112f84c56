"""The ``pytest11`` entry point: loads :mod:`trio_micro.testing.plugin` when asked to.

Registered by installing trio-micro, so it is loaded into every pytest run of an
environment that has trio-micro: it therefore only declares the ini option
``trio_micro_fixtures`` and imports nothing of trio_micro unless that option is true.
"""

from __future__ import annotations

import pytest

__all__: list[str] = []

_PLUGIN = "trio_micro.testing.plugin"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "trio_micro_fixtures",
        "load trio_micro's test fixtures (trio_micro.testing.plugin)",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getini("trio_micro_fixtures") and not config.pluginmanager.has_plugin(_PLUGIN):
        config.pluginmanager.import_plugin(_PLUGIN)
