"""The rest of the system: the order-service replicas and the notifier, started after
the user service (orders call users through the registry; the notifier follows orders)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import trio

from .config import NOTIFIER, NOTIFIER_READY, ORDERS, ORDERS_SPEC, SERVE_READY, SERVICE, Config
from .processes import Child, child_env, start_child

if TYPE_CHECKING:
    from .run import Run


def say(text: str) -> None:
    print(text, flush=True)


def tls_flags(config: Config) -> list[str]:
    """The TLS flags of a ``trio-micro`` child (none without ``--tls``)."""
    return [] if config.tls is None else config.tls.service_flags()


async def start_orders_and_notifier(
    run: Run, drains: trio.Nursery, registry: Child, env: dict[str, str] | None = None
) -> None:
    """Start ``config.orders`` order-service replicas, then the notifier (if wanted).

    Each replica serves ``examples.orders:OrderService`` on 127.0.0.1 port 0, registers
    with the registry and finds users there; they share ``data/orders.db``. The notifier
    follows ``registry://REGISTRY/orders`` and keeps its cursor in ``data/notifier.cursor``.
    """
    config = run.config
    if not config.orders:
        return
    env = env if env is not None else child_env()
    python = [sys.executable, "-m", "trio_micro"]
    data = config.run_dir / "data"
    argv = [*python, "serve", ORDERS_SPEC, "--host", "127.0.0.1", "--port", "0"]
    argv += ["--registry", f"registry://{registry.address}", "--ttl", f"{config.ttl:g}"]
    argv += ["-o", f"db={data / 'orders.db'}", "-o", f"users=registry://{registry.address}/users"]
    argv += tls_flags(config)
    if config.tls is not None:  # to users and the registry, as a client
        certs = config.tls
        argv += ["-o", f"tls_ca={certs.ca}", "-o", f"tls_cert={certs.service_cert}"]
        argv += ["-o", f"tls_key={certs.service_key}"]
    async with trio.open_nursery() as nursery:
        for i in range(1, config.orders + 1):
            nursery.start_soon(
                start_child, drains, run.children, f"{ORDERS}-{i}", argv, SERVE_READY, config, env
            )
    for child in run.replicas(ORDERS):
        say(f"{child.name} serving on {child.address} (pid {child.pid}), calling {SERVICE}")
    if not config.notifier:
        return
    argv = [sys.executable, "-m", "examples.notifier"]
    argv += ["--orders", f"registry://{registry.address}/{ORDERS}"]
    argv += ["--state", str(data / "notifier.cursor")]
    # Zipf's hot users order often: the demo's pace lets it keep up (the default is 5/s).
    argv += ["--workers", "16", "--rate", "100", "--burst", "20", "--grace", "1"]
    if config.tls is not None:
        certs = config.tls
        argv += ["--tls-ca", str(certs.ca), "--tls-cert", str(certs.service_cert)]
        argv += ["--tls-key", str(certs.service_key)]
    child = await start_child(drains, run.children, NOTIFIER, argv, NOTIFIER_READY, config, env)
    say(f"{NOTIFIER} following {child.address} (pid {child.pid})")
    child.address = None  # a target, not a port of its own (see busy_ports)
