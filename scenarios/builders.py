"""Build single signals (JSON form or model) with overrides, and publish lists of them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from planr.domain import Agency
from planr.kafka import KafkaConnection
from planr.signing import Signer
from planr.telemetry import Metrics
from planr.topics import Topics
from producers.publisher import Publisher
from schemas.codec import Codec
from schemas.models import SignalIn

#: A marker placed in summaries, so that tests can prove it never leaks.
SECRET_SUMMARY = "SUMMARY-MUST-NOT-LEAK"  # noqa: S105 - a marker, not a password
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def signal_json(**overrides: Any) -> dict[str, Any]:
    """A complete example signal in the JSON form, with overrides (nested keys replace whole
    objects)."""
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-27T18:05:00Z",
        "subject": {"id": "P-1042", "kind": "person", "statuses": ["FTF"]},
        "location": {"municipality": "21004"},
        "phenomena": ["salafism"],
        "domains": ["internet"],
        "classification": "unclassified",
        "handling": "H0",
        "tlp": "amber",
        "reliability": "B",
        "accuracy": 2,
        "local_sharing": False,
        "named_recipients": [],
        "summary": SECRET_SUMMARY,
        "ftf": {"situation": "returned", "country": "SY"},
    }
    base.update(overrides)
    return base


def make_signal(**overrides: Any) -> SignalIn:
    return SignalIn.model_validate(signal_json(**overrides))


def numbered_signal(
    n: int,
    *,
    subject: str = "P-1",
    agency: Agency = Agency.VSSE,
    statuses: tuple[str, ...] = ("FTF",),
    municipality: str = "21004",
    ocam: dict[str, Any] | None = None,
    at: datetime | None = None,
    ftf: dict[str, Any] | None = None,
) -> SignalIn:
    """Signal number ``n``: a fixed event id and time derived from ``n``, unclassified."""
    data: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=n + 1, version=4)),
        "occurred_at": (at or T0 + timedelta(hours=n)).isoformat(),
        "subject": {"id": subject, "kind": "person", "statuses": list(statuses)},
        "location": {"municipality": municipality},
        "phenomena": ["salafism"],
        "classification": "unclassified", "handling": "H0", "tlp": "amber",
        "reliability": "B", "accuracy": 2, "summary": "never stored",
    }
    if ocam is not None:
        data["ocam"] = ocam
    if ftf is not None:
        data["ftf"] = ftf
    return SignalIn.model_validate({**data, "agency": agency.value})


async def publish_all(
    conn: KafkaConnection,
    topics: Topics,
    codec: Codec,
    metrics: Metrics,
    signals: list[tuple[Agency, SignalIn]],
    *,
    signers: Mapping[str, Signer],
) -> list[str]:
    """Publish each signal as its agency, signed with ``signers[agency id]``; the event ids,
    grouped by agency."""
    by_agency: dict[Agency, list[SignalIn]] = defaultdict(list)
    for agency, s in signals:
        by_agency[agency].append(s)
    ids: list[str] = []
    for agency, batch in by_agency.items():
        async with Publisher(conn=conn, agency=agency, topics=topics, codec=codec,
                             metrics=metrics, signer=signers[agency.value]) as pub:
            ids.extend(await pub.publish_many(batch))
    return ids
