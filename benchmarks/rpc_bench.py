"""Unary RPC: trio_micro.rpc against grpcio (grpc.aio) and a raw trio echo (issue #3).

A small request ``GetUserRequest{user_id}`` answered from memory with
``User{user_id, name, source}``, msgpack (msgspec) for every contender, on 127.0.0.1. Server
and client are separate processes, the server pinned to one core and the client to
another; the parent only starts them, reads the server's peak RSS (``VmHWM``) and stops
them::

    .venv/bin/python benchmarks/rpc_bench.py                 # 3 runs, 20,000 calls
    .venv/bin/python benchmarks/rpc_bench.py --quick         # tiny sizes, a smoke run
    .venv/bin/python benchmarks/rpc_bench.py --only grpcio --only raw --runs 5

Contenders (``--only`` names):

* ``grpcio``: ``grpc.aio`` server with a generic handler, one channel (one HTTP/2
  connection), asyncio tasks.
* ``raw``: trio, u32 length-prefixed msgpack frames with the call id inside, answered
  inline, writes batched on both sides: the practical ceiling.
* ``trio_micro``: ``trio_micro.rpc``, one connection.
* ``trio_micro_log``: the same with the access-log interceptor writing JSON lines to a file
  (``observe.configure_logging(format="json", file=...)``, each record flushed).
* ``trio_micro_log_buffered``: the same with ``flush_interval=0.5``: records buffered and
  flushed by a thread every half second (and at exit).
* ``trio_micro_aio`` / ``trio_micro_uvloop``: the ``trio_micro`` server called by the
  asyncio client :mod:`trio_micro.aio` (one connection, ``asyncio.gather`` workers like the
  grpcio client) on asyncio's default loop / on uvloop: an asyncio program's client, next
  to grpcio-aio's.
* ``trio_micro_ratelimit``: ``trio_micro`` with ``rpc.RateLimitInterceptor`` (keyed by
  peer, a rate no caller reaches): the interceptor's cost per admitted call.
* ``trio_micro_otel`` / ``trio_micro_otel_api``: ``trio_micro`` with
  ``otel.OtelServerInterceptor`` on the server and ``otel.OtelClientInterceptor`` on the
  client, with the OpenTelemetry SDK (every span sampled, batched to an exporter that drops
  it: export cost excluded; histograms aggregated in memory) / with the API alone (no SDK:
  its no-op tracer and meter).
* ``trio_micro_profiled``: ``trio_micro`` with pyinstrument sampling the server's thread
  every millisecond for the whole run: what ``/debug/profile`` costs while it is active.

Workloads: throughput with 64 calls in flight on one connection; sequential latency (one
call at a time, p50/p99); throughput with 256 in flight and the server's peak RSS. Every
measurement uses a fresh server and client pair (so the RSS peak belongs to that workload)
and starts with a warm-up; a throughput run repeats its ``--calls`` until at least a second
has passed, so the fast contenders are not timed over a few hundred milliseconds. Figures
are medians of ``--runs`` runs, interleaved across contenders so that load drift hits
everyone alike; ratios are against peers measured in the same run. Child code lives in
``_rpc_worker.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import select
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

WORKER = Path(__file__).resolve().parent / "_rpc_worker.py"

# key -> (display name, worker contender, access log: None, FLUSH_EACH or BUFFERED)
FLUSH_EACH, BUFFERED = "flush each record", "buffered"
# configure_logging(flush_interval=...) of the buffered access log, seconds.
FLUSH_INTERVAL = 0.5
CONTENDERS: dict[str, tuple[str, str, str | None]] = {
    "grpcio": ("grpcio-aio", "grpcio", None),
    "raw": ("raw trio echo", "raw", None),
    "trio_micro": ("trio_micro", "trio_micro", None),
    "trio_micro_log": ("trio_micro + access log", "trio_micro", FLUSH_EACH),
    "trio_micro_log_buffered": (
        f"trio_micro + access log, flush_interval={FLUSH_INTERVAL}",
        "trio_micro",
        BUFFERED,
    ),
    # issue #19: the asyncio client of trio_micro.aio against the same trio_micro server
    "trio_micro_aio": ("trio_micro.aio client (asyncio)", "trio_micro_aio", None),
    "trio_micro_uvloop": ("trio_micro.aio client (uvloop)", "trio_micro_uvloop", None),
    "trio_micro_ratelimit": ("trio_micro + rate-limit interceptor", "trio_micro", None),
    # issue #17: the OpenTelemetry bridge on both sides, with the SDK (spans batched to an
    # exporter that drops them, histograms aggregated in memory) and with the API alone
    "trio_micro_otel": ("trio_micro + OTel interceptors (SDK)", "trio_micro", None),
    "trio_micro_otel_api": ("trio_micro + OTel interceptors (API, no SDK)", "trio_micro", None),
    # issue #17: the server with pyinstrument sampling (what /debug/profile runs) all along
    "trio_micro_profiled": ("trio_micro, server under pyinstrument", "trio_micro", None),
}
# Worker flags of the contenders that are trio_micro plus something, per side.
SERVER_FLAGS: dict[str, list[str]] = {
    "trio_micro_ratelimit": ["--rate-limit"],
    "trio_micro_otel": ["--otel", "sdk"],
    "trio_micro_otel_api": ["--otel", "api"],
    "trio_micro_profiled": ["--profile"],
}
CLIENT_FLAGS: dict[str, list[str]] = {
    "trio_micro_otel": ["--otel", "sdk"],
    "trio_micro_otel_api": ["--otel", "api"],
}
BASELINE, CEILING, SUBJECT = "grpcio", "raw", "trio_micro"

SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    in_flight: int
    calls: int
    warmup: int
    min_seconds: float  # throughput: repeat `calls` until at least this long


@dataclass
class Sample:
    """One measurement of one contender in one workload, or why there is none."""

    rate: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    peak_rss: int = 0  # bytes, VmHWM of the server after the run
    idle_rss: int = 0  # bytes, VmRSS of the server when it reported ready
    log_lines: int | None = None
    error: str | None = None
    not_available: str | None = None


@dataclass
class Summary:
    samples: list[Sample] = field(default_factory=list)

    @property
    def failure(self) -> str | None:
        for sample in self.samples:
            if sample.not_available:
                return f"n/a ({sample.not_available})"
        for sample in self.samples:
            if sample.error:
                return f"error: {sample.error}"
        return None if self.samples else "not run"

    def median(self, attribute: str) -> float:
        return float(statistics.median(getattr(sample, attribute) for sample in self.samples))

    def spread(self, attribute: str) -> tuple[float, float]:
        values = [getattr(sample, attribute) for sample in self.samples]
        return min(values), max(values)


# --- processes ---------------------------------------------------------------------------


def _proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, in bytes (0 where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line of ``proc``'s stdout, or ``""`` on EOF or timeout."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return ""
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _last_line(text: str) -> str:
    """The last line of a traceback: the exception. Pipes would break a Markdown table."""
    lines = text.strip().splitlines()
    return lines[-1].strip().replace("|", "/")[:200] if lines else ""


def _tail(path: Path) -> str:
    try:
        return _last_line(path.read_text(errors="replace"))
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Close the server's stdin (its stop signal); kill it if it does not exit in time."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(SERVER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def _server(
    contender: str,
    cpu: int | None,
    log_file: Path | None,
    buffered: bool,
    stderr_path: Path,
    flags: Sequence[str] = (),
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start a server; yield it with its first stdout line; always stop it."""
    command = [sys.executable, str(WORKER), "server", contender, *flags]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if log_file is not None:
        command += ["--log-file", str(log_file)]
        if buffered:
            command += ["--log-flush-interval", str(FLUSH_INTERVAL)]
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, bufsize=0
        )
    try:
        yield proc, _read_line(proc, SERVER_START_TIMEOUT)
    finally:
        _stop(proc)


