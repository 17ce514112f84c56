"""The registry's context managers raise the body's own exception, not a group (issue 14)."""

from __future__ import annotations

import pytest

from trio_micro import rpc
from trio_micro.registry import open_registry_client, open_registry_server


async def fail_inside_server_and_client() -> None:
    async with (
        open_registry_server(port=0) as server,
        open_registry_client(server.target),
    ):
        raise rpc.RpcError(rpc.Status.NOT_FOUND, "no such service")


async def test_registry_server_and_client_let_the_body_error_out_unwrapped() -> None:
    with pytest.raises(rpc.RpcError, match="no such service"):
        await fail_inside_server_and_client()
