"""The rows of the JIB's store, and what one batch of the consensus process reads and writes.

:class:`BatchState` loads, in a few queries, the proposals and vote ids a batch refers to and
the clock of its partitions; the consensus rules change it in memory, in input order; then
:meth:`BatchState.save` writes every change in the batch's transaction (with the outbox rows
and the next offsets: see :mod:`consumers.tracked`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.jib.rules import Decision, Proposal
from consumers.jib.tables import jib_clock, jib_decisions, jib_members, jib_proposals, jib_votes
from consumers.store import Database
from consumers.store.tables import outbox

_CHUNK = 500
_STATE_COLUMNS = ("approvals", "objections", "outcome", "decided_at", "deciding_vote")


def csv(items: Iterable[str]) -> str:
    return ",".join(items)


def uncsv(text: str | None) -> list[str]:
    return text.split(",") if text else []


def proposal_from_row(r: Any) -> Proposal:
    return Proposal(
        proposal_id=r["proposal_id"], proposer=r["proposer"],
        arrondissement=r["arrondissement"], subject_id=r["subject_id"], action=r["action"],
        proposed_at=r["proposed_at"], deadline=r["deadline"], panel=tuple(uncsv(r["panel"])),
        approvals=uncsv(r["approvals"]), objections=uncsv(r["objections"]),
        outcome=r["outcome"], decided_at=r["decided_at"], deciding_vote=r["deciding_vote"],
    )


def _state(p: Proposal) -> dict[str, Any]:
    return {"approvals": csv(p.approvals), "objections": csv(p.objections),
            "outcome": p.outcome, "decided_at": p.decided_at, "deciding_vote": p.deciding_vote}


class BatchState:
    """The part of the JIB one batch touches, changed in memory, saved at the end."""

    def __init__(self, db: Database, conn: AsyncConnection,
                 partitions: Iterable[tuple[str, int]]) -> None:
        self._db = db
        self._conn = conn
        self.partitions = sorted(set(partitions))
        self.proposals: dict[str, Proposal] = {}
        self.partition: dict[str, int] = {}
        self.proposal_hashes: dict[str, str] = {}
        self.vote_hashes: dict[str, str] = {}
        self.clocks: dict[tuple[str, int], datetime] = {}
        self._new: dict[str, dict[str, Any]] = {}  # proposal id -> its insert row (less state)
        self._changed: set[str] = set()
        self._votes: list[dict[str, Any]] = []
        self._decisions: list[dict[str, Any]] = []
        self._members: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._clock_changed: set[tuple[str, int]] = set()

    async def load(self, proposal_ids: Iterable[str], vote_ids: Iterable[str],
                   ticks: Mapping[tuple[str, int], datetime]) -> None:
        """The proposals and votes named in the batch; for each partition with ticks, its
        clock and the open proposals whose deadline the batch's latest tick reaches."""
        wanted = sorted(set(proposal_ids))
        t = jib_proposals.c
        for i in range(0, len(wanted), _CHUNK):
            rows = await self._conn.execute(select(jib_proposals).where(
                t.proposal_id.in_(wanted[i : i + _CHUNK])))
            for r in rows.mappings():
                self._remember(r)
        self.vote_hashes = await self._db.lookup(
            self._conn, jib_votes.c.vote_id, jib_votes.c.content_hash, set(vote_ids))
        for (_topic, partition), latest in ticks.items():
            rows = await self._conn.execute(select(jib_proposals).where(
                t.outcome.is_(None), t.deadline <= latest, t.topic_partition == partition))
            for r in rows.mappings():
                self._remember(r)
        for topic, partition in self.partitions:
            at = await self._conn.scalar(select(jib_clock.c.at).where(
                jib_clock.c.topic == topic, jib_clock.c.partition == partition))
            if at is not None:
                self.clocks[(topic, partition)] = at

    def _remember(self, r: Any) -> Proposal:
        p = proposal_from_row(r)
        self.proposals[p.proposal_id] = p
        self.partition[p.proposal_id] = r["topic_partition"]
        self.proposal_hashes[p.proposal_id] = r["content_hash"]
        return p

    def clock(self, topic: str, partition: int) -> datetime | None:
        return self.clocks.get((topic, partition))

    def advance_clock(self, topic: str, partition: int, at: datetime) -> datetime:
        """The partition's clock moves to ``at`` if that is later; returns the clock."""
        key = (topic, partition)
        if key not in self.clocks or at > self.clocks[key]:
            self.clocks[key] = at
            self._clock_changed.add(key)
        return self.clocks[key]

    def open_due(self, partition: int, at: datetime) -> list[Proposal]:
        """Open proposals of ``partition`` whose deadline is at or before ``at`` (a tick of
        the batch: :meth:`load` read those of the table)."""
        return [p for pid, p in self.proposals.items()
                if self.partition[pid] == partition and p.is_open and p.deadline <= at]

    def add_proposal(self, p: Proposal, *, grounds: str, partition: int, offset: int,
                     content_hash: str) -> None:
        self.proposals[p.proposal_id] = p
        self.partition[p.proposal_id] = partition
        self.proposal_hashes[p.proposal_id] = content_hash
        self._new[p.proposal_id] = {
            "proposal_id": p.proposal_id, "proposer": p.proposer,
            "arrondissement": p.arrondissement, "subject_id": p.subject_id, "action": p.action,
            "grounds": grounds, "proposed_at": p.proposed_at, "deadline": p.deadline,
            "panel": csv(p.panel), "topic_partition": partition, "topic_offset": offset,
            "content_hash": content_hash}

    def changed(self, p: Proposal) -> None:
        if p.proposal_id not in self._new:
            self._changed.add(p.proposal_id)

    def add_vote(self, vote: Mapping[str, Any], status: str, *, offset: int,
                 content_hash: str, counted: bool) -> None:
        self.vote_hashes[vote["vote_id"]] = content_hash
        self._votes.append({
            "vote_id": vote["vote_id"], "proposal_id": vote["proposal_id"],
            "service": vote["service"], "choice": vote["choice"],
            "reason": vote["reason"] if counted else None, "cast_at": vote["cast_at"],
            "status": status, "topic_offset": offset, "content_hash": content_hash})

    def add_decision(self, d: Decision) -> None:
        p = d.proposal
        self.changed(p)
        row = d.record()
        row["approvals"], row["objections"] = csv(p.approvals), csv(p.objections)
        self._decisions.append(row)
        if d.outcome != "adopted":
            return
        key = (p.subject_id, p.arrondissement)
        self._members[key] = None if p.action == "remove" else {
            "subject_id": p.subject_id, "arrondissement": p.arrondissement,
            "since": d.decided_at, "proposal_id": p.proposal_id, "proposer": p.proposer,
            "panel": csv(p.panel)}

    async def save(self, messages: Sequence[dict[str, Any]]) -> None:
        conn, db = self._conn, self._db
        if self._new:
            await conn.execute(jib_proposals.insert(), [
                {**row, **_state(self.proposals[pid])} for pid, row in self._new.items()])
        if self._changed:
            t = jib_proposals
            stmt = (update(t).where(t.c.proposal_id == bindparam("pid"))
                    .values({c: bindparam(f"v_{c}") for c in _STATE_COLUMNS}))
            await conn.execute(stmt, [
                {"pid": pid, **{f"v_{c}": v for c, v in _state(self.proposals[pid]).items()}}
                for pid in sorted(self._changed)])
        if self._votes:
            await conn.execute(jib_votes.insert(), self._votes)
        if self._decisions:
            await conn.execute(jib_decisions.insert(), self._decisions)
        await self._save_members()
        if self._clock_changed:
            await conn.execute(db.upsert(jib_clock, ["topic", "partition"]), [
                {"topic": t, "partition": p, "at": self.clocks[(t, p)]}
                for t, p in sorted(self._clock_changed)])
        if messages:
            await conn.execute(db.insert_ignore(outbox), list(messages))

    async def _save_members(self) -> None:
        """The batch's last word on each (subject, arrondissement): a row, or none."""
        if not self._members:
            return
        t = jib_members.c
        keys = sorted(self._members)
        for i in range(0, len(keys), _CHUNK):
            await self._conn.execute(delete(jib_members).where(
                tuple_(t.subject_id, t.arrondissement).in_(keys[i : i + _CHUNK])))
        rows = [row for row in self._members.values() if row is not None]
        if rows:
            await self._conn.execute(jib_members.insert(), rows)

async def jib_counts(db: Database) -> dict[str, dict[str, int]]:
    """Figures of the JIB (labels and counts only): proposals by state, votes by status,
    current members."""
    t = jib_proposals.c
    async with db.engine.connect() as conn:
        states = (await conn.execute(select(t.outcome, func.count()).group_by(t.outcome))).all()
        votes = (await conn.execute(select(jib_votes.c.status, func.count())
                                    .group_by(jib_votes.c.status))).all()
        members = await conn.scalar(select(func.count()).select_from(jib_members))
    return {"proposals": {(s or "open"): int(n) for s, n in states},
            "votes": {s: int(n) for s, n in votes},
            "members": {"current": int(members or 0)}}


async def count_open(db: Database, before: datetime) -> tuple[int, int]:
    """Open proposals, and those of them whose deadline is before ``before``, in one query."""
    t = jib_proposals.c
    async with db.engine.connect() as conn:
        row = (await conn.execute(
            select(func.count(), func.count(case((t.deadline < before, 1))))
            .select_from(jib_proposals).where(t.outcome.is_(None)))).one()
    return int(row[0] or 0), int(row[1] or 0)
