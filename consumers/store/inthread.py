"""SQLite work run in one hop: a unit of work on a thread of its own, with the synchronous driver.

Through the asynchronous driver (aiosqlite), each step of a statement is a round trip between
the event loop and the driver's thread: a cursor, the execution, the rows, closing the cursor,
then ``BEGIN``, ``COMMIT`` and the pool's reset. A round trip costs ~0.2 ms on an idle 2-core
machine (measured), and a small read or write of a few rows takes eight to eleven of them.

A :class:`SqliteThread` runs a whole unit of work, a function of a synchronous
:class:`~sqlalchemy.engine.Connection`, in one round trip: on its own single thread, with a
synchronous engine on the same file, the same statements and the same connection settings
(:func:`sqlite_pragmas`). Waiting for the write lock (the busy timeout) then happens in that
thread, never in the event loop. Only for a database file: an in-memory database is private to
its connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url

T = TypeVar("T")

#: seconds a connection waits for another writer's lock before failing
BUSY_TIMEOUT = 60


def sqlite_pragmas(engine: Engine) -> None:
    """The connection settings of every SQLite engine of the project (``engine`` synchronous, or
    an async engine's ``sync_engine``)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT * 1000}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front (no deadlocking lock upgrades between
        # processes); a reader reads a WAL snapshot and never waits for, or blocks, writers.
        write = conn.get_execution_options().get("planr_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class SqliteThread:
    """Units of work on one SQLite file, each run in one hop to a thread of its own.

    :meth:`run` from the event loop; :meth:`close` once, after the last :meth:`run` (it waits
    for work already handed over, then closes the connection in its thread).
    """

    def __init__(self, url: str) -> None:
        self._url = make_url(url).set(drivername="sqlite")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planr-sqlite")
        self._engine: Engine | None = None  # made and used in the thread only
        self._writer: Engine | None = None  # the same, with the write option set

    async def run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """``fn(conn)`` in one write transaction (``write``: committed if ``fn`` returns,
        rolled back if it raises) or one read snapshot. A cancelled caller stops waiting; the
        unit of work itself still ends, committed or rolled back, as a whole."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn, write)

    def _run(self, fn: Callable[[Connection], T], write: bool) -> T:
        engine, writer = self._engine, self._writer
        if engine is None or writer is None:
            engine = self._engine = create_engine(
                self._url, connect_args={"timeout": BUSY_TIMEOUT}, pool_size=1, max_overflow=0)
            sqlite_pragmas(engine)
            writer = self._writer = engine.execution_options(planr_write=True)
        if write:
            with writer.begin() as conn:
                return fn(conn)
        with engine.connect() as conn:
            return fn(conn)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._dispose)
        finally:
            self._executor.shutdown(wait=True)  # idle by now: its thread ends at once

    def _dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = self._writer = None
