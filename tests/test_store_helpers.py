"""Helpers for the store, projector and inbox tests (no tests here).

``store_url`` yields a fresh database: an SQLite file, or a fresh database on the PostgreSQL
server named by ``PLANR_TEST_PG_URL`` (skipped when unset).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from sqlalchemy import make_url, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from consumers.store import Database, normalize_url, sqlite_url
from consumers.store.tables import metadata
from planr.signing import Signer, sign_headers

PG_ENV = "PLANR_TEST_PG_URL"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@asynccontextmanager
async def store_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield sqlite_url(tmp_path)
        return
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server for this test")
    admin = make_url(normalize_url(admin_url))
    name = f"planr_t_{uuid.uuid4().hex[:12]}"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            async with engine.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


def records(topic: str, values: list[bytes], start: int = 0,
            signer: Signer | None = None) -> list[ConsumerRecord]:
    """Consecutive records of partition 0 of ``topic``; signed on it by ``signer`` if given."""
    return [
        ConsumerRecord(topic, 0, start + i, 1_767_225_600_000, 0, None, v, None, 0, len(v),
                       sign_headers(signer, topic, v) if signer is not None else ())
        for i, v in enumerate(values)
    ]


async def dump(db: Database, *, skip: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted, for comparing two databases."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name in skip:
                continue
            rows = (await conn.execute(select(table))).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out
