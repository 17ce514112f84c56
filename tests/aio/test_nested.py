"""The asyncio client and deeply nested responses (issue #15, defect 3)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from trio_micro import aio, rpc

from ..nested import DeepService, Shallow, ShallowClient
from .conftest import start_server
from .services import AioTestService, Answer, Ask


def test_a_nested_response_fails_its_call_alone() -> None:
    server = start_server(extra=[DeepService()])

    async def main() -> tuple[list[rpc.RpcError], Answer]:
        errors: list[rpc.RpcError] = []
        async with asyncio.timeout(30), aio.open_channel(server.target) as channel:
            stub = channel.stub(ShallowClient)
            for attempt in (stub.answer(Shallow()), _drain(stub.items(Shallow()))):
                try:
                    await attempt
                except rpc.RpcError as exc:
                    errors.append(exc)
            return errors, await channel.stub(AioTestService).echo(Ask(value=3))

    try:
        errors, answer = asyncio.run(main())
    finally:
        server.stop()
    assert [(e.code, e.message.split(" from ")[0]) for e in errors] == [
        (rpc.Status.INTERNAL, "bad response"),
        (rpc.Status.INTERNAL, "bad stream item"),
    ]
    assert answer.value == 3


async def _drain(stream: AsyncIterator[Shallow]) -> None:
    async for _ in stream:
        pytest.fail("a nested item was decoded")  # pragma: no cover
