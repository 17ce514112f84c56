"""Hedged calls (``rpc.hedged``): the first answer wins, the loser is cancelled on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import pytest
import trio

from trio_micro import rpc

from .conftest import address


class Request(msgspec.Struct):
    value: int


class Answer(msgspec.Struct):
    value: int
    attempt: int


class StuckFirst(rpc.Service, name="hedging.stuck_first"):
    """The first call of each method hangs until cancelled; later calls answer at once."""

    __test__ = False

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = trio.Event()

    async def _answer(self, req: Request) -> Answer:
        self.calls += 1
        attempt = self.calls
        if attempt == 1:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                self.cancelled.set()
                raise
        return Answer(req.value, attempt)

    @rpc.unary(idempotent=True)
    async def lookup(self, req: Request) -> Answer:
        return await self._answer(req)

    @rpc.unary
    async def write(self, req: Request) -> Answer:
        return await self._answer(req)


@pytest.fixture
def service() -> StuckFirst:
    return StuckFirst()


@pytest.fixture
async def stub(service: StuckFirst) -> AsyncIterator[StuckFirst]:
    async with (
        rpc.open_server([service], host="127.0.0.1", port=0) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        yield channel.stub(StuckFirst)


async def test_the_second_attempt_answers_and_the_first_is_cancelled_on_the_wire(
    service: StuckFirst, stub: StuckFirst
) -> None:
    with trio.fail_after(5):
        answer = await rpc.hedged(stub.lookup, Request(7), delay=0.01)
        assert answer == Answer(7, 2)
        await service.cancelled.wait()  # the server's handler of attempt 1 saw CANCEL
    assert service.calls == 2


async def test_a_fast_first_answer_sends_no_second_attempt(
    service: StuckFirst, stub: StuckFirst
) -> None:
    service.calls = 1  # the next call is not the stuck one
    with trio.fail_after(5):
        assert await rpc.hedged(stub.lookup, Request(1), delay=1.0) == Answer(1, 2)
    assert service.calls == 2


async def test_one_attempt_is_a_plain_call(service: StuckFirst, stub: StuckFirst) -> None:
    with trio.move_on_after(0.05) as scope:
        await rpc.hedged(stub.lookup, Request(1), delay=0.0, attempts=1)
    assert scope.cancelled_caught
    assert service.calls == 1


async def test_a_method_that_is_not_idempotent_is_refused(
    service: StuckFirst, stub: StuckFirst
) -> None:
    with pytest.raises(ValueError, match="not idempotent"):
        await rpc.hedged(stub.write, Request(1), delay=0.01)
    assert service.calls == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"delay": -1.0}, ValueError),
        ({"delay": float("inf")}, ValueError),
        ({"delay": "0.1"}, TypeError),
        ({"delay": 0.1, "attempts": 0}, ValueError),
        ({"delay": 0.1, "attempts": 9}, ValueError),
        ({"delay": 0.1, "attempts": 2.0}, TypeError),
    ],
)
async def test_bad_arguments_are_refused_before_any_call(
    service: StuckFirst, stub: StuckFirst, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await rpc.hedged(stub.lookup, Request(1), **kwargs)
    assert service.calls == 0


async def test_fn_must_be_callable() -> None:
    with pytest.raises(TypeError, match="fn"):
        await rpc.hedged("users/get_user", delay=0.1)  # type: ignore[arg-type]


class Hangs(rpc.Service, name="hedging.replica"):
    """Never answers (``answers=False``) or answers at once, naming itself."""

    __test__ = False

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.calls = 0

    @rpc.unary(idempotent=True)
    async def lookup(self, req: Request) -> Answer:
        self.calls += 1
        if not self.answers:
            await trio.sleep_forever()
        return Answer(req.value, self.calls)


class Prefer:
    """A balancer that always picks ``endpoint`` when it is among the candidates."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def pick(self, ready: Sequence[rpc.Subchannel]) -> int:
        for index, subchannel in enumerate(ready):
            if str(subchannel.endpoint) == self.endpoint:
                return index
        return 0


async def test_the_second_attempt_avoids_the_endpoint_of_the_first() -> None:
    stuck, good = Hangs(answers=False), Hangs(answers=True)
    async with (
        rpc.open_server([stuck], host="127.0.0.1", port=0) as stuck_server,
        rpc.open_server([good], host="127.0.0.1", port=0) as good_server,
        rpc.open_channel(
            [address(stuck_server), address(good_server)], balancer=Prefer(address(stuck_server))
        ) as channel,
    ):
        stub = channel.stub(Hangs)
        while channel.statistics().ready < 2:  # noqa: ASYNC110 - no event for it
            await trio.sleep(0.001)
        with trio.fail_after(5):
            assert await rpc.hedged(stub.lookup, Request(3), delay=0.01) == Answer(3, 1)
    assert (stuck.calls, good.calls) == (1, 1)