def measure(key: str, workload: Workload, cpus: tuple[int, int] | None, scratch: Path) -> Sample:
    """One fresh server + client pair of contender ``key`` running ``workload``."""
    _, contender, logged = CONTENDERS[key]
    server_cpu, client_cpu = cpus if cpus else (None, None)
    log_file = scratch / f"{key}-{workload.key}-access.jsonl" if logged else None
    if log_file is not None:
        log_file.unlink(missing_ok=True)
    server_err = scratch / "server.stderr"
    sample = Sample()
    with _server(
        contender, server_cpu, log_file, logged == BUFFERED, server_err, SERVER_FLAGS.get(key, ())
    ) as (proc, line):
        if line.startswith("NA "):
            sample.not_available = line[3:]
            return sample
        if not line.startswith("READY "):
            code = proc.poll()
            why = _tail(server_err) or f"no READY line (exit code {code})"
            sample.error = f"server: {why}"
            return sample
        port = int(line.split()[1])
        sample.idle_rss = _proc_status(proc.pid, "VmRSS")
        command = [
            sys.executable, str(WORKER), "client", contender, "--port", str(port),
            "--in-flight", str(workload.in_flight), "--calls", str(workload.calls),
            "--warmup", str(workload.warmup), "--min-seconds", str(workload.min_seconds),
            *CLIENT_FLAGS.get(key, []),
        ]  # fmt: skip
        if client_cpu is not None:
            command += ["--cpu", str(client_cpu)]
        timeout = 60 + 2 * workload.min_seconds + (workload.calls + workload.warmup) / 200
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:  # run() has killed the client
            sample.error = f"client: timed out after {timeout:.0f} s"
            return sample
        sample.peak_rss = _proc_status(proc.pid, "VmHWM")
        if proc.poll() is not None:
            sample.error = f"server died (exit code {proc.returncode}): {_tail(server_err)}"
            return sample
        if done.returncode != 0:
            why = _last_line(done.stderr.decode(errors="replace"))
            sample.error = "client: " + (why or f"exit code {done.returncode}")
            return sample
        result = json.loads(done.stdout.decode().strip().splitlines()[-1])
        sample.rate = result["rate"]
        sample.p50_us = result.get("p50_us", 0.0)
        sample.p99_us = result.get("p99_us", 0.0)
    if log_file is not None:  # counted after the server flushed and closed it
        try:
            with open(log_file, "rb") as lines:
                sample.log_lines = sum(1 for _ in lines)
        except FileNotFoundError:
            sample.log_lines = 0
    return sample


