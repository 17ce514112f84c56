"""``trio-micro serve --workers N`` as processes: a supervisor, its workers, a registry.

Real processes and sockets on 127.0.0.1, each wait bounded (``WAIT``) and ended by a
condition, never by a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from trio_micro import rpc
from trio_micro.cli import main
from trio_micro.registry import open_registry_client, open_registry_server

from .test_serve import WAIT, run, running

PIDS = "tests.cli._slow_service:PidService"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="serve --workers needs SO_REUSEPORT"
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def worker_records(log_file: Path, index: int) -> list[dict[str, object]]:
    path = log_file.with_name(f"{log_file.stem}.worker{index}{log_file.suffix}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_workers_share_a_port_register_each_and_stop_together(tmp_path: Path) -> None:
    async with (
        open_registry_server(port=0) as registry_server,
        open_registry_client(registry_server.target) as registry,
    ):
        argv = ["serve", PIDS, "--workers", "2", "--port", "0", "--debug-port", "0"]
        argv += ["--registry", f"registry://{registry_server.target}", "--grace", "5"]
        async with running(argv, tmp_path, prefix="serving pids on 127.0.0.1:") as server:
            shared = server.line.rpartition(" ")[2]
            endpoints = [e.address for e in await registry.resolve("pids")]
            assert len(endpoints) == 2  # one of its own per worker
            assert shared not in endpoints

            # A registry-driven channel spreads its calls over both workers...
            async with rpc.open_channel("pids", registry=registry) as channel:
                served: Counter[int] = Counter()
                with trio.fail_after(WAIT):
                    for _ in range(40):
                        served[(await channel.call("pids/whoami", {}))["pid"]] += 1
            assert len(served) == 2
            assert min(served.values()) >= 10
            # ... and the shared port answers too (the kernel picks the worker).
            async with rpc.open_channel(shared) as channel:
                pid = (await channel.call("pids/whoami", {}))["pid"]
            assert pid in served

            # One /metrics for all: each worker's figures labelled, the supervisor's own too.
            [url] = [r["url"] for r in server.records() if r["event"] == "serve.debug_endpoint"]
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"{url.rstrip('/')}/metrics")).text
            calls = {
                sample.labels["worker"]: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "trio_micro_rpc_server_calls_total"
                and sample.labels["service"] == "pids"
            }
            assert sorted(calls) == ["0", "1"]
            assert sum(calls.values()) == 41
            workers = {
                sample.labels["worker"]
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "process_resident_memory_bytes"
            }
            assert workers == {"supervisor", "0", "1"}

            assert await server.stop(signal.SIGTERM) == 128 + signal.SIGTERM
        assert await registry.resolve("pids") == []  # every worker deregistered
    assert all(not alive(pid) for pid in served)
    for index in range(2):
        records = worker_records(server.log_file, index)
        assert records[-1]["event"] == "serve.stopped"
        assert {r.get("worker") for r in records} == {index}
    assert server.events()[-1] == "serve.stopped"


async def test_a_crashed_worker_is_restarted_and_registers_again(tmp_path: Path) -> None:
    async with (
        open_registry_server(port=0) as registry_server,
        open_registry_client(registry_server.target) as registry,
    ):
        argv = ["serve", PIDS, "--workers", "2", "--port", "0", "--ttl", "2"]
        argv += ["--registry", f"registry://{registry_server.target}"]
        async with running(argv, tmp_path, prefix="serving pids on ") as server:
            [started] = [r for r in server.records() if r["event"] == "serve.started"]
            victim = started["workers"][0]["pid"]
            os.kill(victim, signal.SIGKILL)
            await server.wait_for_event("supervise.worker.exited")
            with trio.fail_after(WAIT):
                while True:
                    ready = [r for r in server.records() if r["event"] == "supervise.worker.ready"]
                    endpoints = await registry.resolve("pids")
                    if len(ready) == 3 and len(endpoints) == 2:
                        break
                    await trio.sleep(0.05)
            [exited] = [r for r in server.records() if r["event"] == "supervise.worker.exited"]
            assert (exited["worker"], exited["returncode"]) == (0, -signal.SIGKILL)
            assert ready[-1]["worker"] == 0
            assert ready[-1]["pid"] != victim
            assert await server.stop(signal.SIGINT) == 128 + signal.SIGINT


async def test_sigkill_of_the_supervisor_stops_its_workers(tmp_path: Path) -> None:
    async with running(
        ["serve", PIDS, "--workers", "2", "--port", "0"], tmp_path, prefix="serving "
    ) as server:
        [started] = [r for r in server.records() if r["event"] == "serve.started"]
        pids = [w["pid"] for w in started["workers"]]
        server.process.kill()
        await server.process.wait()
        with trio.fail_after(WAIT):
            while any(alive(pid) for pid in pids):  # noqa: ASYNC110 - other processes
                await trio.sleep(0.02)
    for index in range(2):
        events = [r["event"] for r in worker_records(server.log_file, index)]
        assert "serve.supervisor_gone" in events
        assert events[-1] == "serve.stopped"  # drained, not cut off


@pytest.mark.parametrize("workers", ["0", "-1", "x", "257", "1.5"])
def test_a_bad_worker_count_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", PIDS, f"--workers={workers}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "expected a number of workers from 1 to 256, or 'auto'" in err


def test_auto_is_one_worker_per_cpu() -> None:
    from trio_micro.cli._common import worker_count

    assert worker_count("auto") == min(os.cpu_count() or 1, 256)


def test_a_port_held_without_reuse_port_is_one_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run(capsys, "serve", PIDS, "--workers", "2", "--port", str(port))
    assert code == 1
    assert err.count("\n") == 1, err
    assert f"cannot listen on 127.0.0.1:{port} for 2 workers" in err


def test_a_module_that_does_not_import_fails_once_in_the_supervisor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = run(capsys, "serve", "tests.cli.no_such_module:Svc", "--workers", "2")
    assert code == 1
    assert err.count("\n") == 1, err
    assert "cannot import 'tests.cli.no_such_module'" in err


async def test_workers_that_cannot_start_stop_the_supervisor_with_one_error(
    tmp_path: Path,
) -> None:
    # The options reach the service in the workers only: each worker fails before ready.
    argv = ["serve", PIDS, "--workers", "2", "-o", "fail=yes"]
    with (tmp_path / "stderr").open("wb") as stderr, trio.fail_after(WAIT):
        process = await trio.run_process(
            [sys.executable, "-m", "trio_micro", *argv],
            stderr=stderr,
            stdout=None,
            check=False,
            cwd=ROOT,
        )
    assert process.returncode == 1
    lines = (tmp_path / "stderr").read_text().splitlines()
    errors = [line for line in lines if line.startswith("trio-micro serve: error: ")]
    supervisor = [line for line in errors if "before it was ready" in line]
    assert len(supervisor) == 1, errors
    assert "exited with status 1 before it was ready" in supervisor[0]
    # Each worker said why, once, and none was restarted.
    assert all("asked to fail: yes" in line for line in errors if line not in supervisor)
    assert 1 <= len(errors) - 1 <= 2
