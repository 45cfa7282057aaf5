"""The router's ledger in a store of its own: for every event, its owner, latest version and
markings, and who holds which version (ids only: never content).

The router loads the states of a batch's events, decides (routing/lifecycle.py), produces,
waits for the broker's acknowledgements, then saves here, then commits its offsets: a crash
in between replays the batch, which the saved states turn into duplicates. ``planr ledger``
reads it for the oversight bodies; every such use is itself logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, bindparam, select

from consumers.store import Database
from consumers.store.bulk import BulkStatement
from consumers.store.tables import ledger_consultations, ledger_events, ledger_holdings
from routing.lifecycle import EventState, Holding, Markings

_CHUNK = 500
#: The rows of some events (``ids``), each with each of its holdings (none: the holding
#: columns are NULL).
_LOAD = select(
    ledger_events,
    ledger_holdings.c.recipient, ledger_holdings.c.delivery_id,
    ledger_holdings.c.version.label("held_version"), ledger_holdings.c.active,
).select_from(ledger_events.outerjoin(
    ledger_holdings, ledger_holdings.c.event_id == ledger_events.c.event_id)
).where(ledger_events.c.event_id.in_(bindparam("ids", expanding=True)))  # built once
CONSULTATION_NS = uuid.UUID("4c1b7e0a-9d3f-4a57-bb2e-1f6e0c9d8a73")


def _markings(row: Any) -> Markings | None:
    if row["classification"] is None:
        return None
    return Markings(row["classification"], row["handling"], row["tlp"],
                    bool(row["local_sharing"]),
                    frozenset(n for n in (row["named"] or "").split(",") if n))


def _event_row(s: EventState) -> tuple[Any, ...]:
    """The row of ``s``, in the order of ``ledger_events``'s columns."""
    m = s.markings
    if m is None:
        return (s.event_id, s.agency, s.subject_id, s.version, s.withdrawn, s.fingerprint,
                None, None, None, None, None)
    return (s.event_id, s.agency, s.subject_id, s.version, s.withdrawn, s.fingerprint,
            m.classification, m.handling, m.tlp, m.local_sharing, ",".join(sorted(m.named)))


def _load(conn: Connection, wanted: list[str]) -> dict[str, EventState]:
    states: dict[str, EventState] = {}
    for i in range(0, len(wanted), _CHUNK):
        for r in conn.execute(_LOAD, {"ids": wanted[i : i + _CHUNK]}).mappings():
            state = states.get(r["event_id"])
            if state is None:
                state = states[r["event_id"]] = EventState(
                    r["event_id"], r["agency"], r["subject_id"], r["version"],
                    bool(r["withdrawn"]), r["fingerprint"], _markings(r))
            if r["recipient"] is not None:  # an event with no holding yet
                state.holdings[r["recipient"]] = Holding(
                    r["recipient"], r["delivery_id"], r["held_version"], bool(r["active"]))
    return states


_Rows = tuple[BulkStatement, list[tuple[Any, ...]]]  # a statement and its rows


def _save(conn: Connection, events: _Rows, holdings: _Rows) -> None:
    for stmt, rows in (events, holdings):
        stmt.execute(conn, rows)


class StoreLedger:
    """The ledger on a :class:`~consumers.store.Database` (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def load(self, event_ids: Iterable[str]) -> dict[str, EventState]:
        """The known states of these events, with their holdings: one query per chunk of
        events (each event's row joined to its holdings), all in one unit of work
        (:meth:`Database.run`: one round trip to the driver's thread on SQLite)."""
        wanted = sorted(set(event_ids))
        if not wanted:
            return {}
        return await self.db.run(partial(_load, wanted=wanted))

    async def save(self, states: Sequence[EventState], at: datetime) -> None:
        """Write the states and holdings of a batch's events, in one transaction."""
        if not states:
            return
        events = [_event_row(s) for s in states]
        # in the order of ledger_holdings's columns; the driver binds the rows (store/bulk.py)
        holdings = [(s.event_id, h.recipient, h.delivery_id, h.version, h.active, at)
                    for s in states for h in s.holdings.values()]
        await self.db.run(partial(
            _save, events=(self.db.bulk(ledger_events, upsert=["event_id"]), events),
            holdings=(self.db.bulk(ledger_holdings, upsert=["event_id", "recipient"]), holdings),
        ), write=True)

    async def subject_events(self, subject_id: str) -> list[str]:
        """The events about one subject (for retractions when OCAM removes the person)."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(select(ledger_events.c.event_id)
                                      .where(ledger_events.c.subject_id == subject_id)
                                      .order_by(ledger_events.c.event_id))
            return [r[0] for r in rows]

    async def consult(self, *, operator: str, purpose: str, query: str, query_id: str,
                      at: datetime) -> list[dict[str, Any]]:
        """Who received what, for one event or one subject; the use is logged first."""
        if query == "subject":
            events = await self.subject_events(query_id)
        else:
            events = [query_id]
        states = await self.load(events)
        rows = [{"event_id": s.event_id, "agency": s.agency, "subject_id": s.subject_id,
                 "event_version": s.version, "withdrawn": s.withdrawn,
                 "recipient": h.recipient, "delivery_id": h.delivery_id,
                 "version": h.version, "holds": h.active}
                for s in sorted(states.values(), key=lambda x: x.event_id)
                for h in sorted(s.holdings.values(), key=lambda x: x.recipient)]
        cid = uuid.uuid5(CONSULTATION_NS, f"{operator}|{query}|{query_id}|{at.isoformat()}")
        async with self.db.transaction() as conn:
            await conn.execute(ledger_consultations.insert(), [{
                "consultation_id": str(cid), "operator": operator, "purpose": purpose,
                "query": query, "query_id": query_id, "rows": len(rows), "consulted_at": at,
            }])
        return rows

    async def consultations(self) -> list[dict[str, Any]]:
        t = ledger_consultations
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(select(t).order_by(t.c.consulted_at, t.c.consultation_id))
            return [dict(r) for r in rows.mappings()]
