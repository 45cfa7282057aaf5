"""The database layer on SQLite and PostgreSQL: migrations, offsets; private SQLite files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from consumers.store import Database, normalize_url, sqlite_url
from consumers.store.tables import metadata
from planr.errors import StoreError
from tests.test_store_helpers import BACKENDS, store_url


@pytest.fixture(params=BACKENDS)
async def url(request, tmp_path):
    async with store_url(request.param, tmp_path) as u:
        yield u


async def test_migrations_create_exactly_the_models(url):
    async with Database(url) as db:
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), metadata))
        assert diff == []
    async with Database(url) as db:  # a second start is a no-op upgrade
        assert await db.load_offsets("nobody") == {}


async def test_offsets_never_move_backwards(url):
    async with Database(url) as db:
        async with db.transaction() as conn:
            await db.save_offsets(conn, "c", {("t", 0): 10, ("t", 1): 3})
        async with db.transaction() as conn:
            await db.save_offsets(conn, "c", {("t", 0): 7, ("t", 1): 4})
        assert await db.load_offsets("c") == {("t", 0): 10, ("t", 1): 4}


async def test_a_failed_transaction_stores_no_offsets(url):
    async with Database(url) as db:
        async def crash() -> None:
            async with db.transaction() as conn:
                await db.save_offsets(conn, "c", {("t", 0): 5})
                raise RuntimeError("crash before commit")

        with pytest.raises(RuntimeError):
            await crash()
        assert await db.load_offsets("c") == {}


def test_plain_urls_get_the_async_driver():
    assert normalize_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalize_url("sqlite:////x/y.db") == "sqlite+aiosqlite:////x/y.db"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sqlite_store_files_are_private(tmp_path):
    data = tmp_path / "data"
    async with Database(sqlite_url(data, "ftf.db")) as db, db.transaction() as conn:
        await conn.execute(text("SELECT 1"))
    assert _mode(data) == 0o700
    for name in ("ftf.db", "ftf.db-wal", "ftf.db-shm"):
        if (data / name).exists():
            assert _mode(data / name) == 0o600, name
    assert _mode(data / "ftf.db") == 0o600


async def test_an_own_open_data_directory_is_tightened(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    async with Database(sqlite_url(data, "inboxes.db")):
        pass
    assert _mode(data) == 0o700


async def test_a_shared_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    with pytest.raises(StoreError, match="open to other users"):
        async with Database(sqlite_url(shared, "ftf.db")):
            pass
    assert not (shared / "ftf.db").exists()
    assert _mode(shared) == 0o1777
