from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from trio_micro import rpc

from .services import TestService


@pytest.fixture
def service() -> TestService:
    return TestService()


@pytest.fixture
async def server(service: TestService) -> AsyncIterator[rpc.Server]:
    async with rpc.open_server([service], host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
async def channel(server: rpc.Server) -> AsyncIterator[rpc.Channel]:
    async with rpc.open_channel(address(server)) as channel:
        yield channel


@pytest.fixture
def stub(channel: rpc.Channel) -> TestService:
    return channel.stub(TestService)


def address(server: rpc.Server) -> str:
    host, port = server.address
    return f"{host}:{port}"
