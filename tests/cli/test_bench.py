"""``trio-micro bench`` against in-process servers (the command runs in a worker thread)."""

from __future__ import annotations

import json

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


async def test_bench_json_report(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("bench", target, GET_USER, '{"user_id": 1}', "-n", "300", "-c", "7", "--json")
    assert await cli(*argv) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["method"] == "grpc.testing.TestService/get_user"
    assert (report["calls"], report["ok"], report["failed"]) == (300, 300, 0)
    assert report["concurrency"] == 7
    assert report["rate"] is None
    assert report["errors"] == {}
    assert report["peers"] == {target: 300}  # the reflection lookup is not counted
    latency = report["latency_ms"]
    assert set(latency) == {"p50", "p90", "p99", "max", "mean"}
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert report["throughput"] == pytest.approx(300 / report["elapsed_s"], rel=1e-3)
    # Progress went to stderr as plain lines, one per 10 %.
    assert err.splitlines()[-1] == "get_user: 300/300 calls (100%), 0 failed"
    assert len(err.splitlines()) == 10


async def test_bench_plain_report(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("bench", target, GET_USER, '{"user_id": 1}', "-n", "50", "--quiet") == 0
    out, err = capsys.readouterr()
    assert err == ""  # --quiet: no progress
    lines = out.splitlines()
    assert lines[0].startswith(f"grpc.testing.TestService/get_user at {target}: 50 calls in ")
    assert "50 ok, 0 failed (concurrency 10)" in lines[0]
    assert lines[1] == "latency of ok calls, ms"
    assert lines[2].split() == ["p50", "p90", "p99", "max", "mean"]
    assert "errors: none" in lines
    assert lines[-1].split() == [target, "50", "100.0%"]


async def test_bench_counts_errors_by_code_and_exits_1(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    method = "grpc.testing.TestService.unary_call"
    request = '{"status_code": 5, "status_message": "gone"}'
    assert await cli("bench", target, method, request, "-n", "40", "--json", "--quiet") == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["failed"]) == (0, 40)
    assert report["errors"] == {"NOT_FOUND": 40}
    assert report["first_errors"] == ["NOT_FOUND: gone"]
    assert report["latency_ms"]["p50"] is None  # no successful call


async def test_bench_plain_report_lists_errors(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    method = "grpc.testing.TestService.unary_call"
    request = '{"status_code": 14, "status_message": "down"}'
    assert await cli("bench", target, method, request, "-n", "5", "--quiet") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[out.index("errors") + 3].split() == ["UNAVAILABLE", "5"]
    assert "  e.g. UNAVAILABLE: down" in out


async def test_bench_a_server_stream(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    method = "grpc.testing.TestService.streaming_output_call"
    argv = ("bench", target, method, '{"count": 5}', "-n", "20", "-c", "4", "--json", "--quiet")
    assert await cli(*argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["calls"], report["ok"]) == (20, 20)


async def test_bench_per_call_timeout(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    method = "grpc.testing.TestService.sleep"
    argv = ("bench", target, method, "-n", "4", "-c", "4", "--timeout", "0.2", "--json", "--quiet")
    assert await cli(*argv) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == {"DEADLINE_EXCEEDED": 4}


async def test_bench_spreads_calls_over_replicas(capsys: pytest.CaptureFixture[str]) -> None:
    async with (
        registry.open_registry_server() as srv,
        registry.open_registry_client(srv.target) as reg,
        rpc.open_server([TestService()], host="127.0.0.1", port=0) as one,
        rpc.open_server([TestService()], host="127.0.0.1", port=0) as two,
    ):
        addresses = [f"{host}:{port}" for host, port in (one.address, two.address)]
        async with reg.register("test", addresses[0]), reg.register("test", addresses[1]):
            code = await cli(
                "bench",
                f"registry://{srv.target}/test",
                GET_USER,
                '{"user_id": 1}',
                "-n",
                "1000",
                "-c",
                "20",
                "--json",
                "--quiet",
            )
    assert code == 0
    peers = json.loads(capsys.readouterr().out)["peers"]
    assert sum(peers.values()) == 1000
    # Both replicas served calls (the first calls may all go to whichever connected first).
    assert set(peers) == set(addresses)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "0"], "argument -n/--calls: expected an integer >= 1, got '0'"),
        (["--calls", "many"], "argument -n/--calls: expected an integer >= 1, got 'many'"),
        (["-c", "0"], "argument -c/--concurrency: expected an integer >= 1, got '0'"),
        (["--rate", "0"], "argument -r/--rate: expected calls per second > 0, got '0'"),
        (["--rate", "inf"], "argument -r/--rate: expected calls per second > 0, got 'inf'"),
        (["--timeout", "-1"], "argument --timeout: expected a number of seconds > 0"),
        (["--connections", "0"], "argument --connections: expected an integer >= 1"),
    ],
)
def test_bench_bad_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "127.0.0.1:1", GET_USER, "{}", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("method", "request_", "message"),
    [
        (GET_USER, "{", "the request is not valid JSON"),
        ("get_user", "{}", "expected SERVICE.METHOD (or SERVICE/METHOD), got 'get_user'"),
        ("grpc.testing.TestService.nope", "{}", "service 'grpc.testing.TestService' has no"),
    ],
)
async def test_bench_bad_input_exit_2(
    target: str, capsys: pytest.CaptureFixture[str], method: str, request_: str, message: str
) -> None:
    assert await cli("bench", target, method, request_, "-n", "5") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"trio-micro bench: error: {message}")
    assert err.count("\n") == 1


async def test_bench_bad_target_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("bench", "nowhere", GET_USER, "{}") == 2
    assert capsys.readouterr().err.startswith("trio-micro bench: error: bad TARGET: ")


async def test_bench_unreachable_target_exits_64_plus_unavailable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert await cli("bench", f"127.0.0.1:{port}", GET_USER, "{}", "-n", "5") == 64 + 14
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"UNAVAILABLE: can't connect to 127.0.0.1:{port}")
