"""A CPU-bound service for benchmarks/workers_bench.py, served by ``trio-micro serve``.

``burn`` does about ``WORK_US`` microseconds of pure-Python work per call (a fixed number
of loop iterations, calibrated once on this machine by the bench and passed as ``-o
loops=N``), so a worker process is CPU-bound and a second core can help.
"""

from __future__ import annotations

import os

import msgspec

from trio_micro import rpc


class Burn(msgspec.Struct):
    n: int


class Burned(msgspec.Struct):
    pid: int
    value: int


def spin(loops: int) -> int:
    """The work itself: pure Python, no allocation to speak of."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


class CpuService(rpc.Service, name="cpu"):
    def __init__(self, loops: str = "2000") -> None:
        self.loops = int(loops)

    @rpc.unary(idempotent=True)
    async def burn(self, req: Burn) -> Burned:
        return Burned(os.getpid(), spin(self.loops) + req.n)
