"""OCAM's worklist on the common database: what waits for OCAM's decision.

- :meth:`Worklist.pending`: the fiches fed by services and still ``proposed``, oldest first,
  with the services that fed them (ids, dates, statuses, counts; never a text);
- :meth:`Worklist.requests`: the consultations forwarded to OCAM by services with indirect
  access (``ocam_requests``, queued by :mod:`consumers.ftf.consult`), open ones oldest first;
- :meth:`Worklist.answer`: OCAM's answer to one request (``hit``, ``no_hit`` or ``refused``),
  recorded and sent, through the outbox and in the same transaction, as an ``OcamAnswer`` to
  the requesting service's own topic ``<p>.ftf.ocam-answers.<agency>`` and nowhere else.

Only OCAM (:data:`consumers.ftf.governance.MANAGER`) may use them. Any other service is
refused before anything is read, so the refusal is the same whether or not fiches or requests
exist. Every use, refused or not, is logged like a consultation (``consultations`` and the
consultation audit topic), in the transaction that reads or answers.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.ftf.consult import (
    FICHES,
    NO_ACCESS,
    OPEN,
    observe_consultation,
    record_consultation,
)
from consumers.ftf.fiche import PROPOSED, split_labels
from consumers.ftf.governance import MANAGER, AccessConfig
from consumers.metrics import StoreMetrics
from consumers.outbox import OCAM_ANSWER_KIND, outbox_row
from consumers.reader import read_topic
from consumers.store import Database
from consumers.store.tables import contributions, fiches, ocam_requests
from planr.domain import Agency
from planr.errors import PlanrError, UsageError
from planr.kafka import KafkaConnection
from planr.topics import Topics, answer_recipients
from schemas.codec import Codec
from schemas.names import OCAM_ANSWER

log = structlog.get_logger(__name__)

ANSWERED = "answered"
#: Answer classes of the worklist verbs in the consultation log (besides ``fiches`` for
#: ``pending`` and ``no_access`` for a refused service).
REQUESTS, UNKNOWN_REQUEST, ALREADY_ANSWERED = "requests", "unknown_request", "already_answered"
ANSWER_NS = uuid.UUID("6f1d2c3e-9a4b-4c8e-b7d5-0e2f4a6c8b10")


class Reply(StrEnum):
    """What OCAM may answer: the subject (or the filters) is a hit, no hit, or OCAM refuses."""

    HIT = "hit"
    NO_HIT = "no_hit"
    REFUSED = "refused"


class NotManagerError(PlanrError):
    """A service other than OCAM asked for OCAM's worklist."""

    reason = "not_manager"


class UnknownRequestError(PlanrError):
    reason = "unknown_request"


class AlreadyAnsweredError(PlanrError):
    reason = "already_answered"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Feeder:
    """One service's contributions to a pending fiche."""

    agency: str
    contributions: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class PendingFiche:
    """A fiche waiting for OCAM's decision, since its first contribution was published."""

    subject_id: str
    kind: str
    statuses: tuple[str, ...]
    waiting_since: datetime
    first_info_at: datetime
    last_info_at: datetime
    contributions: int
    fed_by: tuple[Feeder, ...]

    def public(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id, "kind": self.kind, "state": PROPOSED,
            "statuses": list(self.statuses), "waiting_since": _iso(self.waiting_since),
            "first_info_at": _iso(self.first_info_at), "last_info_at": _iso(self.last_info_at),
            "contributions": self.contributions,
            "fed_by": [{"agency": f.agency, "contributions": f.contributions,
                        "first_at": _iso(f.first_at), "last_at": _iso(f.last_at)}
                       for f in self.fed_by],
        }

    def line(self) -> str:
        fed = " ".join(f"{f.agency}({f.contributions})" for f in self.fed_by)
        return (f"{self.subject_id:<16} waiting since {_iso(self.waiting_since)}  "
                f"statuses={','.join(self.statuses) or '-'}  "
                f"contributions={self.contributions}  fed by {fed}")


