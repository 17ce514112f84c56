"""A service that says which replica answered, for balancing, ejection and retry tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import trio

from trio_micro import rpc


class Empty(msgspec.Struct):
    pass


class Name(msgspec.Struct):
    name: str


class ReplicaService(rpc.Service, name="replica"):
    """Counts calls; can be made slow (``delay`` seconds) or failing (``UNAVAILABLE``)."""

    __test__ = False

    def __init__(
        self,
        name: str = "",
        *,
        delay: float = 0.0,
        failing: bool = False,
        succeed_every: int = 0,
        status: rpc.Status = rpc.Status.UNAVAILABLE,
    ) -> None:
        self.name = name
        self.delay = delay
        self.failing = failing
        self.succeed_every = succeed_every  # failing, except every n-th call
        self.status = status  # what a failing call raises
        self.calls = 0

    async def _answer(self) -> Name:
        self.calls += 1
        if self.delay:
            await trio.sleep(self.delay)
        if self.failing and not (self.succeed_every and self.calls % self.succeed_every == 0):
            raise rpc.RpcError(self.status, f"replica {self.name} is overloaded")
        return Name(self.name)

    @rpc.unary(idempotent=True)
    async def whoami(self, req: Empty) -> Name:
        """Idempotent: the channel may retry it."""
        return await self._answer()

    @rpc.unary
    async def write(self, req: Empty) -> Name:
        """Not idempotent: never retried after it reached a server."""
        return await self._answer()


def address(server: rpc.Server) -> str:
    host, port = server.address[:2]
    return f"{host}:{port}"


async def wait_until(predicate: Callable[[], bool], *, poll: float = 0.001) -> None:
    """Wait until ``predicate()`` is true: channel state has no event to wait on."""
    while not predicate():  # noqa: ASYNC110 - polling a condition owned by other tasks
        await trio.sleep(poll)


async def count_errors(
    method: Callable[[Empty], Awaitable[Name]], calls: int, code: rpc.Status
) -> int:
    """Call ``method`` ``calls`` times in turn; return how many failed (all with ``code``)."""
    codes = []
    for _ in range(calls):
        try:
            await method(Empty())
        except rpc.RpcError as exc:
            codes.append(exc.code)
    assert set(codes) <= {code}
    return len(codes)
