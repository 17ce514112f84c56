"""Registry server: ``register`` latency with many live leases, before and after the heap.

::

    .venv/bin/python benchmarks/registry_bench.py --base /tmp/registry-base   # ~1 min
    .venv/bin/python benchmarks/registry_bench.py --rounds 1 --leases 1000    # a smoke run

Issue #15 (defect 4): every ``register`` swept all leases for expired ones (O(n)), so with
42,000 never-expiring leases each took milliseconds. Now expiry pops a heap keyed by
expiry (O(log n) per expired lease). The load: one ``RegistryService`` in-process (no
sockets, so only the registry's own work is timed), ``--leases`` leases of TTL 300 s (the
cap) over 1,000 services registered first, then ``--calls`` registrations of new
addresses, each timed with ``time.perf_counter``; then the same number of ``keep_alive``
calls. A contender is a source tree holding ``trio_micro``: this one, and ``--base``, e.g.
the branch point, extracted with ``git archive <commit> trio_micro | tar -x -C DIR``.
Each round runs every contender in a fresh subprocess, interleaved; the table shows the
medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def worker(leases: int, calls: int) -> dict[str, float]:
    """Run in a subprocess whose ``sys.path`` starts with the contender's tree."""
    import msgspec
    import structlog
    import trio

    from trio_micro.registry import RegistryService

    # The wire messages' shapes (the service's own types are private to the registry).
    class RegisterRequest(msgspec.Struct):
        service: str
        address: str
        ttl: float
        metadata: dict[str, str] = {}

    class LeaseRequest(msgspec.Struct):
        lease_id: int

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))

    async def main() -> dict[str, float]:
        service = RegistryService()
        # Filling: spread over 1,000 services (the base's per-service scan stays short)
        # and, in the base, without its sweep of all leases per register (quadratic: it
        # would take minutes). The timed registrations below run the real code.
        sweep = getattr(service, "_sweep", None)
        if sweep is not None:
            service._sweep = lambda: None  # type: ignore[attr-defined]
        for i in range(leases):
            address = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}:1"
            request: Any = RegisterRequest(f"filler{i % 1000}", address, 300.0)
            await service.register(request)
        if sweep is not None:
            service._sweep = sweep  # type: ignore[attr-defined]
        register: list[float] = []
        grants = []
        for i in range(calls):
            request = RegisterRequest("users", f"10.200.{i >> 8}.{i & 255}:1", 300.0)
            start = time.perf_counter()
            grants.append(await service.register(request))
            register.append(time.perf_counter() - start)
        keep_alive: list[float] = []
        for grant in grants:
            start = time.perf_counter()
            lease: Any = LeaseRequest(grant.lease_id)
            await service.keep_alive(lease)
            keep_alive.append(time.perf_counter() - start)
        register.sort()
        keep_alive.sort()
        return {
            "register_median_us": statistics.median(register) * 1e6,
            "register_p99_us": register[int(len(register) * 0.99)] * 1e6,
            "keep_alive_median_us": statistics.median(keep_alive) * 1e6,
        }

    return trio.run(main)


def run_one(tree: Path, leases: int, calls: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", "--leases", str(leases), "--calls", str(calls)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leases", type=int, default=42_000)
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base", type=Path, help="a source tree to compare (the branch point)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.leases, args.calls)))
        return
    contenders = {"this tree": HERE}
    if args.base is not None:
        contenders = {"base": args.base, **contenders}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, tree in contenders.items():
            results[name].append(run_one(tree, args.leases, args.calls))
    print(f"{args.leases} live leases, {args.calls} calls, median of {args.rounds} rounds")
    print(
        f"{'contender':<12} {'register median':>16} {'register p99':>13} {'keep_alive median':>18}"
    )
    for name, runs in results.items():
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(
            f"{name:<12} {med['register_median_us']:>13.1f} us {med['register_p99_us']:>10.1f} us"
            f" {med['keep_alive_median_us']:>15.1f} us"
        )


if __name__ == "__main__":
    main()
