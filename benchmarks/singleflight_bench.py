"""Single-flight in the user cache: database queries for the article's workload (issue #5).

::

    .venv/bin/python benchmarks/singleflight_bench.py             # 20 rounds each (about 2 s)
    .venv/bin/python benchmarks/singleflight_bench.py --rounds 1  # a smoke run

The workload of the article: 100 concurrent ``GetUser`` requests over 10 user ids against a
cold cache. Each round starts a fresh service (empty cache) over RPC on 127.0.0.1, in front
of a real SQLite database (WAL, 4 worker threads, 1,000 seeded users, in a temporary
directory), fires the 100 calls at once through one channel and counts the queries that
reached the database (``UserDatabase.statistics().reads``). Two caches:

* ``TTLCache`` (single-flight): the example service as it ships; concurrent misses for one
  id share one load, so the expected count is 10.
* the article's naive cache: look the id up in a dict; on a miss query the database and
  store the row. Every request that misses before the first load of its id has stored a
  row queries the database itself, so the count approaches 100.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

from examples.user_service.cache import TTLCache
from examples.user_service.database import UserDatabase, UserRow
from examples.user_service.service import GetUserRequest, User, UserService
from trio_micro import observe, rpc

_MISSING: Any = object()


class NaiveCacheUserService(rpc.Service, name="users"):
    """The article's ``GetUser``: check the map, on a miss query the database and store.

    No coalescing: concurrent misses for one id each query the database.
    """

    def __init__(self, db: UserDatabase) -> None:
        self.db = db
        self.users: dict[int, UserRow | None] = {}

    @rpc.unary(idempotent=True)
    async def get_user(self, req: GetUserRequest) -> User:
        row = self.users.get(req.user_id, _MISSING)
        source = "cache"
        if row is _MISSING:
            row = await self.db.get_user(req.user_id)
            self.users[req.user_id] = row
            source = "database"
        if row is None:
            raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no user with user_id={req.user_id}")
        return User(user_id=row.user_id, name=row.name, email=row.email, source=source)


def single_flight(db: UserDatabase) -> rpc.Service:
    return UserService(db, TTLCache(max_size=10_000, ttl=30))


CACHES: dict[str, Callable[[UserDatabase], rpc.Service]] = {
    "TTLCache (single-flight)": single_flight,
    "naive cache (the article's)": NaiveCacheUserService,
}


async def one_round(
    path: Path, make: Callable[[UserDatabase], rpc.Service], *, requests: int, ids: int
) -> tuple[int, float, int]:
    """Return (database queries, seconds for the burst, replies from the database)."""
    async with UserDatabase(path, threads=4) as db:
        service = make(db)
        async with (
            rpc.open_server([service], host="127.0.0.1", port=0) as server,
            rpc.open_channel(f"127.0.0.1:{server.address[1]}") as channel,
        ):
            users = channel.stub(UserService)
            await channel.call("trio_micro.reflection/list_services", {})  # connect first
            before = db.statistics().reads
            sources: list[str] = []

            async def get(user_id: int) -> None:
                sources.append((await users.get_user(GetUserRequest(user_id=user_id))).source)

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for i in range(requests):
                    nursery.start_soon(get, i % ids + 1)
            elapsed = time.perf_counter() - start
            return db.statistics().reads - before, elapsed, sources.count("database")


async def run(rounds: int, requests: int, ids: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "users.db"
        async with UserDatabase(path) as db:
            await db.seed(1000)
        results: dict[str, list[tuple[int, float, int]]] = {name: [] for name in CACHES}
        for _ in range(rounds):  # interleaved, so both see the same machine load
            for name, make in CACHES.items():
                results[name].append(await one_round(path, make, requests=requests, ids=ids))
    print(f"{requests} concurrent GetUser over {ids} ids, cold cache, {rounds} rounds each")
    print(
        "| cache | DB queries (median) | min-max | replies with source='database' "
        "| burst ms (median) |"
    )
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        queries = [q for q, _, _ in rows]
        print(
            f"| {name} | {statistics.median(queries):g} | {min(queries)}-{max(queries)} "
            f"| {statistics.median(d for _, _, d in rows):g} "
            f"| {statistics.median(t for _, t, _ in rows) * 1000:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--ids", type=int, default=10)
    args = parser.parse_args()
    observe.configure_logging(format="console", level="warning")
    structlog.contextvars.clear_contextvars()
    trio.run(run, args.rounds, args.requests, args.ids)


if __name__ == "__main__":
    main()