# --- tables ------------------------------------------------------------------------------


def _ratio(value: float, other: Summary | None, attribute: str) -> str:
    if other is None or other.failure is not None:
        return "-"
    reference = other.median(attribute)
    return f"{value / reference:.2f}x" if reference else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f}"


def throughput_table(results: dict[str, Summary], with_rss: bool) -> str:
    header = ["contender", "calls/s", "min..max", "vs grpcio-aio", "vs raw echo"]
    if with_rss:
        header += ["server peak RSS MiB", "server idle RSS MiB"]
    rows = []
    for key, summary in results.items():
        name = CONTENDERS[key][0]
        if (failure := summary.failure) is not None:
            rows.append([name, failure] + [""] * (len(header) - 2))
            continue
        rate = summary.median("rate")
        low, high = summary.spread("rate")
        row = [
            name,
            f"{rate:,.0f}",
            f"{low:,.0f}..{high:,.0f}",
            _ratio(rate, results.get(BASELINE), "rate"),
            _ratio(rate, results.get(CEILING), "rate"),
        ]
        if with_rss:
            row += [_mib(summary.median("peak_rss")), _mib(summary.median("idle_rss"))]
        rows.append(row)
    return _table(header, rows)


def latency_table(results: dict[str, Summary]) -> str:
    header = ["contender", "p50 us", "p99 us", "p50 vs grpcio-aio", "p50 vs raw echo"]
    rows = []
    for key, summary in results.items():
        name = CONTENDERS[key][0]
        if (failure := summary.failure) is not None:
            rows.append([name, failure, "", "", ""])
            continue
        p50 = summary.median("p50_us")
        rows.append(
            [
                name,
                f"{p50:,.0f}",
                f"{summary.median('p99_us'):,.0f}",
                _ratio(p50, results.get(BASELINE), "p50_us"),
                _ratio(p50, results.get(CEILING), "p50_us"),
            ]
        )
    return _table(header, rows)


