"""trio_micro.aio: an asyncio program calls a real trio_micro server (run by trio in a
thread, 127.0.0.1 port 0). Each test is synchronous and runs its own ``asyncio.run``, so
no asyncio pytest plugin is needed; every run is bounded by ``asyncio.timeout``."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trio_micro import aio, rpc
from trio_micro.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
)

from .conftest import ServerThread, run, start_server
from .services import AioTestService, Answer, Ask

ROOT = Path(__file__).resolve().parents[2]


def test_importing_aio_and_a_service_definition_imports_no_trio() -> None:
    code = (
        "import sys, msgspec\n"
        "from trio_micro import aio, rpc\n"
        "class R(msgspec.Struct):\n    x: int\n"
        "class S(rpc.Service, name='s'):\n"
        "    @rpc.unary\n    async def m(self, req: R) -> R: return req\n"
        "rpc.RpcError(rpc.Status.NOT_FOUND); rpc.Endpoint.parse('h:1')\n"
        "assert 'trio' not in sys.modules, 'trio was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unary_call_returns_the_typed_response(server: ServerThread) -> None:
    async def main() -> Answer:
        async with aio.open_channel(server.target) as channel:
            return await channel.stub(AioTestService).echo(Ask(value=7))

    answer = run(main)
    assert (type(answer), answer.value) == (Answer, 7)


def test_many_concurrent_calls_share_one_connection(server: ServerThread) -> None:
    async def main() -> list[int]:
        async with aio.open_channel(server.target) as channel:
            stub = channel.stub(AioTestService)
            answers = await asyncio.gather(*(stub.echo(Ask(value=i)) for i in range(500)))
            return [a.value for a in answers]

    assert run(main) == list(range(500))


def test_stub_metadata_reaches_the_handler(server: ServerThread) -> None:
    async def main() -> Answer:
        async with aio.open_channel(server.target) as channel:
            return await channel.stub(AioTestService, metadata={"k": "v"}).echo(Ask())

    assert run(main).metadata == {"k": "v"}


def test_server_error_is_an_rpc_error_with_code_message_and_details(server: ServerThread) -> None:
    async def main() -> None:
        async with aio.open_channel(server.target) as channel:
            await channel.stub(AioTestService).fail(Ask(value=3))

    with pytest.raises(rpc.RpcError) as info:
        run(main)
    assert (info.value.code, info.value.message, info.value.details) == (
        rpc.Status.NOT_FOUND,
        "no 3",
        {"field": "value"},
    )


def test_a_request_of_the_wrong_type_is_a_type_error(server: ServerThread) -> None:
    async def main() -> None:
        async with aio.open_channel(server.target) as channel:
            await channel.stub(AioTestService).echo(Answer(1))  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="takes a Ask request"):
        run(main)


def test_a_request_over_the_servers_frame_size_is_resource_exhausted(
    server: ServerThread,
) -> None:
    class Big(Ask):
        blob: bytes = b"x" * DEFAULT_MAX_FRAME_SIZE

    async def main() -> None:
        async with aio.open_channel(server.target) as channel:
            await channel.stub(AioTestService).echo(Big())

    with pytest.raises(rpc.RpcError) as info:
        run(main)
    assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED


def test_aio_timeout_sends_its_deadline(server: ServerThread) -> None:
    async def main() -> Answer:
        async with aio.open_channel(server.target) as channel, aio.timeout(5.0):
            return await channel.stub(AioTestService).echo(Ask())

    left = run(main).deadline_ms
    assert 0 < left <= 5000


def test_the_earliest_of_nested_deadlines_is_sent(server: ServerThread) -> None:
    async def main() -> Answer:
        async with (
            aio.open_channel(server.target) as channel,
            aio.timeout(2.0),
            aio.timeout(60.0),
        ):
            return await channel.stub(AioTestService).echo(Ask())

    assert 0 < run(main).deadline_ms <= 2000


def test_no_deadline_is_sent_outside_aio_timeout(server: ServerThread) -> None:
    async def main() -> Answer:
        async with aio.open_channel(server.target) as channel:
            return await channel.stub(AioTestService).echo(Ask())

    assert run(main).deadline_ms == -1.0


def test_an_expired_aio_timeout_raises_timeout_error_and_cancels_the_handler(
    server: ServerThread,
) -> None:
    async def main() -> None:
        async with aio.open_channel(server.target) as channel, aio.timeout(0.2):
            await channel.stub(AioTestService).slow(Ask())

    with pytest.raises(TimeoutError):
        run(main)
    assert server.probe.cancelled.wait(10)


def test_cancelling_the_awaiting_task_sends_cancel(server: ServerThread) -> None:
    async def main() -> bool:
        async with aio.open_channel(server.target) as channel:
            task = asyncio.create_task(channel.stub(AioTestService).slow(Ask()))
            await asyncio.to_thread(server.probe.started.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The channel still works after the cancelled call.
            answer = await channel.stub(AioTestService).echo(Ask(value=1))
            return answer.value == 1

    assert run(main)
    assert server.probe.cancelled.wait(10)


def test_server_stream_yields_every_item_past_the_credit_window(server: ServerThread) -> None:
    async def main() -> list[int]:
        async with aio.open_channel(server.target, initial_stream_credit=4) as channel:
            return [a.value async for a in channel.stub(AioTestService).count(Ask(value=300))]

    assert run(main) == list(range(300))


def test_server_stream_error_after_items_is_an_rpc_error(server: ServerThread) -> None:
    seen: list[int] = []

    async def main() -> None:
        async with aio.open_channel(server.target) as channel:
            async for a in channel.stub(AioTestService).count_then_fail(Ask(value=3)):
                seen.append(a.value)  # noqa: PERF401 (the items before the error count)

    with pytest.raises(rpc.RpcError) as info:
        run(main)
    assert (seen, info.value.code) == ([0, 1, 2], rpc.Status.ABORTED)


def test_closing_a_stream_early_cancels_the_handler(server: ServerThread) -> None:
    async def main() -> int:
        async with aio.open_channel(server.target) as channel:
            items = channel.stub(AioTestService).count(Ask(value=2, size=1))
            first = await anext(items)
            assert isinstance(items, aio.ResponseStream)
            await items.aclose()
            with pytest.raises(rpc.RpcError, match="closed"):
                await anext(items)
            return first.value

    assert run(main) == 0
    assert server.probe.cancelled.wait(10)


def test_a_stream_consumer_cancelled_while_waiting_cancels_the_handler(
    server: ServerThread,
) -> None:
    async def main() -> None:
        async with aio.open_channel(server.target) as channel:
            items = channel.stub(AioTestService).count(Ask(value=1, size=1))
            assert (await anext(items)).value == 0
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):  # a bare asyncio.timeout: CANCEL still goes
                    await anext(items)

    run(main)
    assert server.probe.cancelled.wait(10)


def test_no_server_is_unavailable() -> None:
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> None:
        async with aio.open_channel(f"127.0.0.1:{port}"):
            pass

    with pytest.raises(rpc.RpcError) as info:
        run(main)
    assert info.value.code is rpc.Status.UNAVAILABLE
    assert f"127.0.0.1:{port}" in info.value.message


def test_a_peer_that_is_not_a_trio_micro_server_is_unavailable() -> None:
    async def main() -> None:
        async def garbage(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            writer.close()

        listener = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        async with listener, aio.open_channel(f"127.0.0.1:{port}"):
            pass

    with pytest.raises(rpc.RpcError) as info:
        run(main)
    assert info.value.code is rpc.Status.UNAVAILABLE


def test_a_call_after_the_channel_closed_is_cancelled(server: ServerThread) -> None:
    async def main() -> None:
        async with aio.open_channel(server.target) as channel:
            stub = channel.stub(AioTestService)
        await stub.echo(Ask())

    with pytest.raises(rpc.RpcError) as info:
        run(main)
    assert info.value.code is rpc.Status.CANCELLED


@pytest.mark.parametrize("target", ["localhost", "http://h:1", "h:0", 7])
def test_a_bad_target_is_rejected(target: object) -> None:
    async def main() -> None:
        async with aio.open_channel(target):  # type: ignore[arg-type]
            pass

    with pytest.raises((TypeError, ValueError)):
        run(main)


def test_stub_needs_a_service_class(server: ServerThread) -> None:
    async def main() -> None:
        async with aio.open_channel(server.target) as channel:
            channel.stub(object)  # type: ignore[type-var]

    with pytest.raises(TypeError, match=r"rpc\.Service subclass"):
        run(main)


def test_calls_work_under_uvloop(server: ServerThread) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[int]:
        async with aio.open_channel(server.target) as channel:
            stub = channel.stub(AioTestService)
            answers = await asyncio.gather(*(stub.echo(Ask(value=i)) for i in range(50)))
            items = [a.value async for a in stub.count(Ask(value=100))]
            return [a.value for a in answers] + items

    assert run(main, loop_factory=uvloop.new_event_loop) == list(range(50)) + list(range(100))


def test_an_asyncio_program_calls_the_user_service_with_typed_stubs(tmp_path: Path) -> None:
    from examples.user_service.service import (
        CreateUserRequest,
        GetUserRequest,
        ImportSummary,
        ListUsersRequest,
        User,
        UserService,
    )

    db = tmp_path / "users.db"
    seed = [sys.executable, "-m", "examples.user_service", "seed", "--db", str(db), "--users", "5"]
    subprocess.run(seed, check=True, timeout=60, capture_output=True, cwd=ROOT)
    serve = [sys.executable, "-m", "trio_micro", "serve", "examples.user_service:UserService"]
    serve += ["--port", "0", "-o", f"db={db}", "--log-file", str(tmp_path / "log.jsonl")]
    with subprocess.Popen(serve, stdout=subprocess.PIPE, cwd=ROOT) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline().decode()  # "serving users on HOST:PORT"
            address = line.split()[-1]

            async def main() -> tuple[User, list[int], ImportSummary]:
                async with aio.open_channel(address) as channel:
                    users = channel.stub(UserService)
                    async with aio.timeout(10):
                        user = await users.get_user(GetUserRequest(user_id=1))
                        listed = [u.user_id async for u in users.list_users(ListUsersRequest())]
                        async with users.import_users() as (send, receive):
                            for n in range(3):
                                await send.send(CreateUserRequest(f"new{n}", f"new{n}@x.org"))
                            await send.aclose()
                            summary = await receive.receive()
                return user, listed, summary

            user, listed, summary = run(main)
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert (type(user), user.user_id) == (User, 1)
    assert listed == [1, 2, 3, 4, 5]
    assert (summary.imported, summary.first_id, summary.last_id) == (3, 6, 8)


def test_calls_beyond_the_servers_stream_limit_wait_for_a_slot() -> None:
    server = start_server(max_concurrent_streams=2)
    try:

        async def main() -> list[int]:
            async with aio.open_channel(server.target) as channel:
                stub = channel.stub(AioTestService)
                answers = await asyncio.gather(*(stub.echo(Ask(value=i)) for i in range(40)))
                return [a.value for a in answers]

        assert run(main) == list(range(40))
    finally:
        server.stop()


def test_a_server_shutting_down_fails_the_pending_call_and_the_next_call_reconnects() -> None:
    first = start_server(grace_period=0.1)
    port = int(first.target.rpartition(":")[2])

    async def main() -> tuple[rpc.Status, int]:
        async with aio.open_channel(first.target) as channel:
            stub = channel.stub(AioTestService)
            pending = asyncio.create_task(stub.slow(Ask()))
            await asyncio.to_thread(first.probe.started.wait, 10)
            await asyncio.to_thread(first.stop)  # GOAWAY, then the grace period runs out
            with pytest.raises(rpc.RpcError) as info:
                await pending
            second = await asyncio.to_thread(start_server, port)  # the same address again
            try:
                answer = await stub.echo(Ask(value=5))  # a new connection
            finally:
                await asyncio.to_thread(second.stop)
            return info.value.code, answer.value

    code, value = run(main)
    assert code in (rpc.Status.CANCELLED, rpc.Status.UNAVAILABLE)
    assert value == 5


def test_a_call_on_a_lost_connection_is_unavailable() -> None:
    server = start_server()

    async def main() -> rpc.Status:
        async with aio.open_channel(server.target) as channel:
            stub = channel.stub(AioTestService)
            await stub.echo(Ask())
            await asyncio.to_thread(server.stop)
            with pytest.raises(rpc.RpcError) as info:
                await stub.echo(Ask())  # the old connection is gone, and so is the server
            return info.value.code

    assert run(main) is rpc.Status.UNAVAILABLE
