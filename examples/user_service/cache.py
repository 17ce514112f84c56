"""A TTL + LRU cache in front of a loader, with request coalescing.

Theory of operation
-------------------
Entries live in an ``OrderedDict`` in least-recently-used order, each with the trio
time at which it expires. A lookup that finds a fresh entry is a *hit*. Otherwise the
value is loaded through a :class:`trio_micro.SingleFlight`, so concurrent misses for the
same key cause **one** load (the article's ``sync.Map`` cache causes one per request):
the first caller loads, the others wait for its result.

Invalidation races: each load registers a token for its key; :meth:`TTLCache.invalidate`
drops the token and makes the single-flight forget the key. A load that started before
the invalidation still returns its value to its own callers but, finding its token
gone, does not store it, so a stale value is never cached after an update. Tokens exist
only while loads run, so memory stays bounded by ``max_size`` plus the loads in flight.
The size bound evicts the least recently used entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio

from trio_micro import SingleFlight

__all__ = ["CacheStatistics", "TTLCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """Counters of a :class:`TTLCache`."""

    hits: int
    misses: int
    loads: int
    evictions: int
    expirations: int
    size: int
    max_size: int

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups (0.0 before any lookup)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class TTLCache(Generic[K, V]):
    """Cache values for ``ttl`` seconds of trio time, at most ``max_size`` of them."""

    def __init__(self, *, max_size: int, ttl: float) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be an int >= 1, got {max_size!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise ValueError(f"ttl must be a number of seconds > 0, got {ttl!r}")
        self.max_size = max_size
        self.ttl = float(ttl)
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._loading: dict[K, object] = {}
        self._flights: SingleFlight[K, tuple[V, bool]] = SingleFlight()
        self._hits = self._misses = self._loads = self._evictions = self._expirations = 0

    async def get_or_load(self, key: K, loader: Callable[[K], Awaitable[V]]) -> tuple[V, bool]:
        """Return ``(value, hit)``: the cached value, or ``await loader(key)`` on a miss.

        Concurrent misses for one key share one ``loader`` call. A checkpoint on a miss;
        a hit does not wait. Cancellation: a cancelled caller stops waiting; if it was
        the one loading, another waiter takes over the load (see ``SingleFlight``).
        """
        value, hit = self._lookup(key)
        if not hit:
            value, hit = await self._flights.call(key, self._load, key, loader)
        if hit:
            self._hits += 1
        else:
            self._misses += 1
        return value, hit

    def _lookup(self, key: K) -> tuple[Any, bool]:
        entry = self._entries.get(key)
        if entry is None:
            return None, False
        value, expires_at = entry
        if trio.current_time() >= expires_at:
            del self._entries[key]
            self._expirations += 1
            return None, False
        self._entries.move_to_end(key)
        return value, True

    async def _load(self, key: K, loader: Callable[[K], Awaitable[V]]) -> tuple[V, bool]:
        # SingleFlight.call checkpoints before it looks for a flight, so the flight that
        # was running when our caller missed may have filled the cache meanwhile.
        cached, hit = self._lookup(key)
        if hit:
            return cached, True
        token = self._loading[key] = object()
        self._loads += 1
        try:
            value = await loader(key)
        finally:
            still_valid = self._loading.get(key) is token
            if still_valid:
                del self._loading[key]
        if still_valid:
            self._store(key, value)
        return value, False

    def _store(self, key: K, value: V) -> None:
        self._entries[key] = (value, trio.current_time() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
            self._evictions += 1

    def invalidate(self, key: K) -> None:
        """Drop ``key``: the next lookup loads it again. Not a checkpoint."""
        self._entries.pop(key, None)
        self._loading.pop(key, None)
        self._flights.forget(key)

    def statistics(self) -> CacheStatistics:
        """Return the counters. Not a checkpoint."""
        return CacheStatistics(
            hits=self._hits,
            misses=self._misses,
            loads=self._loads,
            evictions=self._evictions,
            expirations=self._expirations,
            size=len(self._entries),
            max_size=self.max_size,
        )
