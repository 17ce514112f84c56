"""The demo (``examples/demo``) end to end: its summary checked against the logs of every
process.

The demo runs as a real ``python -m examples.demo`` process (it runs ``trio.run`` and
starts a registry and user-service replicas as processes of its own), with a small
workload and a time bound. Whatever happens, the fixture kills every process whose
command line names the test's run folder.

What the logs can confirm exactly, and why:

* Each client call is counted once by the client's ``PeerCounter``, under the replica
  that gave its final answer; a replica writes its access record when the handler
  returns. So for a replica that was never killed, its ``OK`` ``users/get_user`` records
  equal the client's count for it, exactly, and it has no failed records.
* The killed replica may have finished (and logged) calls whose answers never reached
  the client; the client retried those elsewhere. Each such call is one retry, so its
  OK records lie between the client's count for it and that count plus the retries.
* Each replica has its own cache (TTL 30 s, room for every user): during a run of a few
  seconds it queries the database at most once per user (``users.db.query`` records
  carry the ``user_id``), which is what single-flight and the cache promise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from examples.demo import main, zipf_user_ids
from examples.demo.config import REGISTRY_READY, SERVE_READY, Config, DemoError
from examples.demo.processes import Child, running, start_child, stop_all

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process groups and /proc: Linux only"
)

ROOT = Path(__file__).resolve().parents[2]
#: 128 + SIGTERM: how a trio-micro command exits after a graceful stop by SIGTERM.
STOPPED = 128 + signal.SIGTERM
#: Upper bound of one small demo run (it takes a few seconds on an idle 2-core machine).
RUN_TIMEOUT = 120


def _processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """The demo's run folder; every process still naming it is killed afterwards."""
    path = tmp_path / "run"
    yield path
    for pid in _processes_naming(str(path)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _demo(
    run_dir: Path, *args: str, tmp: Path | None = None
) -> tuple[int, str, dict[str, Any]]:
    """Run the demo (with ``TMPDIR=tmp`` if given); return its exit status, its stdout and
    its summary.json."""
    argv = [sys.executable, "-m", "examples.demo", "--out", str(run_dir), *args]
    env = None if tmp is None else {**os.environ, "TMPDIR": str(tmp)}
    with trio.fail_after(RUN_TIMEOUT):
        # On timeout run_process sends SIGTERM (the demo stops its children), then SIGKILL.
        done = await trio.run_process(
            argv,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
    stdout = done.stdout.decode()
    assert (run_dir / "summary.json").exists(), done.stderr.decode()[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    return done.returncode, stdout, summary


class _Log:
    """What the test itself reads in one replica's JSON-lines log."""

    def __init__(self, path: Path) -> None:
        self.ok: Counter[str] = Counter()  # server address -> OK users/get_user records
        self.failed: list[dict[str, Any]] = []
        self.hits = 0
        self.queries: Counter[int] = Counter()  # user_id -> users.db.query records
        # OK get_user records by the verified client certificate's name (--tls), else None
        self.clients: Counter[str | None] = Counter()
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # only a SIGKILLed replica's last line could be cut short
            if record.get("event") == "users.db.query":
                self.queries[record["user_id"]] += 1
            elif (
                record.get("event", "").startswith("rpc.call.")
                and record.get("method") == "get_user"
            ):
                if record["code"] == "OK":
                    self.ok[record["server"]] += 1
                    self.clients[record.get("client")] += 1
                    self.hits += record.get("cache") == "hit"
                else:
                    self.failed.append(record)


def _worker_logs(summary: dict[str, Any]) -> dict[tuple[str, int], _Log]:
    """(replica, worker index) -> what that worker's own log says."""
    return {
        (r["name"], w["index"]): _Log(Path(w["log"]))
        for r in summary["replicas"]
        for w in r["workers"]
    }


def _check_processes_gone(summary: dict[str, Any], run_dir: Path) -> None:
    workers = [w["pid"] for r in summary["replicas"] for w in r["workers"]]
    for pid in [p["pid"] for p in summary["processes"]] + workers:
        assert not running(pid), pid  # gone, or a zombie init has yet to reap
    assert _processes_naming(str(run_dir)) == []
    assert summary["leftover_processes"] == []
    assert summary["busy_ports"] == []


async def test_demo_survives_a_killed_replica_and_its_summary_matches_the_logs(
    run_dir: Path,
) -> None:
    code, stdout, summary = await _demo(
        run_dir, "--users", "500", "--calls", "1500", "--concurrency", "50", "--replicas", "3",
        "--workers", "2", "--orders", "0",
    )  # fmt: skip
    assert code == 0, stdout
    assert summary["problems"] == []
    assert "demo OK" in stdout
    # Every call succeeded although a replica was SIGKILLed halfway.
    assert (summary["calls"], summary["ok"], summary["failed"]) == (1500, 1500, 0)
    assert summary["errors"] == {}
    killed = [r for r in summary["replicas"] if r["killed_at_call"] is not None]
    assert [r["name"] for r in killed] == ["users-3"]
    assert killed[0]["killed_at_call"] >= 750
    stops = {p["name"]: (p["returncode"], p["clean"]) for p in summary["processes"]}
    assert stops == {
        "registry": (STOPPED, True),
        "users-1": (STOPPED, True),
        "users-2": (STOPPED, True),
        "users-3": (-signal.SIGKILL, True),
    }

    logs = _worker_logs(summary)
    retries = summary["retries"]
    assert sum(r["calls"] for r in summary["replicas"]) == 1500
    for replica in summary["replicas"]:
        assert len(replica["workers"]) == 2  # serve --workers 2
        for worker in replica["workers"]:
            log = logs[replica["name"], worker["index"]]
            # The `server` field names the worker's own endpoint (the one it registered).
            assert set(log.ok) <= {worker["address"]}
            served = log.ok[worker["address"]]
            if replica["killed_at_call"] is None:
                assert served == worker["calls"]
                assert log.failed == []
            else:
                # Killed: a call answered just before the SIGKILL may miss its log line (the
                # record is written after the answer is sent), at most the 50 in flight; a
                # call logged whose answer never arrived was retried elsewhere.
                assert worker["calls"] - 50 <= served <= worker["calls"] + retries
            assert worker["log_ok"] == served
            assert worker["db_queries"] == sum(log.queries.values())
            # Each worker has its own cache and single-flight: no user queried twice by one.
            assert max(log.queries.values(), default=1) == 1
        assert replica["calls"] == sum(w["calls"] for w in replica["workers"])
        assert replica["log_ok"] == sum(w["log_ok"] for w in replica["workers"])
    assert summary["db_queries"] == sum(sum(log.queries.values()) for log in logs.values())
    # Cache hits: the replies' `source` (client) against the `cache` field (logs).
    cache_replies = summary["replies_by_source"].get("cache", 0)
    assert summary["cache_hit_ratio"] == pytest.approx(cache_replies / 1500, abs=1e-6)
    log_hits = sum(log.hits for log in logs.values())
    assert cache_replies <= log_hits <= cache_replies + retries

    assert (run_dir / "report.html").read_text().count("get_user") > 0
    assert (run_dir / "client.jsonl").exists()
    assert (run_dir / "registry.jsonl").exists()
    assert summary["debug_url"].startswith("http://127.0.0.1:")
    _check_processes_gone(summary, run_dir)


async def test_demo_without_a_kill_matches_the_logs_exactly(run_dir: Path) -> None:
    code, stdout, summary = await _demo(
        run_dir, "--users", "200", "--calls", "600", "--concurrency", "20", "--replicas", "2",
        "--no-kill", "--orders", "0",
    )  # fmt: skip
    assert code == 0, stdout
    assert (summary["ok"], summary["failed"], summary["retries"]) == (600, 0, 0)
    logs = _worker_logs(summary)
    for replica in summary["replicas"]:
        assert replica["killed_at_call"] is None
        for worker in replica["workers"]:
            assert logs[replica["name"], worker["index"]].ok == {worker["address"]: worker["calls"]}
    assert sum(log.hits for log in logs.values()) == summary["replies_by_source"].get("cache", 0)
    # Callers coalesced onto one load all get a "database" reply: one query serves them.
    assert 0 < summary["db_queries"] <= summary["replies_by_source"].get("database", 0)
    assert summary["db_queries"] == sum(len(log.queries) for log in logs.values())
    assert all(p["returncode"] == STOPPED for p in summary["processes"])
    _check_processes_gone(summary, run_dir)


async def test_the_whole_system_survives_a_killed_users_replica_over_mutual_tls(
    run_dir: Path, tmp_path: Path
) -> None:
    certs_tmp = tmp_path / "tmp"
    certs_tmp.mkdir()
    code, stdout, summary = await _demo(
        run_dir, "--users", "300", "--calls", "1200", "--concurrency", "30", "--order-share", "0.5",
        "--tls", tmp=certs_tmp,
    )  # fmt: skip
    assert code == 0, stdout
    # Every GetUser a users replica answered came over TLS from a client whose certificate
    # it verified (the identity is in its access record): the demo's own, or an orders
    # replica's. Without TLS the record has no client; with a cert from elsewhere, no call.
    assert summary["tls"] is True
    clients: Counter[str | None] = Counter()
    for log in _worker_logs(summary).values():
        clients.update(log.clients)
    assert set(clients) == {"demo-client", "demo-service"}, clients
    assert list(certs_tmp.iterdir()) == []  # the throwaway CA and keys are gone
    assert (summary["calls"], summary["ok"], summary["failed"]) == (1200, 1200, 0)
    assert summary["orders_created"] > 0
    assert [r["name"] for r in summary["replicas"] if r["killed_at_call"]] == ["users-3"]
    assert {p["name"]: p["clean"] for p in summary["processes"]} == dict.fromkeys(
        ["registry", "notifier", "users-1", "users-2", "users-3", "orders-1", "orders-2"], True
    )
    # Per-service tables: each CreateOrder that succeeded for the client is one OK record
    # in an orders replica's log (a call is not retried once sent: it is not idempotent).
    orders = summary["services"]["orders"]
    assert sum(r["methods"].get("create_order", 0) for r in orders) == summary["orders_created"]
    assert "orders: calls per replica" in stdout
    # The waterfall of a CreateOrder that crossed two services, from the slowest 1%.
    trace = summary["trace"]
    assert f"$ trio-micro logs trace {trace['trace_id']}" in stdout
    waterfall = stdout.split(f"trace {trace['trace_id']}:", 1)[1]
    assert re.search(r"orders/create_order .*\n\s+users/get_user ", waterfall)
    # The service graph, from the logs alone.
    report = (run_dir / "report.html").read_text()
    assert "Service graph" in report
    assert re.search(r"client -> orders [\d,]+, client -> users [\d,]+, orders -> users", stdout)
    notifier = summary["notifier"]
    assert 0 < notifier["sent"] == notifier["cursor"] <= summary["orders_created"]
    _check_processes_gone(summary, run_dir)


async def test_ctrl_c_stops_every_process_of_the_demo(run_dir: Path) -> None:
    argv = [sys.executable, "-m", "examples.demo", "--out", str(run_dir)]
    argv += ["--users", "100", "--calls", "10000000", "--concurrency", "10", "--replicas", "2"]
    argv += ["--orders", "1"]  # and the notifier: every process of the system is stopped
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        assert process.stdout is not None
        seen = b""
        with trio.fail_after(RUN_TIMEOUT):
            while b"client: found" not in seen:  # the load is starting
                data = await process.stdout.receive_some()
                assert data, seen.decode()
                seen += data
            # While it runs, its debug endpoint answers at the URL it printed.
            match = re.search(
                r"debug endpoint of the client: (http://\S+)/debug/tasks", seen.decode()
            )
            assert match, seen.decode()
            # The task tree shows the load running, once the client has found orders too
            # and imported its batch of users (seconds on a busy machine): polled.
            async with httpx.AsyncClient() as client:
                while True:
                    page = await client.get(f"{match.group(1)}/debug/tasks")
                    assert page.status_code == 200
                    if "run_load" in page.text:
                        break
                    await trio.sleep(0.1)
            process.send_signal(signal.SIGINT)
            async with process.stdout:
                while await process.stdout.receive_some():
                    pass
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    assert process.returncode == 128 + signal.SIGINT
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["signal"] == "SIGINT"
    stops = {p["name"]: p["returncode"] for p in summary["processes"]}
    assert stops == dict.fromkeys(
        ["registry", "notifier", "users-1", "users-2", "orders-1"], STOPPED
    )
    _check_processes_gone(summary, run_dir)


def _config(run_dir: Path) -> Config:
    return Config(
        users=1,
        calls=1,
        concurrency=1,
        replicas=1,
        workers=1,
        ttl=1.0,
        seed=0,
        kill=False,
        run_dir=run_dir,
    )


async def test_a_child_that_exits_before_it_is_ready_is_reported(tmp_path: Path) -> None:
    code = "import sys; print('no database here', file=sys.stderr); sys.exit(3)"
    children: list[Child] = []
    async with trio.open_nursery() as nursery:
        with pytest.raises(DemoError) as exc:
            await start_child(
                nursery,
                children,
                "users-1",
                [sys.executable, "-c", code],
                SERVE_READY,
                _config(tmp_path),
                dict(os.environ),
            )
    assert "users-1 exited with status 3 before it was ready" in str(exc.value)
    assert "no database here" in str(exc.value)  # the tail of its stderr
    await stop_all(children)
    assert children[0].stop == "exited by itself with status 3 before it was stopped"
    assert not children[0].clean


async def test_a_child_that_never_gets_ready_is_stopped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    children: list[Child] = []
    try:
        async with trio.open_nursery() as nursery:
            with pytest.raises(DemoError, match="printed no ready line within 30 s"):
                await start_child(
                    nursery,
                    children,
                    "registry",
                    [sys.executable, "-c", "import time; time.sleep(60)"],
                    REGISTRY_READY,
                    _config(tmp_path),
                    dict(os.environ),
                )
        await stop_all(children)
        assert children[0].stop is not None
        assert not children[0].clean
    finally:
        for child in children:  # the mock clock may have cut the waits short: really wait
            child.signal_group(signal.SIGKILL)
            await child.process.wait()
    assert children[0].process.returncode is not None


def test_killing_a_replica_needs_two(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--replicas", "1", "--out", str(tmp_path / "run")]) == 2
    assert "--replicas 1: killing one needs at least 2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_run_folder_must_be_new_or_empty(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "old.jsonl").write_text("{}\n")
    assert main(["--out", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"), [("--calls", "0"), ("--users", "x"), ("--ttl", "-1"), ("--ttl", "inf")]
)
def test_bad_numbers_are_usage_errors(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{option}: expected" in err
    assert repr(value) in err


def test_zipf_user_ids_are_seeded_in_range_and_skewed() -> None:
    ids = zipf_user_ids(1000, 20_000, seed=7)
    assert ids == zipf_user_ids(1000, 20_000, seed=7)
    assert ids != zipf_user_ids(1000, 20_000, seed=8)
    assert min(ids) >= 1
    assert max(ids) <= 1000
    counts = Counter(ids).most_common()
    # Rank 1 has weight 1/H where H = sum(k**-1.1, k=1..1000) ~ 5.2: about 19 % of draws,
    # where a uniform law would give 0.1 %.
    assert 0.15 < counts[0][1] / 20_000 < 0.23
    assert counts[0][1] > 1.8 * counts[1][1]  # rank 2 has 2**-1.1 ~ 0.47 of rank 1's weight


def test_zipf_user_ids_with_exponent_zero_is_uniform() -> None:
    counts = Counter(zipf_user_ids(4, 40_000, exponent=0, seed=1))
    assert sorted(counts) == [1, 2, 3, 4]
    assert all(abs(n - 10_000) < 500 for n in counts.values())


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"users": 0, "n": 1}, ValueError),
        ({"users": 10, "n": -1}, ValueError),
        ({"users": 1.5, "n": 1}, TypeError),
        ({"users": 10, "n": 1, "exponent": -1}, ValueError),
        ({"users": 10, "n": 1, "exponent": "1"}, TypeError),
        ({"users": 10, "n": 1, "seed": None}, TypeError),
    ],
)
def test_zipf_user_ids_refuses_bad_input(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        zipf_user_ids(**kwargs)