@dataclass(frozen=True)
class Request:
    """A consultation forwarded to OCAM, waiting for its answer."""

    request_id: str
    requested_at: datetime
    service: str
    verb: str
    subject_id: str | None
    query: str
    purpose: str

    def public(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "requested_at": _iso(self.requested_at),
                "service": self.service, "verb": self.verb, "subject_id": self.subject_id,
                "query": self.query, "purpose": self.purpose}

    def line(self) -> str:
        asked = self.subject_id or f"({self.query})"
        return (f"{self.request_id}  {_iso(self.requested_at)}  {self.service:<7} "
                f"{self.verb:<5} {asked}  purpose={self.purpose!r}")


def request_id_of(text: str) -> str:
    """The canonical form of a request id (a UUID); a usage error otherwise."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise UsageError("REQUEST must be a request id (a UUID, as 'ftf requests' lists)"
                         ) from None


def answer_id(request_id: str) -> str:
    """The id of the (single) answer to a request: the same however often it is resent."""
    return str(uuid.uuid5(ANSWER_NS, request_id))


class Worklist:
    """OCAM's worklist. Library class: explicit arguments, no settings."""

    def __init__(
        self, *, db: Database, access: AccessConfig, codec: Codec, metrics: StoreMetrics
    ) -> None:
        self._db = db
        self._access = access
        self._codec = codec
        self._metrics = metrics

    async def pending(self, service: Agency, now: datetime) -> list[PendingFiche]:
        """Proposed fiches, longest waiting first; :class:`NotManagerError` for another service."""
        started, allowed = time.perf_counter(), service is MANAGER
        async with self._db.transaction() as conn:
            found = await _proposed(conn) if allowed else []
            await self._log(conn, service, "pending", now, FICHES if allowed else NO_ACCESS)
        observe_consultation(self._metrics, "pending", FICHES if allowed else NO_ACCESS, started)
        if not allowed:
            raise _refusal(service, "pending")
        return found

    async def requests(self, service: Agency, now: datetime) -> list[Request]:
        """Open requests, oldest first; :class:`NotManagerError` for another service."""
        started, allowed = time.perf_counter(), service is MANAGER
        async with self._db.transaction() as conn:
            found: list[Request] = []
            if allowed:
                t = ocam_requests
                rows = await conn.execute(
                    select(t.c.request_id, t.c.requested_at, t.c.service, t.c.verb,
                           t.c.subject_id, t.c.query, t.c.purpose)
                    .where(t.c.status == OPEN).order_by(t.c.requested_at, t.c.request_id))
                found = [Request(**r) for r in rows.mappings()]
            await self._log(conn, service, "requests", now, REQUESTS if allowed else NO_ACCESS)
        observe_consultation(self._metrics, "requests", REQUESTS if allowed else NO_ACCESS,
                             started)
        if not allowed:
            raise _refusal(service, "requests")
        return found

    async def answer(
        self, service: Agency, request: str, reply: Reply, now: datetime
    ) -> dict[str, Any]:
        """Record OCAM's ``reply`` to an open request and queue the ``OcamAnswer`` for the
        requesting service's topic; returns that message. Otherwise :class:`NotManagerError`,
        :class:`UnknownRequestError` or :class:`AlreadyAnsweredError` (the attempt logged)."""
        started = time.perf_counter()
        # another service is refused first, whatever REQUEST is; OCAM's typos are usage errors
        request_id = request_id_of(request) if service is MANAGER else request[:36]
        failure: PlanrError | None = None
        message: dict[str, Any] = {}
        async with self._db.transaction() as conn:
            row = None
            if service is not MANAGER:
                failure, cls = _refusal(service, "answer"), NO_ACCESS
            else:
                row = (await conn.execute(
                    select(ocam_requests).where(ocam_requests.c.request_id == request_id)
                    .with_for_update())).mappings().first()
                failure, cls = _check_open(request_id, row)
            outgoing = []
            if row is not None and failure is None:
                message = await self._record(conn, row, reply, now)
                outgoing.append(outbox_row(message["answer_id"], OCAM_ANSWER_KIND,
                                           message["service"],
                                           self._codec.encode(OCAM_ANSWER, message), now))
            await self._log(conn, service, "answer", now, cls, messages=outgoing,
                            subject_id=row["subject_id"] if row is not None else None,
                            query=f"request={request_id}")
        observe_consultation(self._metrics, "answer", cls, started)
        if failure is not None:
            raise failure
        return message

    async def _record(
        self, conn: AsyncConnection, row: Any, reply: Reply, now: datetime
    ) -> dict[str, Any]:
        message = {
            "answer_id": answer_id(row["request_id"]), "request_id": row["request_id"],
            "service": row["service"], "requested_at": row["requested_at"],
            "verb": row["verb"], "subject_id": row["subject_id"], "query": row["query"],
            "answer": reply.value, "answered_at": now, "answered_by": MANAGER.value,
        }
        await conn.execute(
            ocam_requests.update().where(ocam_requests.c.request_id == row["request_id"])
            .values(status=ANSWERED, answer=reply.value, answered_at=now,
                    answered_by=MANAGER.value, answer_id=message["answer_id"]))
        return message

    async def _log(
        self,
        conn: AsyncConnection,
        service: Agency,
        verb: str,
        now: datetime,
        answer_class: str,
        *,
        subject_id: str | None = None,
        query: str = "",
        messages: Sequence[dict[str, Any]] = (),
    ) -> None:
        row = {"consultation_id": str(uuid.uuid4()), "consulted_at": now,
               "service": service.value, "access_mode": self._access.mode(service).value,
               "verb": verb, "subject_id": subject_id, "query": query, "purpose": "",
               "answer_class": answer_class}
        await record_consultation(conn, self._codec, self._metrics, row, messages)


