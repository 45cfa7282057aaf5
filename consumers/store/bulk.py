"""Many rows through one statement, bound by the driver: no per-row work in SQLAlchemy.

``conn.execute(stmt, [dict, ...])`` builds, for every row, a dictionary of parameters and
runs every value through its column type's processing before the driver sees it: for the
router's ledger that was most of a save (~11% of the router's CPU in bulk, measured). A
:class:`BulkStatement` compiles the statement with SQLAlchemy once per dialect, keeps the
column types' bind processors (``UtcDateTime`` for example) and passes the driver plain
tuples through ``exec_driver_sql``: the SQL text and the values the driver gets are the ones
SQLAlchemy would have given it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Connection, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from planr.errors import UsageError


@dataclass(frozen=True)
class _Compiled:
    sql: str
    #: for each positional parameter of ``sql``, the index of its value in a tuple row
    order: tuple[int, ...]
    #: a mapping row's values, in the order of ``sql``'s parameters
    getter: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    #: (position in ``sql``'s parameters, the column type's bind processor), where there is one
    procs: tuple[tuple[int, Callable[[Any], Any]], ...]
    #: tuple rows are in ``sql``'s order already
    same_order: bool


class BulkStatement:
    """An insert or upsert of ``table`` whose rows are tuples in the order of ``columns``, or
    mappings with exactly those keys (default: every column of ``table``).

    Built once (per store and statement); :meth:`execute` is safe from any thread.
    """

    def __init__(self, stmt: Any, table: Table, columns: Sequence[str] | None = None) -> None:
        self._stmt = stmt
        self._table = table
        self.columns = tuple(table.c.keys() if columns is None else columns)
        self._keys = frozenset(self.columns)
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, conn: Connection) -> _Compiled:
        dialect = conn.dialect
        compiled = self._stmt.compile(dialect=dialect, column_keys=list(self.columns))
        names = compiled.positiontup
        if names is None:  # pragma: no cover - every dialect of the project is positional
            raise TypeError(f"{dialect.name}: a positional paramstyle is needed")
        where = {c: i for i, c in enumerate(self.columns)}
        order = tuple(where[n] for n in names)
        procs = []
        for pos, name in enumerate(names):
            proc = self._table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                procs.append((pos, proc))
        getter = itemgetter(*names) if len(names) > 1 else (lambda m: (m[names[0]],))
        return _Compiled(compiled.string, order, getter, tuple(procs),
                         order == tuple(range(len(order))))

    def execute(self, conn: Connection,
                rows: Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]) -> None:
        """Every row, in ``conn``'s transaction (no statement when there is none)."""
        if not rows:
            return
        key = f"{conn.dialect.name}+{conn.dialect.driver}"
        c = self._compiled.get(key)
        if c is None:
            c = self._compiled[key] = self._compile(conn)
        params: list[Any]
        if isinstance(rows[0], Mapping):
            params = [c.getter(self._checked(row))
                      for row in cast(Sequence[Mapping[str, Any]], rows)]
        elif c.same_order:
            params = [tuple(row) for row in rows]  # a tuple row is passed as it is
        else:
            params = [tuple(row[i] for i in c.order)
                      for row in cast(Sequence[Sequence[Any]], rows)]
        if c.procs:
            params = _processed(params, c.procs)
        conn.exec_driver_sql(c.sql, params)

    async def execute_async(self, conn: AsyncConnection,
                            rows: Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]) -> None:
        """:meth:`execute` on an asynchronous connection."""
        if rows:
            await conn.run_sync(self.execute, rows)

    def _checked(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        if len(row) != len(self.columns) or row.keys() != self._keys:
            raise UsageError(f"{self._table.name}: a row's keys are not the statement's columns")
        return row


def _processed(rows: Sequence[Sequence[Any]],
               procs: tuple[tuple[int, Callable[[Any], Any]], ...]) -> list[tuple[Any, ...]]:
    """The rows with each processed column's value converted; a value that is the very object
    of the row before (a batch's one timestamp) is converted once."""
    out = []
    last: list[tuple[object, Any]] = [(_NOTHING, None)] * len(procs)
    for row in rows:
        values = list(row)
        for k, (i, proc) in enumerate(procs):
            v = values[i]
            seen, done = last[k]
            if v is not seen:
                done = proc(v)
                last[k] = (v, done)
            values[i] = done
        out.append(tuple(values))
    return out


_NOTHING = object()
