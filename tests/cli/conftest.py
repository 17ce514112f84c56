"""Fixtures shared by the tests that run CLI commands against in-process servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from trio_micro import rpc

from ..rpc.services import TestService


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    # In-process runs of a command configure structlog process-wide (to a stderr that
    # capsys closes after the test): undo it after every test.
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def quiet_logging() -> Iterator[None]:
    """Silence structlog for the test and restore its configuration afterwards.

    The in-process servers would log to stdout by default, and the commands configure
    structlog for the whole process: silence the first, undo the second afterwards.
    """
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    yield
    structlog.configure(**saved)


@pytest.fixture
async def target() -> AsyncIterator[str]:
    """Address (``host:port``) of an in-process server running the test service."""
    async with rpc.open_server([TestService()], host="127.0.0.1", port=0) as server:
        host, port = server.address
        yield f"{host}:{port}"
