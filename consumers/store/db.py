"""One async database layer for SQLite (default) and PostgreSQL, with migrations.

``Database(url)`` opens an SQLAlchemy async engine (aiosqlite or asyncpg) and, on
``start()``, upgrades the schema to the newest migration (Alembic). SQLite runs in WAL mode
with ``BEGIN IMMEDIATE`` transactions, so that several processes (the projector, the inbox
service, a consultation) can share one file without lock-upgrade deadlocks. A small unit of
work (the router's ledger: a batch's reads, then its writes) runs in one hop to a thread of its
own with the synchronous driver (:meth:`Database.run`, :mod:`consumers.store.inthread`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, any_, func, literal, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from consumers.store.bulk import BulkStatement
from consumers.store.inthread import BUSY_TIMEOUT, SqliteThread, T, sqlite_pragmas
from consumers.store.tables import consumer_offsets
from planr.errors import StoreError
from planr.lifecycle import Service

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 0x504C414E52  # "PLANR": serialises concurrent upgrades on PostgreSQL
_CHUNK = 500


def sqlite_url(data_dir: Path, name: str = "planr.db") -> str:
    """A store in a file under the data directory (``ftf.db``, ``inboxes.db``)."""
    return f"sqlite+aiosqlite:///{(data_dir / name).resolve()}"


def private_file(path: Path) -> None:
    """Create the directory (0700) and the database file (0600) before SQLite opens it, so
    that no other user of the machine can read them; SQLite gives its ``-wal`` and ``-shm``
    files the mode of the database file. An existing file or directory that others can reach
    is tightened."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.parent.stat()
    if st.st_mode & 0o077:
        # tighten a directory of our own (one made by an older version); never a shared one
        if st.st_uid != os.getuid() or st.st_mode & stat.S_ISVTX:
            raise StoreError(f"{path.parent} is open to other users: keep the store in a "
                             "private directory (mode 0700)", reason="store_permissions")
        path.parent.chmod(0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if extra.exists():
            extra.chmod(0o600)


def normalize_url(url: str) -> str:
    """Pick the async driver for a plain ``postgresql://`` or ``sqlite://`` URL."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def _upgrade(sync_conn: Connection) -> None:
    if sync_conn.dialect.name == "postgresql":
        sync_conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    # imported here: Alembic costs ~0.3 s of start-up that commands without a store never need
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


class Database(Service):
    """The store. ``start()``/``stop()`` or ``async with``; ``transaction()`` for work."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = normalize_url(url)
        self._migrate = migrate
        self._engine: AsyncEngine | None = None
        self._writer: AsyncEngine | None = None  # the engine with the write option set
        #: built statements by (kind, table, keys): an upsert takes ~0.3-0.6 ms to build
        #: (measured), once per batch and table; a statement is immutable, so reusable
        self._statements: dict[tuple[str, str, tuple[str, ...]], Any] = {}
        self._thread: SqliteThread | None = None  # SQLite files: see run()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("the store is not started: call start() first")
        return self._engine

    async def _open(self) -> None:
        if self.url.startswith("sqlite"):
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                private_file(Path(path))
            engine = create_async_engine(
                self.url, connect_args={"timeout": BUSY_TIMEOUT}, pool_size=1, max_overflow=0
            )
            sqlite_pragmas(engine.sync_engine)
        else:
            engine = create_async_engine(self.url, pool_size=4, max_overflow=4)
        if self._migrate:
            try:
                async with engine.execution_options(planr_write=True).begin() as conn:
                    await conn.run_sync(_upgrade)
            except (OSError, SQLAlchemyError) as exc:
                await engine.dispose()
                # the driver's message may name the server and user: the type is enough here
                raise StoreError(f"store unreachable or not migratable ({type(exc).__name__})"
                                 ) from None
            except BaseException:
                await engine.dispose()
                raise
        self._engine = engine
        self._writer = engine.execution_options(planr_write=True)
        self._statements.clear()
        if self.url.startswith("sqlite") and not self.url.endswith(":memory:"):
            self._thread = SqliteThread(self.url)

    async def _close(self) -> None:
        thread, self._thread, self._writer = self._thread, None, None
        try:
            if thread is not None:
                await thread.close()
        finally:
            await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed when the block ends, rolled back on an exception.
        (Reads use ``engine.connect()``: on SQLite they then do not take the write lock.)"""
        writer = self._writer
        if writer is None:
            raise StoreError("the store is not started: call start() first")
        async with writer.begin() as conn:
            yield conn

    async def run(self, fn: Callable[[Connection], T], *, write: bool = False) -> T:
        """``fn(conn)``, a function of a synchronous connection, in one write transaction
        (``write``) or one read snapshot. On an SQLite file in one hop to a thread of its own
        (:mod:`consumers.store.inthread`: a few rows read or written take one round trip
        instead of eight to eleven); elsewhere through the async engine (``run_sync``)."""
        if self._writer is None:
            raise StoreError("the store is not started: call start() first")
        if self._thread is not None:
            return await self._thread.run(fn, write=write)
        if write:
            async with self.transaction() as conn:
                return await conn.run_sync(fn)
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn)

    # -- helpers shared by the projections ---------------------------------------------------

    def insert_ignore(self, table: Table) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING`` for this dialect (built once per table)."""
        return self._built(("ignore", table.name, ()),
                           lambda: self._insert(table).on_conflict_do_nothing())

    def upsert(self, table: Table, keys: Sequence[str]) -> Any:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE`` setting every other column (built once
        per table and keys)."""
        def build() -> Any:
            insert = self._insert(table)
            others = {c.name: insert.excluded[c.name] for c in table.columns
                      if c.name not in keys}
            return insert.on_conflict_do_update(index_elements=list(keys), set_=others)

        return self._built(("upsert", table.name, tuple(keys)), build)

    def bulk(self, table: Table, *, upsert: Sequence[str] = (), ignore: bool = False
             ) -> BulkStatement:
        """Rows of every column of ``table`` bound by the driver (:mod:`.bulk`): a plain
        insert, an upsert on the keys ``upsert``, or an insert ignoring conflicts (built once
        per table and kind)."""
        def build() -> BulkStatement:
            if upsert:
                return BulkStatement(self.upsert(table, upsert), table)
            if ignore:
                return BulkStatement(self.insert_ignore(table), table)
            return BulkStatement(self._insert(table), table)

        kind = "bulk-upsert" if upsert else "bulk-ignore" if ignore else "bulk-insert"
        built: BulkStatement = self._built((kind, table.name, tuple(upsert)), build)
        return built

    def _built(self, key: tuple[str, str, tuple[str, ...]], build: Callable[[], Any]) -> Any:
        """The statement ``key``, built by ``build`` the first time."""
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = self._statements[key] = build()
        return stmt

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    async def load_offsets(self, consumer: str) -> dict[tuple[str, int], int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(consumer_offsets.c.topic, consumer_offsets.c.partition,
                       consumer_offsets.c.next_offset)
                .where(consumer_offsets.c.consumer == consumer)
            )
            return {(r.topic, r.partition): r.next_offset for r in rows}

    async def save_offsets(
        self, conn: AsyncConnection, consumer: str, offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Store next offsets in ``conn``'s transaction; an offset never moves backwards."""
        if not offsets:
            return
        def build() -> Any:
            insert = self._insert(consumer_offsets)
            biggest = func.greatest if self.dialect == "postgresql" else func.max
            return insert.on_conflict_do_update(
                index_elements=["consumer", "topic", "partition"],
                set_={"next_offset": biggest(consumer_offsets.c.next_offset,
                                             insert.excluded.next_offset)},
            )

        await conn.execute(self._built(("offsets", consumer_offsets.name, ()), build), [
            {"consumer": consumer, "topic": t, "partition": p, "next_offset": o}
            for (t, p), o in offsets.items()
        ])

    async def existing(
        self, conn: AsyncConnection, column: Any, values: Iterable[str]
    ) -> set[str]:
        """Which of ``values`` are already in ``column`` (chunked IN queries)."""
        return set(await self.lookup(conn, column, column, values))

    async def lookup(
        self, conn: AsyncConnection, key: Any, value: Any, keys: Iterable[str]
    ) -> dict[str, Any]:
        """``{key: value}`` of the rows whose ``key`` column is among ``keys`` (chunked)."""
        found: dict[str, Any] = {}
        for where in chunks_in(self.dialect, key, keys):
            rows = await conn.execute(select(key, value).where(where))
            found.update((r[0], r[1]) for r in rows)
        return found


def chunks_in(dialect: str, column: Any, values: Iterable[str]
              ) -> Iterator[ColumnElement[bool]]:
    """``column IN values`` as few conditions as the dialect allows: on PostgreSQL one (an array
    parameter, ``column = ANY($1)``: the same statement text whatever the count, so asyncpg
    prepares it once), on SQLite one ``IN`` list per :data:`_CHUNK` values."""
    wanted = sorted(set(values))
    if not wanted:
        return
    if dialect == "postgresql":
        yield column == any_(literal(wanted, postgresql.ARRAY(column.type)))
        return
    for i in range(0, len(wanted), _CHUNK):
        yield column.in_(wanted[i : i + _CHUNK])
