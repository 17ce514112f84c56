"""A multi-host cluster on Linux network namespaces: etcd, three replicas, one client.

Each "host" is a network namespace of its own on a bridge (:mod:`._netns`): ``etcd`` runs
etcd; ``r1``..``r3`` each run ``trio-micro serve examples.user_service:UserService
--workers 2`` registered in it with a 2 s TTL; ``client`` runs the load (:mod:`._load`),
idempotent ``users/get_user`` calls through one etcd-driven channel. Each scenario breaks
one thing mid-load, heals it, and asserts that no call failed; the times to converge are
read from the client's own records (its view of the registry, the server of each answer),
printed, and written to ``$TRIO_MICRO_CLUSTER_RESULTS`` when set (``make cluster-test``
writes benchmarks/cluster_results.json, the figures docs/deploy.md quotes).

Marked ``cluster`` and deselected by default (it takes about a minute): run it with
``make cluster-test``. It skips, saying why, where namespaces are not allowed (not Linux,
not root, no ``ip netns``). Every wait is bounded and ended by a condition.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..registry._etcd_server import ETCDCTL, require_etcd
from ._load import TICK
from ._netns import IP, Host, Network, namespaces, unavailable, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
PORT = 50051
TTL = 2
USERS = 200
WAIT = 30.0  # the longest any one condition may take to come true (seconds)


class Replica:
    """One host running ``serve --workers 2``; :meth:`start` (re)starts it.

    ``wildcard`` binds every interface and says which address to register with
    ``--advertise``, as docs/deploy.md recommends for real machines; the others bind their
    one address.
    """

    def __init__(self, cluster: Cluster, host: Host, *, wildcard: bool = False) -> None:
        self.cluster = cluster
        self.host = host
        self.wildcard = wildcard
        self.process: subprocess.Popen[bytes] | None = None
        self.output = cluster.dir / f"{host.name}.stderr"  # its stdout and stderr
        self._started_lines = 0

    def start(self) -> None:
        c = self.cluster
        self._started_lines = self._serving_lines()
        argv = [sys.executable, "-m", "trio_micro", "serve", "examples.user_service:UserService"]
        argv += [
            "-o",
            f"db={c.db}",
            "--workers",
            "2",
            "--registry",
            f"etcd://{c.etcd.address}:2379",
        ]
        if self.wildcard:
            argv += ["--host", "0.0.0.0", "--advertise", f"{self.host.address}:{PORT}"]
        else:
            argv += ["--host", self.host.address]
        argv += ["--port", str(PORT), "--ttl", str(TTL), "--grace", "3", "--no-access-log"]
        argv += ["--log-file", str(c.dir / f"{self.host.name}.jsonl")]
        with self.output.open("ab") as log:
            self.process = self.host.popen(argv, log=log)

    def _serving_lines(self) -> int:
        text = self.output.read_text(errors="replace") if self.output.exists() else ""
        return text.count("\nserving users on ") + text.startswith("serving users on ")

    def ready(self) -> bool:
        """Whether every worker of the last :meth:`start` is ready (registered): the
        supervisor prints ``serving users on ...`` only then. A replica whose supervisor
        exited fails the test at once, with its output."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.host.name} exited ({self.process.returncode}): {_tail(self.output, 600)}"
            )
        return self._serving_lines() > self._started_lines

    def pids(self) -> list[str]:
        """The processes left in this host's namespace."""
        return subprocess.run(
            [IP, "netns", "pids", self.host.netns], capture_output=True, text=True, timeout=20
        ).stdout.split()


