"""/debug/profile (pyinstrument) and /debug/heap (tracemalloc), over real HTTP."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import msgspec
import pytest
import trio
from structlog.testing import capture_logs
from structlog.typing import EventDict

from trio_micro import observe, rpc, testing
from trio_micro.observe import _profile


class Empty(msgspec.Struct):
    pass


class Busy(rpc.Service, name="busy"):
    @rpc.unary
    async def crunch_numbers(self, req: Empty) -> Empty:
        # A little pure-Python work: a small share of the profile (the client's work and
        # the RPC machinery take most), which the profile must still show.
        total = 0
        for i in range(200):
            total += i * i
        return Empty()


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[EventDict]]:
    with capture_logs() as captured:
        yield captured


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with (
        observe.open_debug_server() as debug,
        httpx.AsyncClient(base_url=debug.url, timeout=30) as client,
    ):
        yield client


@pytest.mark.parametrize("seconds", ["-1", "0", "61", "1e9", "abc", "nan", "inf", ""])
async def test_a_bad_seconds_is_refused_with_400(client: httpx.AsyncClient, seconds: str) -> None:
    response = await client.get("/debug/profile", params={"seconds": seconds})
    assert response.status_code == 400
    assert "seconds must be a number in (0, 60]" in response.text


async def test_an_unknown_format_is_refused_with_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/debug/profile", params={"seconds": "1", "format": "pprof"})
    assert response.status_code == 400
    assert "format must be one of html, speedscope" in response.text


async def test_without_pyinstrument_the_page_says_what_to_install(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyinstrument", None)  # import now raises ImportError
    response = await client.get("/debug/profile", params={"seconds": "0.1"})
    assert response.status_code == 501
    assert "pip install 'trio-micro[profile]'" in response.text


async def test_a_second_profile_while_one_runs_gets_409(client: httpx.AsyncClient) -> None:
    first: list[httpx.Response] = []

    async def profile() -> None:
        first.append(await client.get("/debug/profile", params={"seconds": "0.5"}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(profile)
        with trio.fail_after(10):  # real time: the profiler samples the real thread
            while _profile._gate.ends_at is None:  # noqa: ASYNC110 (no event to wait on)
                await trio.sleep(0.01)
        second = await client.get("/debug/profile", params={"seconds": "0.1"})
    assert second.status_code == 409
    assert "already running (one at a time)" in second.text
    assert first[0].status_code == 200
    assert first[0].headers["content-type"].startswith("text/html")


async def test_a_profile_under_load_names_the_handler(client: httpx.AsyncClient) -> None:
    async with testing.open_service([Busy()], access_log=False) as harness:
        busy = harness.stub(Busy)
        async with trio.open_nursery() as nursery:

            async def load() -> None:
                while True:
                    await busy.crunch_numbers(Empty())

            for _ in range(4):
                nursery.start_soon(load)
            response = await client.get(
                "/debug/profile", params={"seconds": "0.5", "format": "speedscope"}
            )
            nursery.cancel_scope.cancel()
    assert response.status_code == 200
    frames = json.loads(response.content)["shared"]["frames"]
    assert "crunch_numbers" in {frame["name"] for frame in frames}


async def test_heap_needs_tracemalloc(client: httpx.AsyncClient) -> None:
    response = await client.get("/debug/heap")
    assert response.status_code == 409
    assert "PYTHONTRACEMALLOC=1" in response.text


@pytest.mark.usefixtures("tracing")
async def test_heap_shows_the_growth_since_the_baseline(client: httpx.AsyncClient) -> None:
    first = await client.get("/debug/heap", params={"baseline": "1"})
    assert first.status_code == 200
    assert "no baseline" in first.text
    hoard = [bytearray(1000) for _ in range(1000)]  # the site that grows
    response = await client.get("/debug/heap", params={"top": "5"})
    changes = response.text.split("changes since the baseline:")[1]
    assert "test_debug_profile.py" in changes.splitlines()[1]  # the largest change
    assert len(hoard) == 1000


@pytest.mark.parametrize("query", [{"baseline": "2"}, {"top": "-1"}, {"top": "x"}])
@pytest.mark.usefixtures("tracing")
async def test_heap_refuses_bad_parameters(
    client: httpx.AsyncClient, query: dict[str, str]
) -> None:
    response = await client.get("/debug/heap", params=query)
    assert response.status_code == 400
