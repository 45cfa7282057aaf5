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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table


@dataclass(frozen=True)
class _Compiled:
    sql: str
    #: for each positional parameter of ``sql``, the index of its value in a caller's row
    order: tuple[int, ...]
    #: (index in a caller's row, the column type's bind processor), where there is one
    procs: tuple[tuple[int, Callable[[Any], Any]], ...]
    #: the caller's order is the statement's: rows go to the driver as they are
    same_order: bool


class BulkStatement:
    """An insert or upsert of ``table`` whose rows are tuples in the order of ``columns``.

    Built once (per store and statement); :meth:`execute` is safe from any thread.
    """

    def __init__(self, stmt: Any, table: Table, columns: Sequence[str]) -> None:
        self._stmt = stmt
        self._table = table
        self.columns = tuple(columns)
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, conn: Connection) -> _Compiled:
        dialect = conn.dialect
        compiled = self._stmt.compile(dialect=dialect, column_keys=list(self.columns))
        names = compiled.positiontup
        if names is None:  # pragma: no cover - every dialect of the project is positional
            raise TypeError(f"{dialect.name}: a positional paramstyle is needed")
        where = {c: i for i, c in enumerate(self.columns)}
        procs = []
        for i, c in enumerate(self.columns):
            proc = self._table.c[c].type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                procs.append((i, proc))
        order = tuple(where[n] for n in names)
        return _Compiled(compiled.string, order, tuple(procs), order == tuple(range(len(order))))

    def execute(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Every row (a tuple in the order of :attr:`columns`), in ``conn``'s transaction."""
        if not rows:
            return
        key = f"{conn.dialect.name}+{conn.dialect.driver}"
        c = self._compiled.get(key)
        if c is None:
            c = self._compiled[key] = self._compile(conn)
        order, procs = c.order, c.procs
        if procs:
            rows = _processed(rows, procs)
        if c.same_order:
            params = [tuple(row) for row in rows]
        else:
            params = [tuple(row[i] for i in order) for row in rows]
        conn.exec_driver_sql(c.sql, params)


def _processed(rows: Sequence[Sequence[Any]],
               procs: tuple[tuple[int, Callable[[Any], Any]], ...]) -> list[list[Any]]:
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
        out.append(values)
    return out


_NOTHING = object()
