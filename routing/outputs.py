"""The records the router writes, built from ids, labels and the view payload: deliveries,
retractions, audit records and NTF facts. Pure functions: the router encodes, signs and
produces what they return.

Ids are deterministic, so that a replayed batch writes the same records for sinks to
deduplicate: a delivery id depends on the event and the recipient only (the same for every
version of the event, and under every policy version); a retraction id on the delivery, the
version and the reason.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from planr.domain import Recipient
from routing.engine import Decision

DELIVERY_NS = uuid.UUID("6f1c3a52-6d7e-4bd4-9a51-3e0d6c1f8a27")
RETRACTION_NS = uuid.UUID("2a9d1f47-8c3e-4b61-9e05-7d4c2b1a0f38")


def delivery_id(event_id: str, recipient: Recipient | str) -> str:
    """The id of everything ``recipient`` receives of one event, every version included."""
    return str(uuid.uuid5(DELIVERY_NS, f"{event_id}|{recipient}"))


def retraction_id(delivery: str, version: int, reason: str) -> str:
    return str(uuid.uuid5(RETRACTION_NS, f"{delivery}|{version}|{reason}"))


def envelope(d: Decision, *, event_id: str, version: int, policy_version: str,
             routed_at: datetime, payload: bytes) -> dict[str, Any]:
    """The ``Delivery`` of one allowed decision."""
    return {
        "delivery_id": delivery_id(event_id, d.recipient),
        "event_id": event_id,
        "recipient": str(d.recipient),
        "rule": d.rule,
        "rules": list(d.rules),
        "policy_version": policy_version,
        "routed_at": routed_at,
        "view": d.view,
        "payload": payload,
        "version": version,
    }


def retraction(*, delivery: str, event_id: str, recipient: str, version: int, reason: str,
               policy_version: str, at: datetime) -> dict[str, Any]:
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


def audit(d: Decision, *, event_id: str, agency: str, version: int, policy_version: str,
          decided_at: datetime) -> dict[str, Any]:
    """The ``RoutingDecision`` of one candidate: ids and labels only."""
    return {
        "event_id": event_id,
        "agency": agency,
        "recipient": str(d.recipient),
        "outcome": "allow" if d.allowed else "deny",
        "rule": d.rule,
        "rules": list(d.rules),
        "policy_version": policy_version,
        "delivery_id": delivery_id(event_id, d.recipient) if d.allowed else None,
        "decided_at": decided_at,
        "version": version,
    }