def _refusal(service: Agency, verb: str) -> NotManagerError:
    """The same refusal whatever the store holds: it names the service and the verb only."""
    return NotManagerError(f"ftf {verb} is OCAM's worklist: {service.value} may not use it")


def _check_open(request_id: str, row: Any) -> tuple[PlanrError | None, str]:
    if row is None:
        return UnknownRequestError(f"no request {request_id}"), UNKNOWN_REQUEST
    if row["status"] != OPEN:
        return (AlreadyAnsweredError(f"request {request_id} was already answered "
                                f"({row['answer']}, {_iso(row['answered_at'])})"),
                ALREADY_ANSWERED)
    return None, ANSWERED


async def _proposed(conn: AsyncConnection) -> list[PendingFiche]:
    f, c = fiches, contributions
    feeders: dict[str, list[Feeder]] = defaultdict(list)
    rows = await conn.execute(
        select(c.c.subject_id, c.c.agency, func.count().label("n"),
               func.min(c.c.published_at).label("first_at"),
               func.max(c.c.published_at).label("last_at"))
        .join(f, f.c.subject_id == c.c.subject_id).where(f.c.state == PROPOSED)
        .group_by(c.c.subject_id, c.c.agency))
    for r in rows:
        feeders[r.subject_id].append(Feeder(r.agency, int(r.n), r.first_at, r.last_at))
    out = []
    for r in (await conn.execute(
            select(f.c.subject_id, f.c.kind, f.c.statuses, f.c.first_info_at, f.c.last_info_at,
                   f.c.contributions).where(f.c.state == PROPOSED))):
        fed = tuple(sorted(feeders.get(r.subject_id, []), key=lambda x: (x.first_at, x.agency)))
        waiting = fed[0].first_at if fed else r.first_info_at
        out.append(PendingFiche(r.subject_id, r.kind, tuple(sorted(split_labels(r.statuses))),
                                waiting, r.first_info_at, r.last_info_at, r.contributions, fed))
    return sorted(out, key=lambda p: (p.waiting_since, p.subject_id))


async def read_answers(
    conn: KafkaConnection, topics: Topics, codec: Codec, service: Agency
) -> AsyncIterator[dict[str, Any]]:
    """OCAM's answers to ``service``'s requests, read from its own answers topic (no group)."""
    if service not in answer_recipients():
        raise UsageError(f"{service.value} answers the requests: it has no answers topic")
    async for rec in read_topic(conn, topics.ftf_ocam_answers(service)):
        message = codec.decode(rec.value, OCAM_ANSWER)
        if message["service"] != service.value:
            log.warning("ftf.answer_misaddressed", answer_id=message["answer_id"],
                        offset=rec.offset)
            continue
        yield {k: _iso(v) if isinstance(v, datetime) else v for k, v in message.items()}


def answer_line(message: dict[str, Any]) -> str:
    asked = message["subject_id"] or f"({message['query']})"
    return (f"{message['request_id']}  {message['answered_at']}  {message['verb']:<5} "
            f"{asked}  {message['answer']}")
