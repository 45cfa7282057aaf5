"""Histories for the common database and the inboxes, and the deliveries the router would
write for them (to feed a projector or an inbox without running a router)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from planr.domain import Agency, Recipient, RecipientClass
from routing.outputs import delivery_id
from routing.setup import RoutingSetup
from schemas.codec import Codec
from schemas.models import SignalIn
from schemas.names import DELIVERY, RETRACTION

#: OCAM twice: about a third of the history carries OCAM's decisions.
FEEDERS = (Agency.OCAM, Agency.OCAM, Agency.VSSE, Agency.POLFED, Agency.POLLOC, Agency.AFFETR)
COMMUNES = ("21004", "11002", "44021", "62063")


def ftf_history(rng: random.Random, n: int, subjects: int = 600) -> list[SignalIn]:
    """``n`` unclassified signals about ``subjects`` persons, with OCAM decisions."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for _ in range(n):
        agency = rng.choice(FEEDERS)
        ocam = None
        if agency is Agency.OCAM or rng.random() < 0.05:
            ocam = {"action": rng.choice(("include", "include", "remove", None)),
                    "threat_level": rng.choice((1, 2, 3, 4, None)),
                    "basis": rng.choice(("serious_indications", "established", None))}
        out.append(SignalIn.model_validate({
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "agency": agency.value,
            "occurred_at": (t0 + timedelta(minutes=rng.randrange(500_000))).isoformat(),
            "subject": {"id": f"P-{rng.randrange(subjects):04d}", "kind": "person",
                        "statuses": rng.sample(["FTF", "HTF", "PH", "EPV", "CTE"], k=1)},
            "location": {"municipality": rng.choice(COMMUNES)},
            "phenomena": ["salafism"], "classification": "unclassified", "handling": "H0",
            "tlp": "amber", "reliability": "B", "accuracy": 2,
            **({"ocam": ocam} if ocam else {}),
        }))
    return out


def routed_delivery(
    setup: RoutingSetup,
    s: SignalIn,
    recipient: Recipient,
    *,
    rule: str,
    view: str,
    published_at: datetime | None = None,
) -> bytes:
    """The ``Delivery`` the router would write for ``s`` to ``recipient``."""
    if s.agency is None:
        raise ValueError("the signal must name its agency")
    record: dict[str, Any] = s.to_avro(s.agency, published_at or s.occurred_at)
    version = setup.engine.version
    value: bytes = setup.codec.encode(DELIVERY, {
        "delivery_id": delivery_id(record["event_id"], recipient),
        "event_id": record["event_id"], "recipient": str(recipient), "rule": rule,
        "rules": [rule], "policy_version": version, "routed_at": record["published_at"],
        "view": view, "payload": setup.views.render(view, record),
        "version": record["version"],
    })
    return value


def ftf_delivery(setup: RoutingSetup, s: SignalIn, published_at: datetime | None = None) -> bytes:
    """The delivery to the common-database projector (published a minute after it occurred)."""
    return routed_delivery(setup, s, Recipient(RecipientClass.FTF_DB), rule="ftf-db-statuses",
                           view="ftf_db",
                           published_at=published_at or s.occurred_at + timedelta(minutes=1))


def tfl_delivery(setup: RoutingSetup, s: SignalIn, arrondissement: str = "brussel") -> bytes:
    """The delivery to a local taskforce's inbox."""
    return routed_delivery(setup, s, Recipient(RecipientClass.TFL, arrondissement),
                           rule="tfl-territory", view="tfl")


def retraction_record(codec: Codec, *, delivery_id: str, event_id: str, recipient: Recipient,
                      version: int, reason: str, at: datetime) -> bytes:
    """The ``Retraction`` the router writes to take back a delivery."""
    value: bytes = codec.encode(RETRACTION, {
        "retraction_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{delivery_id}|{version}|{reason}")),
        "delivery_id": delivery_id, "event_id": event_id, "recipient": str(recipient),
        "version": version, "reason": reason, "policy_version": "test", "retracted_at": at,
    })
    return value
