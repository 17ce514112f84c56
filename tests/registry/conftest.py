"""Fixtures: a session-wide real etcd, and the backends the contract tests run against.

Tests that need etcd are skipped when the ``etcd`` binary is missing, unless ``CI`` is set:
then they fail, so CI can't pass by skipping them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio.testing

from trio_micro.registry import (
    EtcdRegistry,
    MemoryRegistry,
    Registry,
    open_registry_client,
    open_registry_server,
)

from ._etcd_server import EtcdServer


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A real etcd on free 127.0.0.1 ports for the whole session, stopped afterwards."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd for one test that may stop and restart it (not started yet)."""
    server = EtcdServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return f"/trio_micro_test/{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "etcd", "server"])
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend a contract test runs against."""
    name: str = request.param
    if name == "etcd":
        request.getfixturevalue("etcd_server")  # start it (or skip/fail) only when needed
    return name


@pytest.fixture
def clock(backend: str) -> trio.testing.MockClock | None:
    """An autojump clock for the memory backend; real time for etcd, whose TTLs are real,
    and for the registry server, which talks over real sockets.

    pytest-trio runs a test with the clock among its arguments, so contract tests take this
    fixture by name even when they don't use it.
    """
    return trio.testing.MockClock(autojump_threshold=0) if backend == "memory" else None


@pytest.fixture
async def registry(
    backend: str, request: pytest.FixtureRequest, key_prefix: str
) -> AsyncIterator[Registry]:
    if backend == "memory":
        yield MemoryRegistry()
        return
    if backend == "server":
        async with (
            open_registry_server(host="127.0.0.1", port=0) as server,
            open_registry_client(server.target) as client,
        ):
            await client.resolve("warm-up")  # connect before the test (and its captured logs)
            yield client
        return
    server: EtcdServer = request.getfixturevalue("etcd_server")
    async with EtcdRegistry(server.url, prefix=key_prefix) as etcd:
        yield etcd