class Load:
    """A running client (:mod:`._load`) and what it has recorded so far."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.progress = cluster.dir / f"load-{name}.progress"
        self.stop_file = cluster.dir / f"load-{name}.stop"
        self.result_file = cluster.dir / f"load-{name}.json"
        argv = [sys.executable, "-m", "tests.cluster._load", "--etcd", cluster.etcd_url]
        argv += ["--progress", str(self.progress), "--stop", str(self.stop_file)]
        argv += ["--result", str(self.result_file), "--users", str(USERS), "--duration", "120"]
        with (cluster.dir / f"load-{name}.stderr").open("ab") as log:
            self.process = cluster.client.popen(argv, log=log)
        self.stderr = cluster.dir / f"load-{name}.stderr"

    def records(self) -> list[dict[str, object]]:
        if not self.progress.exists():
            return []
        lines = self.progress.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def seen(self, host: Host) -> bool:
        """Whether the client's latest view of the service lists an endpoint on ``host``."""
        views = [r for r in self.records() if "endpoints" in r]
        return bool(views) and listed(host, views[-1])

    def serving(self, since: float) -> set[str]:
        """The hosts that answered a call after ``since``."""
        return {
            _host(peer)
            for r in self.records()
            if "served" in r and r["t"] >= since  # type: ignore[operator]
            for peer in r["served"]  # type: ignore[attr-defined]
        }

    def first(self, since: float, condition: object) -> float:
        """Seconds from ``since`` to the first record after it for which ``condition`` holds."""
        assert callable(condition)
        for r in self.records():
            if r["t"] >= since and condition(r):  # type: ignore[operator]
                return round(float(r["t"]) - since, 2)  # type: ignore[arg-type]
        raise AssertionError("no such record")

    def finish(self) -> dict[str, object]:
        """Stop the load and return its result."""
        self.stop_file.touch()
        try:
            self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("the load did not stop") from None
        assert self.process.returncode == 0, self.stderr.read_text()[-3000:]
        result: dict[str, object] = json.loads(self.result_file.read_text())
        return result

    def longest_stall(self, since: float) -> float:
        """The longest time after ``since`` in which no call was answered (seconds)."""
        stall = longest = 0.0
        for r in self.records():
            if "served" in r and r["t"] >= since:  # type: ignore[operator]
                stall = 0.0 if r["served"] else stall + TICK
                longest = max(longest, stall)
        return round(longest, 1)


def _host(address: str) -> str:
    return address.rpartition(":")[0]


def _tail(path: Path, size: int) -> str:
    """The last ``size`` characters of a text file ('' when there is none)."""
    return path.read_text(errors="replace")[-size:] if path.exists() else ""


