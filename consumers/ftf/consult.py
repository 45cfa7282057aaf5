"""Consultation of the common database, under each service's access mode.

- ``consult`` and ``consult_and_feed``: the fiche (only included entries exist for readers);
- ``hit_no_hit``: only "hit" or "no hit";
- ``indirect``: "request forwarded to OCAM": the request joins OCAM's queue
  (``ocam_requests``, see :mod:`consumers.ftf.worklist`) and an OCAM request event is sent;
- ``none``: exactly the answer for an unknown subject (no oracle).

Every consultation is written to the ``consultations`` table and, through the outbox, to the
consultation audit topic, in one transaction, before the answer is given.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.ftf.fiche import INCLUDED, Fiche
from consumers.ftf.governance import AccessConfig, AccessMode
from consumers.metrics import StoreMetrics
from consumers.outbox import CONSULTATION_KIND, OCAM_REQUEST_KIND, outbox_row
from consumers.store import Database
from consumers.store.tables import consultations, fiches, ocam_requests, outbox
from planr.domain import Agency
from schemas.codec import Codec
from schemas.names import FTF_CONSULTATION, OCAM_REQUEST

FICHE, FICHES, HIT, NO_HIT, FORWARDED, NO_ACCESS = (
    "fiche", "fiches", "hit", "no_hit", "forwarded", "no_access"
)
#: States of a request forwarded to OCAM (``ocam_requests.status``).
OPEN, ANSWERED = "open", "answered"


@dataclass(frozen=True)
class Answer:
    """What a consultation answers. ``answer_class`` is logged; :meth:`render` is shown."""

    consultation_id: str
    verb: str
    subject_id: str | None
    answer_class: str
    fiches: Sequence[Fiche] = field(default_factory=tuple)

    def render(self, *, as_json: bool = False) -> tuple[str, int]:
        """(stdout text, exit code). ``no_access`` renders exactly as the unknown answer."""
        cls = self.answer_class
        if cls == NO_ACCESS:
            cls = NO_HIT if self.verb == "show" else FICHES
        if self.verb == "list" and cls == FICHES:
            if as_json:
                return "".join(json.dumps(f.public()) + "\n" for f in self.fiches), 0
            return "".join(_line(f) + "\n" for f in self.fiches), 0
        if cls == FICHE:
            fiche = self.fiches[0].public()
            if as_json:
                return json.dumps({"subject": self.subject_id, "answer": FICHE,
                                   "fiche": fiche}) + "\n", 0
            return "".join(f"{k}: {_text(v)}\n" for k, v in fiche.items()), 0
        text = {HIT: "hit", NO_HIT: "no hit", FORWARDED: "request forwarded to OCAM"}[cls]
        code = 1 if cls == NO_HIT else 0
        if as_json:
            body: dict[str, Any] = {"answer": cls}
            if self.verb == "show":
                body = {"subject": self.subject_id, **body}
            return json.dumps(body) + "\n", code
        return text + "\n", code


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    return "-" if value is None else str(value)


def _line(f: Fiche) -> str:
    p = f.public()
    return (f"{p['subject_id']:<16} {','.join(p['statuses']) or '-':<16} "
            f"threat={_text(p['threat_level'])} {_text(p['arrondissement']):<16} "
            f"review_due={_text(p['review_due'])}")


class Consultations:
    """Answer consultations and log them. Library class: explicit arguments, no settings."""

    def __init__(
        self, *, db: Database, access: AccessConfig, codec: Codec, metrics: StoreMetrics
    ) -> None:
        self._db = db
        self._access = access
        self._codec = codec
        self._metrics = metrics

    async def show(
        self, service: Agency, subject_id: str, purpose: str, now: datetime
    ) -> Answer:
        started = time.perf_counter()
        mode = self._access.mode(service)
        cid = str(uuid.uuid4())
        async with self._db.transaction() as conn:
            found: list[Fiche] = []
            if mode.reads_fiches:
                rows = await conn.execute(select(fiches).where(
                    fiches.c.subject_id == subject_id, fiches.c.state == INCLUDED))
                found = [Fiche.from_row(r) for r in rows.mappings()]
                cls = FICHE if found else NO_HIT
            elif mode is AccessMode.HIT_NO_HIT:
                cls = HIT if await self._included(conn, subject_id) else NO_HIT
            elif mode is AccessMode.INDIRECT:
                cls = FORWARDED
            else:
                cls = NO_ACCESS
            answer = Answer(cid, "show", subject_id, cls, tuple(found))
            await self._log(conn, answer, service=service, mode=mode, query="",
                            purpose=purpose, now=now)
        observe_consultation(self._metrics, "show", cls, started)
        return answer

    async def list(
        self,
        service: Agency,
        purpose: str,
        now: datetime,
        *,
        status: str | None = None,
        arrondissement: str | None = None,
    ) -> Answer:
        started = time.perf_counter()
        mode = self._access.mode(service)
        cid = str(uuid.uuid4())
        query = ";".join(f"{k}={v}" for k, v in
                         (("status", status), ("arrondissement", arrondissement)) if v)
        async with self._db.transaction() as conn:
            found: list[Fiche] = []
            if mode.reads_fiches or mode is AccessMode.HIT_NO_HIT:
                stmt = select(fiches).where(fiches.c.state == INCLUDED)
                if arrondissement:
                    stmt = stmt.where(fiches.c.arrondissement == arrondissement)
                rows = await conn.execute(stmt.order_by(fiches.c.subject_id))
                found = [f for f in (Fiche.from_row(r) for r in rows.mappings())
                         if status is None or status in f.statuses]
            if mode.reads_fiches:
                cls = FICHES
            elif mode is AccessMode.HIT_NO_HIT:
                cls, found = (HIT if found else NO_HIT), []
            elif mode is AccessMode.INDIRECT:
                cls = FORWARDED
            else:
                cls = NO_ACCESS
            answer = Answer(cid, "list", None, cls, tuple(found))
            await self._log(conn, answer, service=service, mode=mode, query=query,
                            purpose=purpose, now=now)
        observe_consultation(self._metrics, "list", cls, started)
        return answer

    async def _included(self, conn: AsyncConnection, subject_id: str) -> bool:
        q = select(exists().where(fiches.c.subject_id == subject_id,
                                  fiches.c.state == INCLUDED))
        return bool(await conn.scalar(q))

    async def _log(
        self,
        conn: AsyncConnection,
        answer: Answer,
        *,
        service: Agency,
        mode: AccessMode,
        query: str,
        purpose: str,
        now: datetime,
    ) -> None:
        row = {
            "consultation_id": answer.consultation_id, "consulted_at": now,
            "service": service.value, "access_mode": mode.value, "verb": answer.verb,
            "subject_id": answer.subject_id, "query": query, "purpose": purpose,
            "answer_class": answer.answer_class,
        }
        forwarded = []
        if answer.answer_class == FORWARDED:
            forwarded.append(await forward_to_ocam(conn, self._codec, row))
        await record_consultation(conn, self._codec, self._metrics, row, forwarded)


async def record_consultation(
    conn: AsyncConnection,
    codec: Codec,
    metrics: StoreMetrics,
    row: dict[str, Any],
    messages: Sequence[dict[str, Any]] = (),
) -> None:
    """Log one consultation (a ``consultations`` row) and queue its audit record, with any
    other outbox ``messages`` it decided, in ``conn``'s transaction."""
    await conn.execute(consultations.insert(), row)
    audit = outbox_row(row["consultation_id"], CONSULTATION_KIND, row["service"],
                       codec.encode(FTF_CONSULTATION, row), row["consulted_at"])
    await conn.execute(outbox.insert(), [audit, *messages])
    metrics.ftf_consultations.labels(row["access_mode"], row["verb"]).inc()