def targets(results: dict[str, dict[str, Summary]]) -> list[str]:
    """The pass/fail lines of issue #3, where both sides were measured."""

    def check(
        workload: str,
        attribute: str,
        peer: str,
        limit: float,
        at_least: bool,
        subject: str = SUBJECT,
    ) -> str:
        mine, other = results[workload].get(subject), results[workload].get(peer)
        if mine is None or other is None:
            return "not measured (use both contenders)"
        if mine.failure or other.failure:
            failed = CONTENDERS[subject if mine.failure else peer][0]
            return f"not measured ({failed} has no figure)"
        value, reference = mine.median(attribute), other.median(attribute)
        ratio = value / reference
        ok = ratio >= limit if at_least else ratio <= limit
        shown = {"rate": "{:,.0f} calls/s", "p50_us": "{:,.0f} us", "peak_rss": "{:,.0f} B"}
        fmt = shown[attribute]
        return (
            f"{'PASS' if ok else 'FAIL'}: {ratio:.3f}x "
            f"({fmt.format(value)} vs {CONTENDERS[peer][0]} {fmt.format(reference)})"
        )

    return [
        "- throughput, 64 in flight, at least 6x grpcio-aio: "
        + check("tput64", "rate", BASELINE, 6.0, at_least=True),
        "- throughput, 64 in flight, at least 50% of the raw trio echo: "
        + check("tput64", "rate", CEILING, 0.5, at_least=True),
        "- sequential p50 at most half of grpcio-aio's: "
        + check("latency", "p50_us", BASELINE, 0.5, at_least=False),
        "- server peak RSS at 256 in flight not above grpcio-aio's: "
        + check("tput256", "peak_rss", BASELINE, 1.0, at_least=False),
        "- (issue #14) the rate-limit interceptor keeps at least 90% of the throughput at 64 "
        "in flight: "
        + check("tput64", "rate", SUBJECT, 0.9, at_least=True, subject="trio_micro_ratelimit"),
        "- (issue #17) the OTel bridge with the API alone keeps at least 90% of the throughput "
        "at 64 in flight: "
        + check("tput64", "rate", SUBJECT, 0.9, at_least=True, subject="trio_micro_otel_api"),
    ]


# --- main --------------------------------------------------------------------------------


def _cpus() -> tuple[int, int] | None:
    try:
        available = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None
    return (available[0], available[1]) if len(available) >= 2 else None


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None without /proc."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _busy_fraction(seconds: float) -> float | None:
    """How busy the CPUs were over the next ``seconds`` (before we start anything)."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def _own_cpu_seconds() -> float:
    """CPU time of this process and of its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _foreign_cpu(
    cpu_before: tuple[int, int] | None, own_before: float, wall: float
) -> float | None:
    """The share of all CPUs that processes other than ours used since the snapshots."""
    cpu_after = _cpu_times()
    if cpu_before is None or cpu_after is None or wall <= 0:
        return None
    busy = (cpu_after[0] - cpu_before[0]) / os.sysconf("SC_CLK_TCK")
    foreign = busy - (_own_cpu_seconds() - own_before)
    return max(0.0, foreign) / (wall * (os.cpu_count() or 1))


