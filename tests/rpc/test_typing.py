"""Stubs and ``open_server`` are typed: mypy knows what a call takes and returns."""

from __future__ import annotations

import inspect
import typing

import pytest

from trio_micro import rpc

mypy_api = pytest.importorskip("mypy.api")

PRELUDE = """
from __future__ import annotations
from collections.abc import AsyncIterator
import msgspec
from trio_micro import aio, rpc

class GetUserRequest(msgspec.Struct):
    user_id: int

class User(msgspec.Struct):
    user_id: int
    name: str

class UserService(rpc.Service, name="users"):
    @rpc.unary
    async def get_user(self, req: GetUserRequest) -> User:
        return User(req.user_id, "ada")

    @rpc.unary(idempotent=True)
    async def ping(self, req: GetUserRequest) -> GetUserRequest:
        return req

    @rpc.server_stream
    async def list_users(self, req: GetUserRequest) -> AsyncIterator[User]:
        yield User(1, "ada")

    @rpc.client_stream
    async def import_users(self, requests: rpc.RequestStream[User]) -> GetUserRequest:
        return GetUserRequest(len([u async for u in requests]))

    @rpc.bidi_stream
    async def chat(
        self, requests: rpc.RequestStream[GetUserRequest], responses: rpc.ResponseSender[User]
    ) -> None:
        async for req in requests:
            await responses.send(User(req.user_id, "ada"))
"""


GOOD = """
async def good(channel: rpc.Channel) -> str:
    users = channel.stub(UserService)
    user = await users.get_user(GetUserRequest(user_id=1))
    again: GetUserRequest = await users.ping(GetUserRequest(user_id=2))
    names = [u.name async for u in users.list_users(GetUserRequest(user_id=again.user_id))]
    return user.name + "".join(names)


async def good_streams(channel: rpc.Channel) -> int:
    users = channel.stub(UserService)
    async with users.import_users() as (send, receive):
        await send.send(User(1, "ada"))
        await send.aclose()
        summary: GetUserRequest = await receive.receive()
    async with users.chat() as (ask, answers):
        await ask.send(GetUserRequest(user_id=summary.user_id))
        got: list[User] = [u async for u in answers]
    return len(got)


async def good_aio(channel: aio.Channel) -> int:
    users = channel.stub(UserService)  # the same stub types from asyncio
    user = await users.get_user(GetUserRequest(user_id=1))
    async with users.import_users() as (send, receive):
        await send.send(user)
        await send.aclose()
        summary: GetUserRequest = await receive.receive()
    async with users.chat() as (ask, answers):
        await ask.send(summary)
        return len([u async for u in answers])
"""

WRONG_STREAM_ITEM = """
async def wrong_stream_item(channel: rpc.Channel) -> None:
    async with channel.stub(UserService).import_users() as (send, _):
        await send.send(GetUserRequest(user_id=1))  # line: wrong_stream_item
"""

WRONG_STREAM_RESULT = """
async def wrong_stream_result(channel: rpc.Channel) -> str:
    async with channel.stub(UserService).chat() as (_, answers):
        return await answers.receive()  # line: wrong_stream_result
"""

WRONG_REQUEST = """
async def wrong_request(channel: rpc.Channel) -> None:
    await channel.stub(UserService).get_user(User(1, "x"))  # line: wrong_request
"""

WRONG_RESULT = """
async def wrong_result(channel: rpc.Channel) -> int:
    user = await channel.stub(UserService).get_user(GetUserRequest(user_id=1))
    return user.name  # line: wrong_result
"""

SERVER_OPTIONS = """
async def server_options() -> None:
    async with rpc.open_server(
        [UserService()], port=0, grace_period=1.5, max_connections=None, reflection=False
    ) as server:
        server.address
    async with rpc.open_server([UserService()], grace_period="1s"):  # line: wrong_option
        pass
    async with rpc.open_server([UserService()], grace=1.0):  # line: unknown_option
        pass
"""

MARKS = (
    "good",
    "wrong_request",
    "wrong_result",
    "wrong_option",
    "unknown_option",
    "wrong_stream_item",
    "wrong_stream_result",
)


@pytest.fixture(scope="module")
def mypy_output() -> dict[str, list[str]]:
    """Type-check one module (one slow mypy run) and file its errors under the marked lines."""
    source = (
        PRELUDE
        + GOOD
        + WRONG_REQUEST
        + WRONG_RESULT
        + SERVER_OPTIONS
        + WRONG_STREAM_ITEM
        + WRONG_STREAM_RESULT
    )
    stdout, stderr, _ = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir=/dev/null", "-c", source]
    )
    lines = source.splitlines()
    by_mark: dict[str, list[str]] = {mark: [] for mark in MARKS}
    for message in (stdout + stderr).splitlines():
        parts = message.split(":", 2)
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        line = lines[int(parts[1]) - 1]
        mark = line.rpartition("# line: ")[2] if "# line: " in line else "good"
        by_mark[mark].append(parts[2])
    return by_mark


def test_stub_calls_type_check(mypy_output: dict[str, list[str]]) -> None:
    assert mypy_output["good"] == []


def test_wrong_request_type_fails_type_check(mypy_output: dict[str, list[str]]) -> None:
    assert any(
        'incompatible type "User"; expected "GetUserRequest"' in error
        for error in mypy_output["wrong_request"]
    ), mypy_output


def test_wrong_result_use_fails_type_check(mypy_output: dict[str, list[str]]) -> None:
    assert any("Incompatible return value" in error for error in mypy_output["wrong_result"]), (
        mypy_output
    )


def test_sending_a_wrong_stream_item_fails_type_check(mypy_output: dict[str, list[str]]) -> None:
    assert any(
        'incompatible type "GetUserRequest"; expected "User"' in error
        for error in mypy_output["wrong_stream_item"]
    ), mypy_output


def test_using_a_stream_answer_wrongly_fails_type_check(
    mypy_output: dict[str, list[str]],
) -> None:
    assert any(
        "Incompatible return value" in error for error in mypy_output["wrong_stream_result"]
    ), mypy_output


def test_open_server_option_of_the_wrong_type_fails_type_check(
    mypy_output: dict[str, list[str]],
) -> None:
    assert any(
        '"grace_period"' in error and 'incompatible type "str"; expected "float"' in error
        for error in mypy_output["wrong_option"]
    ), mypy_output


def test_open_server_unknown_option_fails_type_check(mypy_output: dict[str, list[str]]) -> None:
    assert any(
        'Unexpected keyword argument "grace"' in error for error in mypy_output["unknown_option"]
    ), mypy_output


def test_server_options_are_the_options_of_serve() -> None:
    # open_server's keywords are typed by ServerOptions and passed on to serve: the two
    # lists must not drift apart.
    parameters = inspect.signature(rpc.serve).parameters
    serve_options = {
        name
        for name, parameter in parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and name not in {"host", "port", "task_status"}
    }
    assert set(rpc.ServerOptions.__annotations__) == serve_options
    serve_hints = typing.get_type_hints(rpc.serve)
    option_hints = typing.get_type_hints(rpc.ServerOptions)
    assert option_hints == {name: serve_hints[name] for name in serve_options}
