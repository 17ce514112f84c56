"""``trio-micro health``, ``serve``'s admission flags, /healthz and /readyz, and the drain
order of ``serve``: deregister, NOT_SERVING, then GOAWAY."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
import trio

from tests.rpc.services import TestService
from trio_micro import rpc
from trio_micro.cli import main
from trio_micro.cli._main import build_parser
from trio_micro.cli._serve_args import _check_args
from trio_micro.registry import open_registry_client, open_registry_server

from .test_call import cli, free_port
from .test_serve import SLOW, running

# The commands configure structlog for the whole process: restored after each test.
pytestmark = pytest.mark.usefixtures("quiet_logging")

# --- the health command, in process ------------------------------------------------------


async def test_health_of_a_serving_server_exits_0(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("health", target) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "SERVING"


async def test_health_of_a_serving_service_exits_0(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("health", target, "grpc.testing.TestService") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "SERVING"


async def test_health_of_an_unknown_service_exits_64_plus_not_found(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("health", target, "nope") == 64 + rpc.Status.NOT_FOUND
    assert "NOT_FOUND: unknown service 'nope'" in capsys.readouterr().err


async def test_health_of_a_not_serving_server_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with rpc.open_server([TestService()], host="127.0.0.1", port=0) as server:
        assert server.health is not None
        server.health.set_status("", rpc.HealthStatus.NOT_SERVING)
        host, port = server.address
        assert await cli("health", f"{host}:{port}") == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "NOT_SERVING"
    assert err == "trio-micro health: error: the server is NOT_SERVING\n"


async def test_health_of_an_unreachable_target_exits_64_plus_unavailable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = await free_port()
    assert await cli("health", f"127.0.0.1:{port}") == 64 + rpc.Status.UNAVAILABLE


async def test_health_of_a_server_without_health_exits_64_plus_unimplemented(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with rpc.open_server([TestService()], host="127.0.0.1", port=0, health=False) as server:
        host, port = server.address
        assert await cli("health", f"{host}:{port}") == 64 + rpc.Status.UNIMPLEMENTED


def test_health_with_a_bad_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "nohost"]) == 2
    assert capsys.readouterr().err.startswith("trio-micro health: error: ")


def test_health_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["health", "--help"])
    out = capsys.readouterr().out
    assert "0    the service (or, without SERVICE, the server) is SERVING" in out
    assert "1    it answered NOT_SERVING" in out
    assert "UNIMPLEMENTED" in out


# --- serve's admission flags ------------------------------------------------------------


def test_admission_flags_become_the_serve_configuration() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            SLOW,
            "--max-inflight",
            "100",
            "--rate-limit",
            "50.5/20",
            "--rate-limit-key",
            "metadata:x-api-key",
        ]
    )
    config = _check_args(args)
    assert config.max_inflight == 100
    assert config.rate_limit == (50.5, 20)
    assert config.rate_limit_key == "metadata:x-api-key"


def test_rate_limit_burst_defaults_to_1() -> None:
    config = _check_args(build_parser().parse_args(["serve", SLOW, "--rate-limit", "5"]))
    assert config.rate_limit == (5.0, 1)
    assert config.rate_limit_key == "peer"


# --- serve as a process -----------------------------------------------------------------


async def test_serve_answers_probes_refuses_over_the_rate_and_drains_in_order(
    tmp_path: Path,
) -> None:
    async with (
        open_registry_server(port=0) as registry_server,
        open_registry_client(registry_server.target) as registry,
    ):
        argv = [
            "serve",
            SLOW,
            "--registry",
            registry_server.target,
            "--debug-port",
            "0",
            "--rate-limit",
            "1/2",
            "--max-inflight",
            "10",
            "--grace",
            "30",
        ]
        async with running(argv, tmp_path, prefix="serving ") as server:
            address = server.line.rpartition(" ")[2]
            [url] = [r["url"] for r in server.records() if r["event"] == "serve.debug_endpoint"]
            base = url.rstrip("/")
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{base}/healthz")).text == "ok\n"
                ready = await http.get(f"{base}/readyz")
                assert (ready.status_code, ready.text) == (200, "ready\n")

                async with rpc.open_channel(address, retry=None) as channel:
                    await channel.call("slow/sleep", {"seconds": 0})
                    await channel.call("slow/sleep", {"seconds": 0})
                    with pytest.raises(rpc.RpcError, match="RESOURCE_EXHAUSTED"):
                        await channel.call("slow/sleep", {"seconds": 0})
                metrics = (await http.get(f"{base}/metrics")).text
            assert "trio_micro_rpc_rate_limit_refused_total 1.0" in metrics
            assert "trio_micro_rpc_server_refused_calls_total" in metrics
            assert await registry.resolve("slow") != []

            server.process.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                assert await server.process.wait() == 128 + signal.SIGTERM
        assert await registry.resolve("slow") == []
    records = server.records()
    events = [r["event"] for r in records]
    [refused] = [r for r in records if r["event"] == "rpc.call.refused"]
    assert (refused["reason"], refused["key"]) == ("rate_limit", "127.0.0.1")
    # The registry entry goes first, then NOT_SERVING, then the server's GOAWAY.
    assert (
        events.index("registry.endpoint.deregistered")
        < events.index("serve.not_serving")
        < events.index("rpc.server.shutdown")
    )
