"""The records the router writes, built from ids, labels and the view payload: deliveries,
retractions, audit records and NTF facts. Pure functions: the router encodes, signs and
produces what they return.

Ids are deterministic, so that a replayed batch writes the same records for sinks to
deduplicate: a delivery id depends on the event and the recipient only (the same for every
version of the event, and under every policy version); a retraction id on the delivery, the
version and the reason. They are RFC 4122 name-based (SHA-1, version 5) UUIDs, computed by
:func:`uuid5_str` (the values of :func:`uuid.uuid5`, without building UUID objects).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from planr.domain import Recipient
from routing.engine import Decision

DELIVERY_NS = uuid.UUID("6f1c3a52-6d7e-4bd4-9a51-3e0d6c1f8a27")
RETRACTION_NS = uuid.UUID("2a9d1f47-8c3e-4b61-9e05-7d4c2b1a0f38")

#: the variant nibble (RFC 4122: binary 10xx) for each hex digit of the hash
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}
_HASHED_NS: dict[uuid.UUID, Any] = {}

#: A time as the records carry it: an aware datetime, or microseconds since the Unix epoch
#: (what Avro's ``timestamp-micros`` stores; the router converts its batch time once).
Stamp = datetime | int
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def epoch_micros(at: datetime) -> int:
    """``at`` (timezone-aware) in microseconds since the Unix epoch."""
    if at.tzinfo is None:
        raise ValueError("a record's time must be timezone-aware")
    return (at - _EPOCH) // _MICRO


def uuid5_str(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``: the namespace is hashed once and copied; the
    version and variant are set on the hex digest."""
    prefix = _HASHED_NS.get(namespace)
    if prefix is None:
        prefix = _HASHED_NS[namespace] = hashlib.sha1(namespace.bytes, usedforsecurity=False)
    h = prefix.copy()
    h.update(name.encode())
    d = h.hexdigest()
    return f"{d[:8]}-{d[8:12]}-5{d[13:16]}-{_VARIANT[d[16]]}{d[17:20]}-{d[20:32]}"


def delivery_id(event_id: str, recipient: Recipient | str) -> str:
    """The id of everything ``recipient`` receives of one event, every version included."""
    return uuid5_str(DELIVERY_NS, f"{event_id}|{recipient}")


def retraction_id(delivery: str, version: int, reason: str) -> str:
    return uuid5_str(RETRACTION_NS, f"{delivery}|{version}|{reason}")


def envelope(d: Decision, *, event_id: str, version: int, policy_version: str,
             routed_at: Stamp, payload: bytes, delivery: str | None = None) -> dict[str, Any]:
    """The ``Delivery`` of one allowed decision (``delivery``: its id, when already known)."""
    return {
        "delivery_id": delivery or delivery_id(event_id, d.recipient_id),
        "event_id": event_id,
        "recipient": d.recipient_id,
        "rule": d.rule,
        "rules": list(d.rules),
        "policy_version": policy_version,
        "routed_at": routed_at,
        "view": d.view,
        "payload": payload,
        "version": version,
    }


def retraction(*, delivery: str, event_id: str, recipient: str, version: int, reason: str,
               policy_version: str, at: Stamp) -> dict[str, Any]:
    """The ``Retraction`` that takes back every version up to ``version`` of a delivery."""
    return {
        "retraction_id": retraction_id(delivery, version, reason),
        "delivery_id": delivery,
        "event_id": event_id,
        "recipient": recipient,
        "version": version,
        "reason": reason,
        "policy_version": policy_version,
        "retracted_at": at,
    }


def audit(decisions: Sequence[Decision], delivery_ids: Sequence[str | None], *,
          event_id: str, agency: str, version: int, policy_version: str,
          decided_at: Stamp) -> dict[str, Any]:
    """The ``RoutingDecision`` of one signal: every candidate's decision (recipient, outcome,
    deciding and matching rules, view, the delivery id of an allowed one), ids and labels
    only. ``delivery_ids`` holds, per decision, its delivery id (``None`` when denied)."""
    return {
        "event_id": event_id,
        "agency": agency,
        "version": version,
        "policy_version": policy_version,
        "decided_at": decided_at,
        "decisions": [
            {
                "recipient": d.recipient_id,
                "outcome": "allow" if d.allowed else "deny",
                "rule": d.rule,
                "rules": list(d.rules),
                "delivery_id": did,
                "view": d.view,
            }
            for d, did in zip(decisions, delivery_ids, strict=True)
        ],
    }
