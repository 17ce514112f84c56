"""Tiny services for ``trio-micro serve`` tests, run in a subprocess by tests/cli/test_serve.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import structlog
import trio

from trio_micro import rpc

log = structlog.get_logger("slow")


class SleepRequest(msgspec.Struct, frozen=True):
    seconds: float


class Slept(msgspec.Struct, frozen=True):
    seconds: float
    greeting: str


class SlowService(rpc.Service, name="slow"):
    """Sleeps as long as asked, logging ``slow.started`` first (so tests know it runs)."""

    def __init__(self, greeting: str = "hello") -> None:
        self.greeting = greeting

    @rpc.unary
    async def sleep(self, req: SleepRequest) -> Slept:
        log.info("slow.started", seconds=req.seconds)
        await trio.sleep(req.seconds)
        return Slept(req.seconds, self.greeting)


class OpenedService(SlowService, name="opened"):
    """Served through ``open(size=...)``, which validates its option."""

    @classmethod
    @asynccontextmanager
    async def open(cls, *, size: str = "1") -> AsyncIterator[OpenedService]:
        if not size.isdigit():
            raise ValueError(f"size must be a whole number, got {size!r}")
        yield cls(greeting="x" * int(size))


class BadOpen(rpc.Service, name="bad_open"):
    """``open()`` that does not return an async context manager."""

    @classmethod
    def open(cls) -> int:
        return 42


class YieldsNoService(rpc.Service, name="yields_no_service"):
    """``open()`` that yields something other than a service."""

    @classmethod
    @asynccontextmanager
    async def open(cls) -> AsyncIterator[int]:
        yield 42


instance = SlowService(greeting="instance")
not_a_service = SleepRequest(1.0)


class Empty(msgspec.Struct, frozen=True):
    pass


class Pid(msgspec.Struct, frozen=True):
    pid: int


class PidService(rpc.Service, name="pids"):
    """Answers with the process id: which worker of ``serve --workers`` served a call."""

    def __init__(self, fail: str = "") -> None:
        if fail:
            raise ValueError(f"asked to fail: {fail}")

    @rpc.unary(idempotent=True)
    async def whoami(self, req: Empty) -> Pid:
        import os

        return Pid(os.getpid())
