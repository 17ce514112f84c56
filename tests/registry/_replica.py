"""A replica in its own process, for the tests that SIGKILL one.

Usage: python -m tests.registry._replica REGISTRY SERVICE NAME TTL. Serves
``ReplicaService(NAME)`` on 127.0.0.1 (a free port), registers it with the registry
server at REGISTRY, prints "ready <address>" and runs until killed.
"""

from __future__ import annotations

import sys

import trio

from tests.rpc.replicas import ReplicaService, address
from trio_micro import rpc
from trio_micro.registry import open_registry_client


async def main(registry: str, service: str, name: str, ttl: str) -> None:
    async with (
        rpc.open_server([ReplicaService(name)], host="127.0.0.1", port=0) as server,
        open_registry_client(registry) as client,
        client.register(service, address(server), ttl=float(ttl)),
    ):
        print("ready", address(server), flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    registry, service, name, ttl = sys.argv[1:5]
    trio.run(main, registry, service, name, ttl)
