"""``Database.run``: a unit of work on a synchronous connection, on SQLite in one hop to a thread
of its own. Whole or nothing, its lock waits outside the event loop, its thread closed with
the store."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import Connection, insert, select

from consumers.store import Database
from consumers.store.tables import consumer_offsets
from planr.errors import StoreError
from tests.test_store_helpers import BACKENDS, store_url


@pytest.fixture(params=BACKENDS)
async def url(request, tmp_path):
    async with store_url(request.param, tmp_path) as u:
        yield u


def _add(partition: int):
    def unit(conn: Connection) -> str:
        conn.execute(insert(consumer_offsets), [
            {"consumer": "u", "topic": "t", "partition": partition, "next_offset": 1}])
        return threading.current_thread().name
    return unit


def _fail_after_adding(conn: Connection) -> None:
    _add(7)(conn)
    raise LookupError("unit failed after its first write")


async def _stored(db: Database) -> set[int]:
    # read through the async engine: not the path under test
    async with db.engine.connect() as conn:
        rows = await conn.execute(select(consumer_offsets.c.partition))
        return {r[0] for r in rows}


async def test_a_write_unit_commits_as_a_whole_or_not_at_all(url):
    async with Database(url) as db:
        await db.run(_add(1), write=True)
        with pytest.raises(LookupError):
            await db.run(_fail_after_adding, write=True)
        assert await _stored(db) == {1}

        def read(conn: Connection) -> list[int]:
            return [r[0] for r in conn.execute(select(consumer_offsets.c.partition))]

        assert await db.run(read) == [1]


async def test_on_sqlite_a_unit_waits_for_the_write_lock_off_the_event_loop(tmp_path):
    async with store_url("sqlite", tmp_path) as url, Database(url) as db:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            async with db.transaction():  # another writer holds the lock
                unit = asyncio.create_task(db.run(_add(2), write=True))
                await asyncio.sleep(0.5)
                assert not unit.done()  # waiting for the lock...
                assert ticks >= 10  # ...while the event loop goes on
            thread = await asyncio.wait_for(unit, 30)
        finally:
            ticker.cancel()
        assert thread != threading.current_thread().name
        assert await _stored(db) == {2}


async def test_a_unit_on_a_stopped_store_is_refused(url):
    db = Database(url)
    with pytest.raises(StoreError, match="not started"):
        await db.run(_add(4), write=True)
    async with db:
        await db.run(_add(4), write=True)
    with pytest.raises(StoreError, match="not started"):
        await db.run(_add(5), write=True)
    with pytest.raises(StoreError, match="not started"):  # a read as well
        await db.run(lambda conn: conn.execute(select(consumer_offsets)).all())
    async with Database(url) as again:
        assert await _stored(again) == {4}


async def test_stopping_the_store_ends_its_sqlite_thread(tmp_path):
    def sqlite_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("planr-sqlite")]

    before = sqlite_threads()
    async with store_url("sqlite", tmp_path) as url, Database(url) as db:
        await db.run(_add(3), write=True)
        assert len(sqlite_threads()) == len(before) + 1
    assert sqlite_threads() == before