def _last_events(path: Path, count: int) -> list[str]:
    """The last ``count`` records of a JSON log other than per-call ones, as time and event."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") != "users.db.query":
            events.append(f"{record.get('timestamp', '?')[11:23]} {record.get('event')}")
    return events[-count:]


class Cluster:
    def __init__(self, network: Network, directory: Path) -> None:
        self.network = network
        self.dir = directory
        self.db = directory / "users.db"
        self.etcd = network.add("etcd")
        self.replicas = [
            Replica(self, network.add("r1")),
            Replica(self, network.add("r2")),
            Replica(self, network.add("r3"), wildcard=True),
        ]
        self.client = network.add("client")
        self.etcd_url = f"http://{self.etcd.address}:2379"

    def start_etcd(self) -> None:
        url, peer = self.etcd_url, "http://127.0.0.1:2380"
        argv = [require_etcd(), "--name=cluster", f"--data-dir={self.dir / 'etcd'}"]
        argv += [f"--listen-client-urls={url}", f"--advertise-client-urls={url}"]
        argv += [f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}"]
        argv += [f"--initial-cluster=cluster={peer}", "--logger=zap", "--log-level=warn"]
        with (self.dir / "etcd.log").open("ab") as log:
            self.etcd.popen(argv, log=log)
        assert ETCDCTL is not None, "etcdctl is not installed (apt-get install etcd-client)"
        health = [ETCDCTL, f"--endpoints={url}", "--command-timeout=1s", "endpoint", "health"]

        def healthy() -> bool:
            probe = subprocess.run(
                ["ip", "netns", "exec", self.client.netns, *health],
                capture_output=True,
                timeout=20,
                env={**os.environ, "ETCDCTL_API": "3"},
            )
            return probe.returncode == 0

        wait_for("etcd healthy", healthy, timeout=WAIT, interval=0.2)

    def wait_ready(self) -> None:
        """Wait until every worker of every replica is registered. A scenario that breaks a
        replica half-started tests something else: a worker whose first registration
        fails (etcd unreachable) exits, and the supervisor stops the whole replica."""
        for replica in self.replicas:
            wait_for(f"{replica.host.name} ready", replica.ready, timeout=WAIT)

    def etcdctl(self, *args: str) -> str:
        """``etcdctl ARGS`` from the client host: its output, or why it failed."""
        assert ETCDCTL is not None
        argv = [ETCDCTL, f"--endpoints={self.etcd_url}", "--command-timeout=2s", *args]
        try:
            probe = subprocess.run(
                ["ip", "netns", "exec", self.client.netns, *argv],
                capture_output=True,
                text=True,
                timeout=10,
                env={**os.environ, "ETCDCTL_API": "3"},
            )
        except subprocess.TimeoutExpired:
            return "etcdctl timed out"
        return (probe.stdout + probe.stderr).strip()

    def diagnose(self, load: Load, since: float) -> str:
        """What a failed wait leaves to read: the load's state and view, what etcd holds,
        and each replica's processes and last log records (the CI shows only the failure)."""
        lines = [f"load: exit {load.process.poll()}, stderr: {_tail(load.stderr, 800)!r}"]
        records = load.records()
        views = [r for r in records if "endpoints" in r]
        if views:
            age = time.monotonic() - float(views[-1]["t"])  # type: ignore[arg-type]
            lines.append(f"load's last view ({age:.1f} s ago): {views[-1]['endpoints']}")
        counts: Counter[str] = Counter()
        for r in records:
            if "served" in r and r["t"] >= since:  # type: ignore[operator]
                counts.update(r["served"])  # type: ignore[call-overload]
        last = [r for r in records if "served" in r][-1:]
        lines.append(f"answered since the wait began: {dict(counts)}; last tick: {last}")
        keys = self.etcdctl("get", "--prefix", "--keys-only", "/trio_micro")
        lines.append(f"etcd keys: {keys!r}")
        for replica in self.replicas:
            name, process = replica.host.name, replica.process
            status = None if process is None else process.poll()
            stderr = _tail(replica.output, 300)
            lines.append(f"{name}: supervisor exit {status}, pids {replica.pids()}, {stderr=}")
            lines.extend(
                f"  {log.name}: {_last_events(log, 8)}"
                for log in sorted(self.dir.glob(f"{name}.worker*.jsonl"))
            )
        return "\n".join(lines)


RESULTS: dict[str, dict[str, object]] = {}


def record(capsys: pytest.CaptureFixture[str], scenario: str, figures: dict[str, object]) -> None:
    RESULTS[scenario] = figures
    with capsys.disabled():
        print(f"\ncluster {scenario}: {json.dumps(figures)}")
    path = os.environ.get("TRIO_MICRO_CLUSTER_RESULTS")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        Path(path).write_text(json.dumps({**old, scenario: figures}, indent=2) + "\n")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"cluster test skipped: {reason}")
    require_etcd()
    directory = tmp_path_factory.mktemp("cluster")
    seed = [
        sys.executable,
        "-m",
        "examples.user_service",
        "seed",
        "--db",
        str(directory / "users.db"),
    ]
    subprocess.run([*seed, "--users", str(USERS)], check=True, cwd=ROOT, timeout=60)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    network = Network(cwd=ROOT, env=env)
    try:
        cluster = Cluster(network, directory)
        cluster.start_etcd()
        for replica in cluster.replicas:
            replica.start()
        cluster.wait_ready()
        yield cluster
    finally:
        created = {network.switch, *(h.netns for h in network.hosts)}
        network.close()
        leftover = created & namespaces()
        assert not leftover, f"namespaces left behind: {leftover}"


def listed(host: Host, record: dict[str, object]) -> bool:
    """Whether a progress ``record`` of the client's view lists an endpoint on ``host``."""
    return any(_host(a) == host.address for a in record["endpoints"])  # type: ignore[attr-defined]