def _source_digest() -> str:
    """A short hash of trio_micro/rpc/*.py, to tie figures to the code they measured."""
    package = Path(__file__).resolve().parent.parent / "trio_micro" / "rpc"
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12] if package.is_dir() else "absent"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument(
        "--calls", type=int, default=None, help="calls per throughput run (default 20,000)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument(
        "--only", action="append", choices=list(CONTENDERS), help="run only this (repeatable)"
    )
    args = parser.parse_args(argv)
    # Make `kill` run the finally blocks that stop the servers and clients.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    runs = args.runs or (1 if args.quick else 3)
    calls = args.calls or (1_000 if args.quick else 20_000)
    if runs < 1 or calls < 1:
        parser.error("--runs and --calls must be at least 1")
    latency_calls = max(100, calls * 3 // 20)  # 3,000 for 20,000
    warmup = max(100, calls // 10)
    min_seconds = 0.0 if args.quick else 1.0
    title64 = "Throughput, 64 calls in flight on one connection"
    title1 = "Sequential latency, one call at a time"
    title256 = "Throughput, 256 calls in flight, and server memory"
    workloads = [
        Workload("tput64", title64, 64, calls, warmup, min_seconds),
        Workload("latency", title1, 1, latency_calls, warmup, 0.0),
        Workload("tput256", title256, 256, calls, warmup, min_seconds),
    ]
    keys = [key for key in CONTENDERS if not args.only or key in args.only]
    cpus = _cpus()
    source = _source_digest()

    shown = shlex.join(
        [".venv/bin/python", "benchmarks/rpc_bench.py", *(sys.argv[1:] if argv is None else argv)]
    )
    print(f"# rpc_bench: `{shown}`\n")
    pinning = (
        f"server on core {cpus[0]}, client on core {cpus[1]}"
        if cpus
        else "not pinned (fewer than 2 cores available)"
    )
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}; {pinning}; grpcio {_version('grpcio')}, "
        f"trio {_version('trio')}, msgspec {_version('msgspec')}, uvloop {_version('uvloop')}; "
        f"trio_micro/rpc sources "
        f"{source}. Medians of {runs} run(s); "
        f"{calls:,} calls per throughput run (repeated until {min_seconds:g} s have passed), "
        f"{latency_calls:,} sequential calls, {warmup:,} warm-up calls first; "
        "a fresh server and client process for every figure.\n",
        flush=True,
    )

    # Other work on these cores skews everything, the fast contenders most; say so.
    busy = _busy_fraction(1.0)
    if busy is not None and busy > 0.1:
        print(
            f"**Warning: other processes kept the CPUs {busy:.0%} busy in the second before the "
            "run; the figures are unreliable.**\n",
            flush=True,
        )
    results = {w.key: {key: Summary() for key in keys} for w in workloads}
    started = time.perf_counter()
    cpu_before, own_before = _cpu_times(), _own_cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="rpc_bench-") as scratch:
        for run in range(runs):
            for workload in workloads:
                for key in keys:
                    summary = results[workload.key][key]
                    if summary.samples and (summary.samples[0].not_available):
                        continue  # the contender does not exist; don't ask again
                    sample = measure(key, workload, cpus, Path(scratch))
                    summary.samples.append(sample)
                    status = sample.not_available or sample.error or "ok"
                    print(
                        f"<!-- run {run + 1}/{runs} {workload.key} {key}: {status} -->",
                        file=sys.stderr,
                        flush=True,
                    )

    if _source_digest() != source:
        print(
            "**Warning: trio_micro/rpc changed during the run (sources "
            f"{source} -> {_source_digest()}); its figures mix two versions.**\n"
        )
    foreign = _foreign_cpu(cpu_before, own_before, time.perf_counter() - started)
    if foreign is not None and foreign > 0.05:
        print(
            f"**Warning: other processes used {foreign:.0%} of the CPUs during the run "
            "(beyond this benchmark's own processes); the figures are unreliable.**\n"
        )

    for workload in workloads:
        print(f"## {workload.title}\n")
        if workload.key == "latency":
            print(latency_table(results[workload.key]))
        else:
            print(throughput_table(results[workload.key], with_rss=workload.key == "tput256"))
        print()

    logged = [
        sample.log_lines
        for summaries in results.values()
        for key, summary in summaries.items()
        if CONTENDERS[key][2] is not None  # the access-log runs
        for sample in summary.samples
        if sample.log_lines is not None and not sample.error
    ]
    if logged and min(logged) == 0:
        print("Warning: the access-log run wrote no log lines; check the interceptor setup.\n")

    print("## Targets (issue #3)\n")
    print("\n".join(targets(results)))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
