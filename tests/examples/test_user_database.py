from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
import trio

from examples.user_service.database import UserDatabase, UserRow


async def test_schema_is_created_on_first_open_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "data" / "users.db"
    async with UserDatabase(path) as db:
        assert await db.count() == 0
    # sqlite3's own context manager commits but does not close (3.13 warns of that).
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


async def test_seed_loads_n_users_with_ids_1_to_n(tmp_path: Path) -> None:
    async with UserDatabase(tmp_path / "users.db") as db:
        assert await db.seed(500) == 500
        assert await db.count() == 500
        first = await db.get_user(1)
        last = await db.get_user(500)
        assert first is not None
        assert last is not None
        assert last.email == "user500@example.com"
        assert await db.get_user(501) is None


async def test_create_update_and_get_round_trip(tmp_path: Path) -> None:
    async with UserDatabase(tmp_path / "users.db") as db:
        created = await db.create_user("Ada", "ada@example.com")
        assert await db.get_user(created.user_id) == created
        updated = await db.update_user(created.user_id, "Ada L.", "ada@l.org")
        assert updated == UserRow(created.user_id, "Ada L.", "ada@l.org")
        assert await db.get_user(created.user_id) == updated
        assert await db.update_user(created.user_id + 1, "x", "x@y.z") is None


async def test_list_users_pages_in_id_order(tmp_path: Path) -> None:
    async with UserDatabase(tmp_path / "users.db") as db:
        await db.seed(25)
        seen: list[int] = []
        after = 0
        while page := await db.list_users(after_id=after, limit=10):
            seen.extend(row.user_id for row in page)
            after = page[-1].user_id
        assert seen == list(range(1, 26))


async def test_concurrent_reads_use_at_most_the_thread_limit(tmp_path: Path) -> None:
    async with UserDatabase(tmp_path / "users.db", threads=2) as db:
        await db.seed(50)
        async with trio.open_nursery() as nursery:
            for i in range(1, 51):
                nursery.start_soon(db.get_user, i)
        stats = db.statistics()
        assert stats.reads == 50
        assert stats.writes == 1
        assert stats.queries == 51


async def test_two_pools_share_one_file_like_replicas(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    async with UserDatabase(path) as writer, UserDatabase(path) as reader:
        row = await writer.create_user("Grace", "grace@example.com")
        assert await reader.get_user(row.user_id) == row


async def test_use_after_close_raises_closed_resource_error(tmp_path: Path) -> None:
    async with UserDatabase(tmp_path / "users.db") as db:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await db.get_user(1)


@pytest.mark.parametrize("threads", [0, -1, True, 1.5])
def test_bad_thread_count_is_rejected(tmp_path: Path, threads: object) -> None:
    with pytest.raises(ValueError, match="threads"):
        UserDatabase(tmp_path / "users.db", threads=threads)  # type: ignore[arg-type]
