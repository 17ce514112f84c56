"""A replica in its own process, for the test that kills one with SIGKILL.

Usage: python _registrant.py URL PREFIX SERVICE ADDRESS TTL. Prints "registered" once the
key is in etcd, then keeps the lease alive until killed.
"""

from __future__ import annotations

import sys

import trio

from trio_micro.registry import EtcdRegistry


async def main(url: str, prefix: str, service: str, address: str, ttl: str) -> None:
    async with (
        EtcdRegistry(url, prefix=prefix) as registry,
        registry.register(service, address, ttl=float(ttl)),
    ):
        print("registered", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:6])
