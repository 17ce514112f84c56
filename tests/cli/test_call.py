"""``trio-micro call`` and ``trio-micro list`` against an in-process server.

The command runs in a worker thread (its own ``trio.run``) while the test's event loop
serves the calls.
"""

from __future__ import annotations

import io
import json
import sys

import pytest
import trio

from trio_micro import registry, rpc
from trio_micro.cli._main import main

from ..rpc.services import TestService

GET_USER = "grpc.testing.TestService.get_user"


# The servers' logs stay off stdout; structlog is restored after each test (conftest.py).
pytestmark = pytest.mark.usefixtures("quiet_logging")


async def cli(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


async def free_port() -> int:
    with trio.socket.socket() as sock:  # closed at once: nobody listens there
        await sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- call -------------------------------------------------------------------------------


async def test_call_prints_the_json_reply(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("call", target, GET_USER, '{"user_id": 7}') == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"user_id": 7, "name": "user7", "source": "test"}
    assert out.count("\n") == 1
    assert err == ""


async def test_call_accepts_a_slash_method_name(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("call", target, "grpc.testing.TestService/get_user", '{"user_id": 1}') == 0
    assert json.loads(capsys.readouterr().out)["name"] == "user1"


async def test_call_server_stream_prints_one_line_per_item(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    method = "grpc.testing.TestService.streaming_output_call"
    assert await cli("call", target, method, '{"count": 3, "size": 2}') == 0
    lines = capsys.readouterr().out.splitlines()
    # bytes come back as base64 (two zero bytes: "AAA=")
    assert [json.loads(line) for line in lines] == [
        {"index": i, "payload": "AAA="} for i in range(3)
    ]


async def test_call_bytes_fields_take_and_give_base64(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    method = "grpc.testing.TestService.unary_call"
    assert await cli("call", target, method, '{"payload": "aGVsbG8="}') == 0
    assert json.loads(capsys.readouterr().out) == {"payload": "aGVsbG8="}


async def test_call_bad_base64_is_a_usage_error(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    method = "grpc.testing.TestService.unary_call"
    assert await cli("call", target, method, '{"payload": "not base64!"}') == 2
    err = capsys.readouterr().err
    assert err == (
        "trio-micro call: error: $.payload is a bytes field: expected base64, got 'not base64!'\n"
    )


async def test_call_status_goes_to_stderr_with_exit_64_plus_its_code(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    method = "grpc.testing.TestService.unary_call"
    request = '{"status_code": 5, "status_message": "no user 9"}'
    assert await cli("call", target, method, request) == 64 + 5  # as grpcurl: 64 + NOT_FOUND
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "NOT_FOUND: no user 9\n"


async def test_call_status_details_are_printed(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("call", target, GET_USER, '{"user_id": "seven"}') == 64 + 3
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("INVALID_ARGUMENT: ")
    assert err[1:] == ["  field: $.user_id"]


async def test_call_sends_metadata(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    method = "grpc.testing.TestService.call_info"
    assert await cli("call", target, method, "-m", "who=cli", "--metadata", "x=a=b") == 0
    metadata = json.loads(capsys.readouterr().out)["metadata"]
    assert metadata["who"] == "cli"
    assert metadata["x"] == "a=b"


async def test_call_compress_asks_for_the_encoding(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    method = "grpc.testing.TestService.call_info"
    assert await cli("call", target, method, "--compress", "zlib") == 0
    metadata = json.loads(capsys.readouterr().out)["metadata"]
    assert metadata["tm-compression"] == "zlib"


async def test_call_reads_the_request_from_stdin(
    target: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"user_id": 3}'))
    assert await cli("call", target, GET_USER, "-") == 0
    assert json.loads(capsys.readouterr().out)["user_id"] == 3


async def test_call_request_defaults_to_empty(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("call", target, "grpc.testing.TestService.empty_call") == 0
    assert capsys.readouterr().out == "{}\n"


async def test_call_timeout_is_deadline_exceeded(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    method = "grpc.testing.TestService.sleep"
    assert await cli("call", target, method, "--timeout", "0.2") == 64 + 4
    err = capsys.readouterr().err
    assert err.startswith("DEADLINE_EXCEEDED: ")
    assert err.count("\n") == 1


async def test_call_unreachable_target_is_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    port = await free_port()
    assert await cli("call", f"127.0.0.1:{port}", GET_USER, "--timeout", "20") == 64 + 14
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"UNAVAILABLE: can't connect to 127.0.0.1:{port}")
    assert "Traceback" not in err


async def test_call_through_a_registry(capsys: pytest.CaptureFixture[str]) -> None:
    async with (
        registry.open_registry_server() as srv,
        registry.open_registry_client(srv.target) as reg,
        rpc.open_server([TestService()], host="127.0.0.1", port=0) as server,
    ):
        host, port = server.address
        async with reg.register("test", f"{host}:{port}"):
            code = await cli("call", f"registry://{srv.target}/test", GET_USER, '{"user_id": 2}')
    assert code == 0
    assert json.loads(capsys.readouterr().out)["user_id"] == 2


async def test_call_without_reflection_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    async with rpc.open_server(
        [TestService()], host="127.0.0.1", port=0, reflection=False
    ) as server:
        host, port = server.address
        assert await cli("call", f"{host}:{port}", GET_USER, "{}") == 2
    err = capsys.readouterr().err
    assert err.startswith("trio-micro call: error: the target does not serve trio_micro.reflection")


@pytest.mark.parametrize(
    ("method", "request_", "message"),
    [
        (GET_USER, "{bad", "the request is not valid JSON: Expecting property name"),
        (GET_USER, "", "the request is not valid JSON"),
        (GET_USER, "[1, 2]", "the request must be a JSON object like {}, got '[1, 2]'"),
        ("get_user", "{}", "expected SERVICE.METHOD (or SERVICE/METHOD), got 'get_user'"),
        ("svc/", "{}", "expected SERVICE.METHOD (or SERVICE/METHOD), got 'svc/'"),
        (
            "grpc.testing.TestService.nope",
            "{}",
            "service 'grpc.testing.TestService' has no method 'nope' (it has: empty_call,",
        ),
        (
            "users.get_user",
            "{}",
            "the target serves no service 'users' (it serves: grpc.testing.TestService, "
            "trio_micro.health, trio_micro.reflection)",
        ),
    ],
)
async def test_call_bad_input_is_one_line_with_exit_2(
    target: str, capsys: pytest.CaptureFixture[str], method: str, request_: str, message: str
) -> None:
    assert await cli("call", target, method, request_) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"trio-micro call: error: {message}")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("localhost", "bad TARGET: address must look like 'host:port' or '[ipv6]:port', got"),
        ("127.0.0.1:http", "bad TARGET: address must end in ':<port>' with a decimal port"),
        ("foo://h:1/svc", "bad TARGET: no resolver for the scheme of 'foo://h:1/svc'"),
        ("registry://h:1", "bad TARGET: a target with a scheme must look like"),
    ],
)
async def test_call_bad_target(
    capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    assert await cli("call", target, GET_USER, "{}") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trio-micro call: error: {message}")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["call"], "the following arguments are required: TARGET, SERVICE.METHOD"),
        (["call", "h:1", "a.b", "--timeout", "0"], "expected a number of seconds > 0"),
        (["call", "h:1", "a.b", "--timeout", "soon"], "expected a number of seconds > 0"),
        (["call", "h:1", "a.b", "-m", "novalue"], "expected KEY=VALUE, got 'novalue'"),
        (["call", "h:1", "a.b", "--compress", "brotli"], "expected one of none, "),
        (["bench", "h:1", "a.b", "--compress", "gzip"], "got 'gzip'"),
        (["list"], "the following arguments are required: TARGET"),
    ],
)
def test_bad_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_call_help_documents_targets_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["call", "--help"])
    out = capsys.readouterr().out
    assert "registry://host:port/SERVICE" in out
    assert "exit codes:" in out


# --- list -------------------------------------------------------------------------------


async def test_list_prints_a_table_of_methods(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("list", target) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "3 services, 11 methods"
    assert lines[1].split() == ["service", "method", "kind", "idempotent", "request"]
    rows = {tuple(line.split()[:4]): line for line in lines[3:]}
    get_user = rows["grpc.testing.TestService", "get_user", "unary", "yes"]
    assert get_user.endswith("user_id: integer")
    stream = rows["grpc.testing.TestService", "streaming_output_call", "server_stream", "no"]
    assert stream.endswith("count: integer, size?: integer")
    unary = rows["grpc.testing.TestService", "unary_call", "unary", "no"]
    assert "payload?: bytes" in unary
    assert ("trio_micro.reflection", "list_services", "unary", "yes") in rows


async def test_list_json(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("list", target, "--json") == 0
    reply = json.loads(capsys.readouterr().out)
    services = {s["name"]: s for s in reply["services"]}
    assert set(services) == {
        "grpc.testing.TestService",
        "trio_micro.health",
        "trio_micro.reflection",
    }
    methods = {m["name"]: m for m in services["grpc.testing.TestService"]["methods"]}
    assert methods["get_user"]["kind"] == "unary"
    assert methods["get_user"]["idempotent"] is True
    assert methods["streaming_output_call"]["kind"] == "server_stream"
    assert "request_schema" in methods["get_user"]


async def test_list_unreachable_target(capsys: pytest.CaptureFixture[str]) -> None:
    port = await free_port()
    assert await cli("list", f"127.0.0.1:{port}") == 64 + 14
    assert capsys.readouterr().err.startswith("UNAVAILABLE: ")


async def test_list_bad_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("list", "no-port") == 2
    assert capsys.readouterr().err.startswith("trio-micro list: error: bad TARGET: ")


async def test_list_without_reflection(capsys: pytest.CaptureFixture[str]) -> None:
    async with rpc.open_server(
        [TestService()], host="127.0.0.1", port=0, reflection=False
    ) as server:
        host, port = server.address
        assert await cli("list", f"{host}:{port}") == 2
    assert "does not serve trio_micro.reflection" in capsys.readouterr().err


async def test_list_draws_a_rich_table_on_a_terminal(
    target: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    assert await cli("list", target) == 0
    out = capsys.readouterr().out
    assert "┏━" in out  # a rich box, not the plain layout
    assert "│ get_user " in out
    assert "streaming_output_call" in out
    assert "count: integer, size?: integer" in out
