"""Admission: what the router checks of an input record before anything else.

A record must be signed by the owner of its topic (a registered key, valid now: the agency
that owns an ingress topic, the projector for the common database's removals; see
:mod:`planr.signing`), decode as a ``Signal`` or a ``Withdrawal`` (or a removal), claim the
agency that owns its topic, and validate. A record that fails goes to the dead-letter topic
with a reason (the field path, never the value) and is never decoded further.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from aiokafka import ConsumerRecord

from planr.errors import InvalidSignalError, PlanrError
from planr.signing import PROJECTOR, KeyRegistry, SignatureError, verify_record
from planr.topics import Topics
from routing.emitter import Emitter
from routing.engine import Facts
from schemas.codec import Codec
from schemas.names import FTF_REMOVAL, SIGNAL, WITHDRAWAL
from schemas.validation import validate_signal_record, validate_withdrawal_record

log = structlog.get_logger(__name__)

__all__ = ["Admission", "Admitted"]


@dataclass
class Admitted:
    """A record that passed authentication, decoding and validation."""

    rec: ConsumerRecord
    kind: str  # SIGNAL, WITHDRAWAL or FTF_REMOVAL
    record: dict[str, Any]
    facts: Facts | None = None

    @property
    def event_id(self) -> str:
        return str(self.record["event_id"])


class Admission:
    """Checks the router's input records (see the module documentation)."""

    def __init__(self, *, registry: KeyRegistry, topics: Topics, codec: Codec) -> None:
        self._registry = registry
        self._topics = topics
        self._codec = codec

    async def authentic(self, rec: ConsumerRecord, now: datetime, emit: Emitter) -> bool:
        """Whether ``rec`` is signed by the owner of its topic (the agency of an ingress topic,
        the projector for removals); if not, it is dead-lettered (``unauthenticated``, the
        sub-reason and key id) and never decoded."""
        agency = self._topics.agency_of_ingress(rec.topic)
        owner = PROJECTOR if rec.topic == self._topics.ftf_removals else (
            agency.value if agency is not None else None)
        if owner is None:
            await emit.dead_letter(rec, "agency_mismatch", "not an ingress topic")
            return False
        if rec.value is None:
            await emit.dead_letter(rec, "undecodable", "record has no value (tombstone)")
            return False
        try:
            verify_record(self._registry, rec.topic, rec.value, rec.headers, at=now,
                          expected_owner=owner)
        except SignatureError as exc:
            log.warning("router.unauthenticated", topic=rec.topic, partition=rec.partition,
                        offset=rec.offset, detail_reason=exc.detail_reason, key_id=exc.key_id)
            await emit.dead_letter(rec, exc.reason, exc.detail)
            return False
        return True

    async def admit(self, rec: ConsumerRecord, now: datetime,
                     emit: Emitter) -> Admitted | None:
        """Check and decode one record; a bad one is dead-lettered and ``None`` returned."""
        if not await self.authentic(rec, now, emit):
            return None
        try:
            if rec.topic == self._topics.ftf_removals:
                return Admitted(rec, FTF_REMOVAL, self._codec.decode(rec.value, FTF_REMOVAL))
            kind = self.ingress_kind(rec)
            record = self._codec.decode(rec.value, kind)
            expected = self._topics.agency_of_ingress(rec.topic)
            if expected is None or record["agency"] != expected.value:
                await emit.dead_letter(rec, "agency_mismatch",
                                       "claimed agency does not own this ingress topic")
                return None
            if kind == WITHDRAWAL:
                return Admitted(rec, kind, validate_withdrawal_record(record))
            validate_signal_record(record, now=now)
            return Admitted(rec, kind, record, Facts.of(record))
        except InvalidSignalError as exc:  # the field path, never the value
            await emit.dead_letter(rec, exc.reason, exc.field or str(exc))
        except PlanrError as exc:
            await emit.dead_letter(rec, exc.reason, str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            await emit.dead_letter(rec, "invalid_signal", type(exc).__name__)
        return None

    def ingress_kind(self, rec: ConsumerRecord) -> str:
        kind: str = self._codec.writer_of(rec.value).name
        if kind not in (SIGNAL, WITHDRAWAL):
            raise InvalidSignalError(f"a {kind} has no place on an ingress topic",
                                     reason="unexpected_record")
        return kind
