"""``trio-micro serve`` and ``trio-micro registry`` as processes, and their argument errors.

The subprocess tests run ``python -m trio_micro ...`` for real (signals, exit status,
stdout line, log file), each bounded by ``fail_after`` and killed on the way out. They
wait for conditions (a stdout line, a log record), never for a fixed time.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from examples.user_service.database import UserDatabase
from trio_micro import rpc
from trio_micro.cli import main
from trio_micro.cli._main import build_parser
from trio_micro.cli._serve_args import _check_args, parse_registry_target
from trio_micro.cli._service_spec import resolve_service
from trio_micro.registry import Endpoint, open_registry_client, open_registry_server

from ._slow_service import SlowService

ROOT = Path(__file__).resolve().parents[2]
SERVING = re.compile(r"^serving \S+ on (\S+)$")  # what the demo (examples/demo) parses
SLOW = "tests.cli._slow_service:SlowService"
WAIT = 20.0  # generous: the machine is shared; each wait ends as soon as its condition holds


# ---------------------------------------------------------------------- helpers


class Running:
    def __init__(self, process: trio.Process, line: str, log_file: Path) -> None:
        self.process = process
        self.line = line
        self.log_file = log_file

    def records(self) -> list[dict[str, Any]]:
        text = self.log_file.read_text() if self.log_file.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def events(self) -> list[str]:
        return [r["event"] for r in self.records()]

    async def wait_for_event(self, event: str) -> None:
        with trio.fail_after(WAIT):
            while event not in self.events():  # noqa: ASYNC110 - another process writes it
                await trio.sleep(0.02)

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        with trio.fail_after(WAIT):
            return await self.process.wait()


@asynccontextmanager
async def running(argv: list[str], tmp_path: Path, *, prefix: str) -> AsyncIterator[Running]:
    """Start ``python -m trio_micro *argv --log-file ...`` and wait for its first stdout line."""
    log_file = tmp_path / f"{argv[0]}.jsonl"
    with (tmp_path / f"{argv[0]}.stderr").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_micro", *argv, "--log-file", str(log_file)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
        )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(WAIT):
            while not output.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, f"exited early: {(tmp_path / f'{argv[0]}.stderr').read_text()}"
                output += chunk
        line = output.decode().rstrip("\n")
        assert "\n" not in line, f"more than one line on stdout: {output!r}"
        assert line.startswith(prefix), line
        yield Running(process, line, log_file)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


# ---------------------------------------------------------------------- subprocess tests


async def test_serve_registers_answers_and_deregisters_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "users.db"
    async with UserDatabase(db) as database:
        await database.seed(20)
    async with (
        open_registry_server(port=0) as registry_server,
        open_registry_client(registry_server.target) as registry,
    ):
        argv = [
            "serve",
            "examples.user_service:UserService",
            "--port",
            "0",
            "--registry",
            f"registry://{registry_server.target}",
            "-o",
            f"db={db}",
            "--metadata",
            "zone=a",
            "--debug-port",
            "0",
        ]
        async with running(argv, tmp_path, prefix="serving ") as server:
            match = SERVING.match(server.line)
            assert match is not None, server.line
            address = match.group(1)
            assert server.line == f"serving users on {address}"
            assert await registry.resolve("users") == [Endpoint(address, {"zone": "a"})]

            async with rpc.open_channel(address) as channel:
                user = await channel.call("users/get_user", {"user_id": 1})
            assert (user["user_id"], user["source"]) == (1, "database")

            # --debug-port: /metrics counts the call (the endpoint starts before the
            # ready line, so its log record is already written).
            [url] = [r["url"] for r in server.records() if r["event"] == "serve.debug_endpoint"]
            async with httpx.AsyncClient() as http:
                response = await http.get(f"{url.rstrip('/')}/metrics")
            assert response.status_code == 200
            families = list(text_string_to_metric_families(response.text))
            samples = [
                sample
                for family in families
                for sample in family.samples
                if sample.name == "trio_micro_rpc_server_calls_total"
                and sample.labels.get("service") == "users"
            ]
            assert [(s.labels["method"], s.labels["code"], s.value) for s in samples] == [
                ("get_user", "OK", 1.0)
            ]
            # ... and the user service's cache (UserService.open registers it): one miss.
            cache = {
                sample.name: (family.type, sample.value)
                for family in families
                if family.name.startswith("trio_micro_user_cache_")
                for sample in family.samples
                if not sample.name.endswith("_created")
            }
            assert cache == {
                "trio_micro_user_cache_hits_total": ("counter", 0.0),
                "trio_micro_user_cache_misses_total": ("counter", 1.0),
                "trio_micro_user_cache_loads_total": ("counter", 1.0),
                "trio_micro_user_cache_evictions_total": ("counter", 0.0),
                "trio_micro_user_cache_expirations_total": ("counter", 0.0),
                "trio_micro_user_cache_size": ("gauge", 1.0),
                "trio_micro_user_cache_max_size": ("gauge", 10_000.0),
            }
            # ... and the task monitor that --debug-port starts: live tasks, blocked steps.
            monitor = {
                sample.name: sample.value
                for family in families
                if family.name.startswith("trio_micro_task_monitor_")
                for sample in family.samples
            }
            assert monitor["trio_micro_task_monitor_live_tasks"] > 0
            assert monitor["trio_micro_task_monitor_spawned_total"] > 0
            assert "trio_micro_task_monitor_blocked_steps_total" in monitor

            assert await server.stop() == 128 + signal.SIGTERM
        assert await registry.resolve("users") == []

    records = server.records()
    events = [r["event"] for r in records]
    calls = [r for r in records if r["event"] == "rpc.call.complete" and r["service"] == "users"]
    assert [(c["method"], c["cache"], c["server"]) for c in calls] == [
        ("get_user", "miss", address)
    ]
    # The query record names the replica, as the access log does.
    assert [(r["user_id"], r.get("server")) for r in records if r["event"] == "users.db.query"] == [
        (1, address)
    ]
    # Deregistered before the server stops accepting, and the stop is logged last.
    assert events.index("registry.endpoint.deregistered") < events.index("rpc.server.shutdown")
    assert events[-1] == "serve.stopped"
    assert records[-1]["signal"] == "SIGTERM"
    assert records[-1]["forced"] is False


async def test_sigterm_drains_a_call_in_flight(tmp_path: Path) -> None:
    async with running(["serve", SLOW, "--grace", "30"], tmp_path, prefix="serving ") as server:
        address = server.line.rpartition(" ")[2]
        replies: list[Any] = []
        async with rpc.open_channel(address) as channel, trio.open_nursery() as nursery:

            async def call() -> None:
                replies.append(await channel.call("slow/sleep", {"seconds": 0.5}))

            nursery.start_soon(call)
            await server.wait_for_event("slow.started")
            assert await server.stop() == 128 + signal.SIGTERM
        assert replies == [{"seconds": 0.5, "greeting": "hello"}]
    events = server.events()
    assert events.index("rpc.server.shutdown") < events.index("rpc.call.complete")
    assert events[-1] == "serve.stopped"


async def test_second_signal_cancels_the_drain_and_exits_128_plus_the_first(tmp_path: Path) -> None:
    async with running(["serve", SLOW, "--grace", "60"], tmp_path, prefix="serving ") as server:
        address = server.line.rpartition(" ")[2]
        errors: list[rpc.RpcError] = []
        async with rpc.open_channel(address) as channel, trio.open_nursery() as nursery:

            async def call() -> None:
                with pytest.raises(rpc.RpcError) as exc:
                    await channel.call("slow/sleep", {"seconds": 60})
                errors.append(exc.value)

            nursery.start_soon(call)
            await server.wait_for_event("slow.started")
            server.process.send_signal(signal.SIGTERM)
            await server.wait_for_event("rpc.server.shutdown")
            assert await server.stop(signal.SIGINT) == 128 + signal.SIGTERM
        assert len(errors) == 1
    records = server.records()
    events = [r["event"] for r in records]
    assert events.index("serve.stopping") < events.index("serve.forced")
    assert events[-1] == "serve.stopped"
    assert records[-1]["forced"] is True
    (failed,) = [r for r in records if r["event"] == "rpc.call.failed"]
    assert failed["method"] == "sleep"


async def test_registry_command_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    argv = ["registry", "--port", "0"]
    async with running(argv, tmp_path, prefix="registry listening on ") as server:
        target = server.line.rpartition(" ")[2]
        assert not target.endswith(":0")
        async with open_registry_client(target) as registry:
            async with registry.register("users", "10.0.0.1:50051", ttl=5):
                assert await registry.resolve("users") == [Endpoint("10.0.0.1:50051")]
            assert await server.stop() == 128 + signal.SIGTERM
    assert server.events()[-1] == "serve.stopped"


# ---------------------------------------------------------------------- in-process: bad input


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``trio-micro *argv`` in this process; return (status, stderr), stdout empty."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert out == ""
    return status, err


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["examples.user_service"], 2, "expected MODULE:ATTR"),
        (["examples.user_service:"], 2, "expected MODULE:ATTR"),
        (["a:b:c"], 2, "expected MODULE:ATTR"),
        (["no_such_module_xyz:Service"], 1, "no module named 'no_such_module_xyz'"),
        (["tests.cli._slow_service:Missing"], 1, "has no attribute 'Missing'"),
        (["tests.cli._slow_service:not_a_service"], 1, "is not an rpc.Service"),
        (["tests.cli._slow_service:SleepRequest"], 1, "is not an rpc.Service"),
        (["trio_micro.rpc:Service"], 1, "is not an rpc.Service"),
        ([SLOW, "-o", "a=1", "-o", "a=2"], 2, "given twice"),
        ([SLOW, "--registry", "http://127.0.0.1:7000"], 2, "--registry must be"),
        ([SLOW, "--registry", "127.0.0.1"], 2, "--registry: address must"),
        ([SLOW, "--advertise", "nohost"], 2, "--advertise: address must"),
        ([SLOW, "--host", "0.0.0.0", "--registry", "127.0.0.1:7000"], 2, "pass --advertise"),
        # These get as far as opening the service:
        ([SLOW, "-o", "nope=1"], 1, "bad options for SlowService(): "),
        (["tests.cli._slow_service:OpenedService", "-o", "nope=1"], 1, "bad options for Opened"),
        (["tests.cli._slow_service:OpenedService", "-o", "size=x"], 1, "size must be a whole"),
        (["tests.cli._slow_service:BadOpen"], 1, "must return an async context manager"),
        (["tests.cli._slow_service:YieldsNoService"], 1, "must yield an rpc.Service, got 42"),
        (["tests.cli._slow_service:instance", "-o", "a=1"], 1, "needs a service class"),
    ],
)
def test_bad_input_is_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str], argv: list[str], status: int, message: str
) -> None:
    code, err = run(capsys, "serve", *argv)
    assert code == status
    assert err.count("\n") == 1, err
    assert err.startswith("trio-micro serve: error: ")
    assert message in err


def test_port_in_use_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run(capsys, "serve", SLOW, "--port", str(port))
        assert code == 1
        assert f"cannot listen on 127.0.0.1:{port}" in err
        code, err = run(capsys, "registry", "--port", str(port))
        assert code == 1
        assert err.startswith(f"trio-micro registry: error: cannot listen on 127.0.0.1:{port}")


def test_unopenable_log_file_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, err = run(capsys, "serve", SLOW, "--log-file", str(tmp_path / "no" / "dir" / "x"))
    assert code == 1
    assert "cannot open the log file" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "65536"],
        ["--port", "x"],
        ["--ttl", "0"],
        ["--ttl", "nan"],
        ["--grace", "-1"],
        ["--grace", "inf"],
        ["--log-level", "loud"],
        ["-o", "greeting"],
        ["-o", "=x"],
        ["--option", "a b=1"],
        ["--max-connections", "0"],
        ["--max-connections-per-peer", "x"],
        ["--idle-timeout", "-1"],
        ["--stall-timeout", "nan"],
        ["--metadata", "zone"],
        ["--max-inflight", "0"],
        ["--max-inflight", "x"],
        ["--rate-limit", "0"],
        ["--rate-limit", "nan"],
        ["--rate-limit", "inf"],
        ["--rate-limit", "10/0"],
        ["--rate-limit", "10/x"],
        ["--rate-limit", "/5"],
        ["--rate-limit-key", "header:x"],
        ["--rate-limit-key", "metadata:"],
    ],
)
def test_malformed_arguments_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", SLOW, *argv])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_help_documents_the_resolution_rule(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "async with Cls.open(**options)" in out
    assert "serving SERVICE[,SERVICE...] on HOST:PORT" in out


def test_resolve_service_returns_classes_and_instances() -> None:
    assert resolve_service(SLOW) is SlowService
    assert isinstance(resolve_service("tests.cli._slow_service:instance"), SlowService)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:7000", ("registry", "127.0.0.1:7000")),
        ("registry://LocalHost:7000", ("registry", "localhost:7000")),
        ("etcd://[::1]:2379", ("etcd", "[::1]:2379")),
    ],
)
def test_registry_targets(target: str, expected: tuple[str, str]) -> None:
    assert parse_registry_target(target) == expected


@pytest.mark.parametrize("freeze", [True, False])
async def test_serve_freezes_startup_objects_out_of_the_collector(
    tmp_path: Path, freeze: bool
) -> None:
    argv = ["serve", SLOW] if freeze else ["serve", SLOW, "--no-gc-freeze"]
    async with running(argv, tmp_path, prefix="serving ") as server:
        await server.wait_for_event("serve.started")
        frozen = [r for r in server.records() if r["event"] == "serve.gc_frozen"]
        assert await server.stop() == 128 + signal.SIGTERM
    if not freeze:
        assert frozen == []
        return
    # Frozen once, before the service is announced, and with everything startup made
    # (trio, msgspec, structlog, the service module: far more than a few objects).
    (record,) = frozen
    assert record["objects"] > 10_000
    events = server.events()
    assert events.index("serve.gc_frozen") < events.index("serve.started")


def test_arguments_become_the_serve_configuration() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            SLOW,
            "-o",
            "greeting=a=b",
            "--metadata",
            "zone=",
            "--registry",
            "etcd://127.0.0.1:2379",
            "--advertise",
            "10.0.0.1:5000",
            "--no-access-log",
        ]
    )
    config = _check_args(args)
    assert config.target is SlowService
    assert config.options == {"greeting": "a=b"}
    assert config.metadata == {"zone": ""}
    assert config.registry == ("etcd", "127.0.0.1:2379")
    assert config.advertise == "10.0.0.1:5000"
    assert (config.host, config.port, config.ttl, config.grace) == ("127.0.0.1", 0, 10.0, 10.0)
    assert config.access_log is False
    assert config.gc_freeze is True
    assert (
        _check_args(build_parser().parse_args(["serve", SLOW, "--no-gc-freeze"])).gc_freeze is False
    )
