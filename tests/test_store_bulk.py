"""``BulkStatement``: rows bound by the driver store exactly what SQLAlchemy's own execution
stores, on SQLite and PostgreSQL, and keep the column types' checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Connection, select

from consumers.store.bulk import BulkStatement
from consumers.store.tables import ledger_holdings
from planr.errors import UsageError

AT = datetime(2026, 12, 7, 21, 30, 15, 123456, tzinfo=UTC)
COLUMNS = ("event_id", "recipient", "delivery_id", "version", "active", "changed_at")
# the same column order as the table's, and another one (the values then need reordering)
SHUFFLED = ("changed_at", "active", "recipient", "event_id", "version", "delivery_id")


def _rows(n: int, version: int, columns: tuple[str, ...]) -> list[tuple[object, ...]]:
    # one hour ahead of UTC: stored as the same instant in UTC
    plus_one = AT.astimezone(timezone(timedelta(hours=1)))
    dicts = [{"event_id": f"e{i:03d}", "recipient": f"tfl:{i % 3}", "delivery_id": f"d{i}",
              "version": version, "active": i % 2 == 0, "changed_at": plus_one}
             for i in range(n)]
    return [tuple(d[c] for c in columns) for d in dicts]


async def _stored(db) -> list[tuple[object, ...]]:
    """Read back through the async engine and SQLAlchemy's types (not the path under test)."""
    async with db.engine.connect() as conn:
        rows = await conn.execute(select(*(ledger_holdings.c[c] for c in COLUMNS))
                                  .order_by(ledger_holdings.c.event_id))
        return [tuple(r) for r in rows]


@pytest.mark.parametrize("columns", [COLUMNS, SHUFFLED], ids=["table-order", "other-order"])
async def test_bulk_upsert_stores_what_the_rows_say_and_updates_on_conflict(db, columns):
    stmt = BulkStatement(db.upsert(ledger_holdings, ["event_id", "recipient"]),
                         ledger_holdings, columns)
    await db.run(lambda conn: stmt.execute(conn, _rows(5, 1, columns)), write=True)
    await db.run(lambda conn: stmt.execute(conn, _rows(3, 2, columns)), write=True)

    expected = [(f"e{i:03d}", f"tfl:{i % 3}", f"d{i}", 2 if i < 3 else 1, i % 2 == 0, AT)
                for i in range(5)]
    assert await _stored(db) == expected


async def test_bulk_rows_match_sqlalchemys_own_execution(db):
    """The same rows through ``conn.execute`` (dicts, SQLAlchemy's binding) and through the
    driver: identical tables."""
    rows = _rows(4, 3, COLUMNS)
    await db.run(lambda conn: conn.execute(db.upsert(ledger_holdings, ["event_id", "recipient"]),
                                           [dict(zip(COLUMNS, r, strict=True)) for r in rows]),
                 write=True)
    by_sqlalchemy = await _stored(db)
    async with db.transaction() as conn:
        await conn.execute(ledger_holdings.delete())
    stmt = BulkStatement(db.upsert(ledger_holdings, ["event_id", "recipient"]),
                         ledger_holdings, COLUMNS)
    await db.run(lambda conn: stmt.execute(conn, rows), write=True)
    assert await _stored(db) == by_sqlalchemy
    assert len(by_sqlalchemy) == 4


async def test_bulk_keeps_the_column_types_checks_and_writes_nothing_on_refusal(db):
    stmt = BulkStatement(db.upsert(ledger_holdings, ["event_id", "recipient"]),
                         ledger_holdings, COLUMNS)
    good = _rows(2, 1, COLUMNS)
    naive = ("e9", "tfl:0", "d9", 1, True, AT.replace(tzinfo=None))

    def unit(conn: Connection) -> None:
        stmt.execute(conn, [*good, naive])

    with pytest.raises(ValueError, match="naive datetime"):
        await db.run(unit, write=True)
    assert await _stored(db) == []


async def test_bulk_with_no_rows_writes_nothing(db):
    stmt = BulkStatement(db.upsert(ledger_holdings, ["event_id", "recipient"]),
                         ledger_holdings, COLUMNS)
    await db.run(lambda conn: stmt.execute(conn, []), write=True)
    assert await _stored(db) == []


async def test_bulk_converts_each_rows_own_value(db):
    """A batch's one timestamp is converted once; rows with values of their own keep theirs."""
    stmt = BulkStatement(db.upsert(ledger_holdings, ["event_id", "recipient"]),
                         ledger_holdings, COLUMNS)
    times = [AT, AT, AT + timedelta(seconds=1), AT, AT + timedelta(days=2)]
    rows = [(f"e{i}", "tfl:0", f"d{i}", 1, i % 2 == 1, t) for i, t in enumerate(times)]
    await db.run(lambda conn: stmt.execute(conn, rows), write=True)
    assert [(r[0], r[4], r[5]) for r in await _stored(db)] == [
        (f"e{i}", i % 2 == 1, t) for i, t in enumerate(times)]


async def test_bulk_of_mapping_rows_stores_them_and_refuses_rows_with_other_keys(db):
    stmt = db.bulk(ledger_holdings, upsert=["event_id", "recipient"])
    assert db.bulk(ledger_holdings, upsert=["event_id", "recipient"]) is stmt  # built once
    rows = [dict(zip(SHUFFLED, r, strict=True)) for r in _rows(3, 1, SHUFFLED)]
    async with db.transaction() as conn:
        await stmt.execute_async(conn, rows[::-1])  # rows and their keys in another order
    assert await _stored(db) == [(f"e{i:03d}", f"tfl:{i % 3}", f"d{i}", 1, i % 2 == 0, AT)
                                 for i in range(3)]

    extra = {**rows[0], "event_id": "e999", "summary": "not a column"}
    missing = {k: v for k, v in rows[0].items() if k != "active"} | {"event_id": "e998"}
    for bad in (extra, missing):
        with pytest.raises(UsageError, match="ledger_holdings") as caught:
            async with db.transaction() as conn:
                await stmt.execute_async(conn, [rows[1], bad])
        assert "not a column" not in str(caught.value)  # no value in the message
    assert len(await _stored(db)) == 3