def scenario(
    cluster: Cluster,
    capsys: pytest.CaptureFixture[str],
    name: str,
    victim: Replica,
    *,
    fault: Callable[[], None],
    heal: Callable[[], None],
    while_broken: Callable[[], dict[str, object]] = dict,
) -> None:
    """Break ``victim`` mid-load, wait until the client stops using it, heal, wait until it
    serves again; assert no call failed and record the times to converge."""
    cluster.wait_ready()  # also a replica the previous scenario restarted
    load = Load(cluster, name)
    start = time.monotonic()
    try:
        everyone = {r.host.address for r in cluster.replicas}
        wait_for("all three replicas answer", lambda: load.serving(start) == everyone, timeout=WAIT)
        broken = time.monotonic()
        fault()
        try:
            wait_for(
                f"{victim.host.name} leaves discovery",
                lambda: not load.seen(victim.host),
                timeout=WAIT,
            )
            dropped = time.monotonic()
            # ... and the calls stuck on it (if any) were retried: the others answer again.
            wait_for("the others answer", lambda: bool(load.serving(dropped)), timeout=WAIT)
            extra = while_broken()
        finally:
            healed = time.monotonic()
            heal()
        wait_for(
            f"{victim.host.name} answers again",
            lambda: victim.host.address in load.serving(healed),
            timeout=WAIT,
        )
        result = load.finish()
    except AssertionError as exc:  # a wait ran out: say what the cluster looked like
        raise AssertionError(f"{exc}\n{cluster.diagnose(load, start)}") from None
    finally:
        load.process.kill()
    assert result["failed"] == 0, result["failures"]
    by_host: dict[str, int] = {}
    for peer, count in result["served"].items():  # type: ignore[attr-defined]
        by_host[_host(peer)] = by_host.get(_host(peer), 0) + count
    host = victim.host

    def gone(r: dict[str, object]) -> bool:
        return "endpoints" in r and not listed(host, r)

    def back(r: dict[str, object]) -> bool:
        return "endpoints" in r and listed(host, r)

    def answered(r: dict[str, object]) -> bool:
        return r["t"] >= dropped and bool(r.get("served"))  # type: ignore[operator]

    def answered_by_victim(r: dict[str, object]) -> bool:
        return any(_host(p) == host.address for p in r.get("served", ()))  # type: ignore[attr-defined]

    figures = {
        "dropped_from_discovery_s": load.first(broken, gone),
        "failover_s": load.first(broken, answered),
        "broken_for_s": round(healed - broken, 2),
        "back_in_discovery_s": load.first(healed, back),
        "serving_again_s": load.first(healed, answered_by_victim),
        "longest_stall_s": load.longest_stall(broken),
        "calls": result["calls"],
        "failed": result["failed"],
        "served_by_host": by_host,
    }
    record(capsys, name, {**figures, **extra})


def test_replica_link_down_then_up(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    """A replica host's cable is pulled at the switch mid-load (a silent partition: no RST),
    then plugged back: its lease expires, the client's keepalive fails the calls stuck on it
    (they are retried on the others), and it re-registers when back."""
    victim = cluster.replicas[0]
    scenario(
        cluster, capsys, "link_down", victim,
        fault=lambda: victim.host.link(up=False), heal=lambda: victim.host.link(up=True),
    )  # fmt: skip


def test_replica_cut_off_from_etcd_past_its_ttl(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replica loses etcd only (a blackhole route to etcd's address in its namespace) while
    clients still reach it: it leaves discovery when its lease runs out, and re-registers
    when the route is removed."""
    victim, etcd = cluster.replicas[1], cluster.etcd.address
    scenario(
        cluster, capsys, "etcd_partition", victim,
        fault=lambda: victim.host.blackhole(etcd, on=True),
        heal=lambda: victim.host.blackhole(etcd, on=False),
    )  # fmt: skip


def test_replica_supervisor_sigkilled(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL of one replica's supervisor: its workers deregister, drain and exit by
    themselves (no orphans); the replica is then started again and rejoins."""
    victim = cluster.replicas[2]
    killed: list[float] = []

    def kill() -> None:
        assert victim.process is not None
        killed.append(time.monotonic())
        victim.process.send_signal(signal.SIGKILL)

    def workers_gone() -> dict[str, object]:
        wait_for("the orphaned workers exit", lambda: not victim.pids(), timeout=WAIT)
        return {"workers_exited_s": round(time.monotonic() - killed[0], 2)}

    scenario(
        cluster,
        capsys,
        "supervisor_sigkill",
        victim,
        fault=kill,
        heal=victim.start,
        while_broken=workers_gone,
    )
