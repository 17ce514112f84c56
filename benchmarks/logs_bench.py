"""``trio-micro logs summary`` against ``jq`` on a 1,000,000-line access log (issue #6).

Generates a realistic RPC access log with the fields of DESIGN §7 (five services, a dozen
methods, three replicas each, heavy-tailed latencies, about 2% errors, traces that fan out
across services) into a temp dir, deterministic and reused when present. Then, in one run:

* wall time of ``trio-micro logs summary --json`` and of a ``jq -n 'reduce inputs ...'``
  computing only the per-method count and mean of ``duration_ms`` (median of 3 runs each,
  interleaved);
* peak RSS of ``summary`` on a 10 MB log and on a ~1 GB log (the 1M-line log repeated,
  written to the temp dir and deleted afterwards), from
  ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a fresh child each: the largest
  RSS of any one process (the command or one of its workers).

The load average is printed before and after: other work on the machine makes the
numbers noisy (both tools slow down, but not equally).

The log is read once before the runs, so that neither tool's first run waits for the
disk. The command runs as an installed package does, with its bytecode cached (in
``<dir>/pycache`` through ``PYTHONPYCACHEPREFIX``, after one warm-up run, so the checkout
stays clean), even where ``PYTHONDONTWRITEBYTECODE`` is set; ``--no-bytecode-cache``
measures compiling every module from source on every run instead.

::

    .venv/bin/python benchmarks/logs_bench.py            # full size (about 336 MB of log)
    .venv/bin/python benchmarks/logs_bench.py --lines 100000 --runs 1 --no-big  # smoke run

``--before TREE`` also runs the summary of another checkout (a ``git worktree`` of an
older commit), interleaved with the others in the same run, to compare a change on a
noisy machine; ``--summary-args`` passes options to this tree's summary only (so that
both do the same work when the options changed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

# service -> (methods, base latency ms, cache?)
SERVICES: dict[str, tuple[tuple[str, ...], float, bool]] = {
    "gateway": (("HandleRequest", "Health"), 4.0, False),
    "users": (("GetUser", "UpdateUser", "ListUsers"), 0.8, True),
    "orders": (("ListOrders", "CreateOrder", "GetOrder"), 2.5, False),
    "inventory": (("CheckStock", "Reserve"), 1.5, True),
    "auth": (("Verify", "Refresh"), 0.4, True),
}
ERRORS = (
    ("NOT_FOUND", "user {0} not found"),
    ("DEADLINE_EXCEEDED", "deadline of {0} ms exceeded"),
    ("UNAVAILABLE", "no healthy endpoint for the service (tried {0})"),
    ("INTERNAL", "unexpected error: database is locked (attempt {0})"),
    ("INVALID_ARGUMENT", "user_id: expected int >= 1, got {0}"),
)
JQ_PROGRAM = (
    'reduce inputs as $r ({}; .[$r.service + "/" + $r.method] |= '
    "{n: ((.n // 0) + 1), s: ((.s // 0) + $r.duration_ms)}) "
    "| map_values({count: .n, mean: (.s / .n)})"
)
HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-c", "import sys; from trio_micro.cli import main; sys.exit(main())"]


def check_against_jq(summary_cmd: list[str], jq_cmd: list[str]) -> str:
    """Run both once more and compare per-method counts (exactly) and means (1e-9 relative).

    Raises:
        SystemExit: They disagree.
    """
    ours = json.loads(subprocess.run(summary_cmd, check=True, capture_output=True).stdout)
    theirs = json.loads(subprocess.run(jq_cmd, check=True, capture_output=True).stdout)
    theirs.pop("/", None)  # lines without service/method (the database queries)
    mine = {f"{m['service']}/{m['method']}": m for m in ours["methods"]}
    if set(mine) != set(theirs):
        raise SystemExit(f"methods differ: {sorted(set(mine) ^ set(theirs))}")
    for key, want in theirs.items():
        got = mine[key]
        if got["calls"] != want["count"] or not math.isclose(
            got["mean_ms"], want["mean"], rel_tol=1e-9
        ):
            raise SystemExit(f"{key}: summary {got['calls']}, {got['mean_ms']} vs jq {want}")
    return f"check: per-method counts and means equal jq's ({len(theirs)} methods)"


def generate(path: Path, lines: int, *, seed: int = 20261126) -> None:
    """Write ``lines`` access-log records to ``path`` (deterministic for a seed)."""
    rng = random.Random(seed)
    replicas = {
        name: [f"10.0.{i}.{j + 10}:50051" for j in range(3)] for i, name in enumerate(SERVICES)
    }
    start = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
    step_us = 3_600_000_000 / lines  # one hour of traffic
    t_us = 0.0
    written = 0
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        buf: list[str] = []
        while written < lines:
            trace_id = f"{rng.getrandbits(128):032x}"
            root_span = f"{rng.getrandbits(64):016x}"
            # A request: gateway -> auth + users + (orders -> inventory) sometimes.
            calls = [("auth", root_span), ("users", root_span)]
            if rng.random() < 0.5:
                calls.append(("orders", root_span))
                calls.append(("inventory", None))
            total = 0.0
            orders_span = None
            for service, parent in [*calls, ("gateway", "")]:
                methods, base, has_cache = SERVICES[service]
                method = methods[min(int(rng.paretovariate(1.2)) - 1, len(methods) - 1)]
                span = root_span if service == "gateway" else f"{rng.getrandbits(64):016x}"
                if service == "orders":
                    orders_span = span
                if parent is None:
                    parent = orders_span
                # Heavy tail: Pareto-scaled lognormal, milliseconds.
                duration = base * rng.lognormvariate(0, 0.6) * rng.paretovariate(3.0)
                if service == "gateway":
                    duration += total
                total += duration
                t_us += step_us
                ts = (start + timedelta(microseconds=t_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                server = rng.choice(replicas[service])
                # The client: a gateway replica (an outside host for the gateway itself).
                client = "192.168.7" if service == "gateway" else "10.0.0"
                peer = f"{client}.{rng.randrange(10, 13)}:{rng.randrange(32768, 61000)}"
                cache = ""
                if has_cache:
                    hit = rng.random() < 0.8
                    cache = ',"cache":"hit"' if hit else ',"cache":"miss"'
                    if hit:
                        duration *= 0.2
                    elif service == "users" and written + 1 < lines:
                        # A cache miss queries the database: one users.db.query record.
                        buf.append(
                            f'{{"timestamp":"{ts}","level":"debug","logger":"users.db",'
                            f'"event":"users.db.query","server":"{server}",'
                            f'"query":"SELECT id, name, email FROM users WHERE id = ?",'
                            f'"duration_ms":{duration * 0.6:.3f},"trace_id":"{trace_id}",'
                            f'"span_id":"{span}"}}\n'
                        )
                        written += 1
                parent_field = f',"parent_span_id":"{parent}"' if parent else ""
                if rng.random() < 0.02:
                    code, template = rng.choice(ERRORS)
                    message = template.format(rng.randrange(1, 1000))
                    buf.append(
                        f'{{"timestamp":"{ts}","level":"warning","logger":"rpc",'
                        f'"event":"rpc.call.failed","service":"{service}","method":"{method}",'
                        f'"peer":"{peer}","server":"{server}","code":"{code}",'
                        f'"duration_ms":{duration:.3f},'
                        f'"trace_id":"{trace_id}","span_id":"{span}"{parent_field}{cache},'
                        f'"message":"{message}"}}\n'
                    )
                else:
                    buf.append(
                        f'{{"timestamp":"{ts}","level":"info","logger":"rpc",'
                        f'"event":"rpc.call.complete","service":"{service}","method":"{method}",'
                        f'"peer":"{peer}","server":"{server}","code":"OK",'
                        f'"duration_ms":{duration:.3f},'
                        f'"trace_id":"{trace_id}","span_id":"{span}"{parent_field}{cache}}}\n'
                    )
                written += 1
                if written == lines:
                    break
            if len(buf) >= 10_000:
                out.writelines(buf)
                buf.clear()
        out.writelines(buf)
    tmp.replace(path)


def ensure_log(directory: Path, lines: int) -> Path:
    path = directory / f"access-{lines}.jsonl"
    if not path.exists():
        print(f"generating {path} ({lines:,} lines) ...", flush=True)
        generate(path, lines)
    return path


def head_bytes(src: Path, dst: Path, size: int) -> Path:
    """Copy the first ``size`` bytes of ``src`` to ``dst``, cut at a line end."""
    if not dst.exists():
        with src.open("rb") as f:
            data = f.read(size)
        dst.write_bytes(data[: data.rfind(b"\n") + 1])
    return dst


# The environment of the measured commands (see main()).
CHILD_ENV = dict(os.environ, PYTHONPATH=str(HERE.parent))


def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Run ``cmd`` in a child; return (wall seconds, peak RSS of the child in KiB, CPU
    seconds of the child and its workers, user + system: on a busy machine they vary
    less than the wall time)."""
    env = CHILD_ENV if env is None else env
    # A fresh interpreter per measurement, so RUSAGE_CHILDREN's maxrss is this run's.
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
        "dt = time.perf_counter() - t; "
        "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(dt, u.ru_maxrss, r.returncode, u.ru_utime + u.ru_stime)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"command failed with exit code {out[2]}: {cmd}")
    return float(out[0]), int(out[1]), float(out[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "trio-micro-logs")
    parser.add_argument("--no-jq", action="store_true", help="skip jq (slow)")
    parser.add_argument("--no-big", action="store_true", help="skip the ~1 GB memory run")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="compile trio_micro from source on every run (as with PYTHONDONTWRITEBYTECODE)",
    )
    parser.add_argument(
        "--before", type=Path, metavar="TREE", help="also run the summary of this checkout"
    )
    parser.add_argument(
        "--summary-args", default="", help="options of this tree's summary, e.g. '--group-by x'"
    )
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.no_bytecode_cache:
        CHILD_ENV["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(args.dir / "pycache")

    big = ensure_log(args.dir, args.lines)
    small = head_bytes(big, args.dir / f"access-{args.lines}-10MB.jsonl", 10_000_000)
    run_timed([*CLI, "logs", "summary", "--json", str(small)])  # warm-up: caches
    before_env = dict(CHILD_ENV, PYTHONPATH=str(args.before))
    if args.before is not None and "PYTHONPYCACHEPREFIX" in CHILD_ENV:
        before_env["PYTHONPYCACHEPREFIX"] = str(args.dir / "pycache-before")
    if args.before is not None:
        run_timed([*CLI, "logs", "summary", "--json", str(small)], before_env)
    with big.open("rb") as f:  # the page cache, so that no first run reads from disk
        while f.read(16 * 1024 * 1024):
            pass
    big_mb, small_mb = big.stat().st_size / 1e6, small.stat().st_size / 1e6
    jq = shutil.which("jq")
    if jq is None and not args.no_jq:
        raise SystemExit("jq not found: apt-get update && apt-get install -y jq (or --no-jq)")

    summary_cmd = [*CLI, "logs", "summary", "--json", *args.summary_args.split(), str(big)]
    before_cmd = [*CLI, "logs", "summary", "--json", str(big)]
    jq_cmd = [jq or "jq", "-n", "-c", JQ_PROGRAM, str(big)]
    times: dict[str, list[float]] = {"summary": [], "before": [], "jq": []}
    rss: dict[str, list[int]] = {"summary": [], "before": [], "jq": []}
    cpu: dict[str, list[float]] = {"summary": [], "before": [], "jq": []}
    for run in range(args.runs):
        contenders = [("summary", summary_cmd, CHILD_ENV)]
        if args.before is not None:
            contenders.append(("before", before_cmd, before_env))
        if not args.no_jq:
            contenders.append(("jq", jq_cmd, CHILD_ENV))
        # Each contender takes every place in the order in turn.
        contenders = contenders[run % len(contenders) :] + contenders[: run % len(contenders)]
        for name, cmd, env in contenders:
            dt, kib, cpu_s = run_timed(cmd, env)
            times[name].append(dt)
            rss[name].append(kib)
            cpu[name].append(cpu_s)
            print(
                f"  run {run + 1} {name}: {dt:.2f} s ({cpu_s:.2f} CPU s), "
                f"peak RSS {kib / 1024:.1f} MiB",
                flush=True,
            )
    if not args.no_jq:
        print(f"  {check_against_jq(summary_cmd, jq_cmd)}", flush=True)
    small_rss = [run_timed([*CLI, "logs", "summary", "--json", str(small)])[1] for _ in range(3)]
    big_rss: list[int] = []
    gb_mb = 0.0
    if not args.no_big:
        gb = args.dir / "access-1GB.jsonl"
        repeats = max(1, round(1e9 / big.stat().st_size))
        try:
            with gb.open("wb") as out:
                for _ in range(repeats):
                    with big.open("rb") as f:
                        shutil.copyfileobj(f, out, 16 * 1024 * 1024)
            gb_mb = gb.stat().st_size / 1e6
            big_rss = [run_timed([*CLI, "logs", "summary", "--json", str(gb)])[1]]
            big_rss.append(
                run_timed([*CLI, "logs", "summary", "--json", "--jobs", "1", str(gb)])[1]
            )
        finally:
            gb.unlink(missing_ok=True)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())

    print()
    print(
        f"Log: {args.lines:,} lines, {big_mb:.0f} MB ({big}); Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; bytecode "
        + ("compiled on every run" if args.no_bytecode_cache else "cached")
    )
    print()
    print(f"load average after: {load_after}")
    print()
    print(
        "| tool | median wall s | runs | lines/s | peak RSS MiB | speed-up vs jq "
        "| median CPU s | CPU vs jq |"
    )
    print("|---|---|---|---|---|---|---|---|")
    jq_median = statistics.median(times["jq"]) if times["jq"] else float("nan")
    jq_cpu = statistics.median(cpu["jq"]) if cpu["jq"] else float("nan")
    for name, label in (
        ("summary", "trio-micro logs summary --json (full summary)"),
        ("before", f"the same, of {args.before}"),
        ("jq", "jq -n 'reduce inputs ...' (count + mean per method only)"),
    ):
        if not times[name]:
            continue
        median = statistics.median(times[name])
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        cpu_median = statistics.median(cpu[name])
        print(
            f"| {label} | {median:.2f} | {runs} | {args.lines / median:,.0f} | "
            f"{max(rss[name]) / 1024:.1f} | {jq_median / median:.1f}x | "
            f"{cpu_median:.2f} | {jq_cpu / cpu_median:.1f}x |"
        )
    print()
    print("| input to summary | size MB | peak RSS MiB (max of runs) |")
    print("|---|---|---|")
    print(f"| {args.lines:,}-line log | {big_mb:.0f} | {max(rss['summary']) / 1024:.1f} |")
    print(f"| first 10 MB of it | {small_mb:.0f} | {max(small_rss) / 1024:.1f} |")
    if big_rss:
        print(f"| it repeated, ~1 GB (2 workers) | {gb_mb:.0f} | {big_rss[0] / 1024:.1f} |")
        print(f"| it repeated, ~1 GB (--jobs 1) | {gb_mb:.0f} | {big_rss[1] / 1024:.1f} |")


if __name__ == "__main__":
    main()
