"""Context managers of rpc raise the body's own exception, not an ExceptionGroup (issue 14).

The machinery is ``trio_micro.open_background_nursery`` (tests/toolkit/test_background.py);
these check that the public context managers use it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractAsyncContextManager

import pytest
import trio
import trio.testing

from trio_micro import rpc

from .conftest import address
from .services import GetUserRequest, TestService, User


class Users(rpc.Service, name="users"):
    @rpc.unary
    async def get_user(self, req: GetUserRequest) -> User:
        raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no user {req.user_id}")


async def test_rpc_error_from_a_call_in_the_body_is_caught_by_except_rpc_error() -> None:
    # The repro: this `except rpc.RpcError` used to catch nothing.
    codes: list[rpc.Status] = []
    try:
        async with (
            rpc.open_server([Users()], host="127.0.0.1", port=0) as server,
            rpc.open_channel(address(server)) as channel,
        ):
            await channel.stub(Users).get_user(GetUserRequest(user_id=1))
    except rpc.RpcError as exc:
        codes.append(exc.code)
    assert codes == [rpc.Status.NOT_FOUND]


async def test_keyboard_interrupt_in_an_open_server_body_comes_out_unwrapped() -> None:
    with pytest.raises(KeyboardInterrupt):
        async with rpc.open_server([TestService()], host="127.0.0.1", port=0):
            raise KeyboardInterrupt


async def test_system_exit_in_an_open_channel_body_comes_out_unwrapped(
    server: rpc.Server,
) -> None:
    with pytest.raises(SystemExit):
        async with rpc.open_channel(address(server)):
            raise SystemExit(3)


async def cancel_inside(manager: AbstractAsyncContextManager[object]) -> list[type[BaseException]]:
    """Cancel a scope around ``async with manager`` from its body; return what came out of
    the ``async with`` (the scope absorbs it)."""
    seen: list[type[BaseException]] = []
    with trio.CancelScope() as scope:
        try:
            async with manager:
                scope.cancel()
                await trio.sleep_forever()
        except BaseException as exc:
            seen.append(type(exc))
            raise
    assert scope.cancelled_caught
    return seen


async def test_cancelled_body_of_open_channel_raises_cancelled_to_its_scope(
    server: rpc.Server,
) -> None:
    assert await cancel_inside(rpc.open_channel(address(server))) == [trio.Cancelled]


async def test_cancelled_body_of_open_server_raises_cancelled_to_its_scope() -> None:
    manager = rpc.open_server([TestService()], host="127.0.0.1", port=0)
    assert await cancel_inside(manager) == [trio.Cancelled]


class FailingResolver:
    """A resolver whose watch fails with ValueError (a bad service name, which ends the
    channel) when it is stopped."""

    async def watch(self, service: str) -> AsyncGenerator[Sequence[rpc.ResolvedEndpoint], None]:
        try:
            yield []
            await trio.sleep_forever()
        finally:
            raise ValueError(f"no such service {service!r}")


async def test_a_body_error_and_a_background_failure_come_out_together() -> None:
    with pytest.RaisesGroup(
        pytest.RaisesExc(rpc.RpcError, check=lambda e: e.code is rpc.Status.NOT_FOUND),
        ValueError,
        flatten_subgroups=True,
    ):
        async with rpc.open_channel("users", registry=FailingResolver()):
            await trio.testing.wait_all_tasks_blocked()
            raise rpc.RpcError(rpc.Status.NOT_FOUND, "no user 1")
