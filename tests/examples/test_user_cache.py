from __future__ import annotations

import pytest
import trio
import trio.testing

from examples.user_service.cache import TTLCache


class CountingLoader:
    def __init__(self, *, delay: float = 1.0) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.version = 0

    async def __call__(self, key: int) -> str:
        self.calls.append(key)
        version = self.version
        await trio.sleep(self.delay)
        return f"user-{key}-v{version}"


async def test_hit_after_load_does_not_call_loader(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[int, str] = TTLCache(max_size=10, ttl=60)
    loader = CountingLoader()
    assert await cache.get_or_load(1, loader) == ("user-1-v0", False)
    assert await cache.get_or_load(1, loader) == ("user-1-v0", True)
    assert loader.calls == [1]
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.loads) == (1, 1, 1)
    assert stats.hit_ratio == 0.5


async def test_100_concurrent_misses_for_one_key_load_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TTLCache[int, str] = TTLCache(max_size=10, ttl=60)
    loader = CountingLoader()
    results: list[tuple[str, bool]] = []

    async def get() -> None:
        results.append(await cache.get_or_load(7, loader))

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(get)
    assert loader.calls == [7]
    assert results == [("user-7-v0", False)] * 100


async def test_article_workload_100_requests_over_10_ids_cause_10_loads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TTLCache[int, str] = TTLCache(max_size=100, ttl=60)
    loader = CountingLoader()
    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(cache.get_or_load, i % 10, loader)
    assert sorted(loader.calls) == list(range(10))


async def test_entry_expires_after_ttl(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[int, str] = TTLCache(max_size=10, ttl=5)
    loader = CountingLoader(delay=0)
    await cache.get_or_load(1, loader)
    await trio.sleep(4.9)
    assert (await cache.get_or_load(1, loader))[1] is True
    await trio.sleep(0.2)
    assert (await cache.get_or_load(1, loader))[1] is False
    assert cache.statistics().expirations == 1
    assert loader.calls == [1, 1]


async def test_size_bound_evicts_least_recently_used(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TTLCache[int, str] = TTLCache(max_size=2, ttl=60)
    loader = CountingLoader(delay=0)
    await cache.get_or_load(1, loader)
    await cache.get_or_load(2, loader)
    await cache.get_or_load(1, loader)  # 1 is now the most recently used
    await cache.get_or_load(3, loader)  # evicts 2
    assert (await cache.get_or_load(1, loader))[1] is True
    assert (await cache.get_or_load(2, loader))[1] is False
    stats = cache.statistics()
    assert stats.size == 2
    assert stats.evictions == 2


async def test_invalidate_during_load_does_not_cache_stale_value(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TTLCache[int, str] = TTLCache(max_size=10, ttl=60)
    loader = CountingLoader(delay=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.get_or_load, 1, loader)
        await trio.testing.wait_all_tasks_blocked()
        loader.version = 1  # the "update" happens while the old value is being loaded
        cache.invalidate(1)
    value, hit = await cache.get_or_load(1, loader)
    assert (value, hit) == ("user-1-v1", False)
    assert loader.calls == [1, 1]


async def test_cancelled_loader_leader_hands_over_to_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TTLCache[int, str] = TTLCache(max_size=10, ttl=60)
    loader = CountingLoader(delay=1)
    got: list[tuple[str, bool]] = []

    async def follower() -> None:
        got.append(await cache.get_or_load(1, loader))

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(0.5):
            nursery.start_soon(follower)
            await cache.get_or_load(1, loader)  # the leader, cancelled at 0.5 s
    assert got == [("user-1-v0", False)]
    assert loader.calls == [1, 1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_size": 0, "ttl": 1}, "max_size"),
        ({"max_size": True, "ttl": 1}, "max_size"),
        ({"max_size": 1, "ttl": 0}, "ttl"),
        ({"max_size": 1, "ttl": "1"}, "ttl"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TTLCache(**kwargs)  # type: ignore[arg-type]