def observe_consultation(metrics: StoreMetrics, verb: str, answer_class: str,
                         started: float) -> None:
    """One sample of ``planr_ftf_consultation_seconds``: from ``started`` (a
    :func:`time.perf_counter` reading) to now, once the consultation's transaction is over."""
    metrics.ftf_consult_seconds.labels(verb, answer_class).observe(
        time.perf_counter() - started)


async def forward_to_ocam(
    conn: AsyncConnection, codec: Codec, consultation: dict[str, Any]
) -> dict[str, Any]:
    """Queue a forwarded consultation for OCAM (``ocam_requests``, open) in ``conn``'s
    transaction; returns the outbox row of its ``OcamRequest``."""
    c = consultation
    request = {"request_id": c["consultation_id"], "requested_at": c["consulted_at"],
               "service": c["service"], "verb": c["verb"], "subject_id": c["subject_id"],
               "query": c["query"], "purpose": c["purpose"]}
    await conn.execute(ocam_requests.insert(), {**request, "status": OPEN})
    return outbox_row(str(uuid.uuid5(uuid.NAMESPACE_URL, "ocam-request:" + c["consultation_id"])),
                      OCAM_REQUEST_KIND, c["service"], codec.encode(OCAM_REQUEST, request),
                      c["consulted_at"])
