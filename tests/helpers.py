"""Small builders shared by tests."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from planr.domain import Agency
from planr.kafka import KafkaConnection
from planr.telemetry import Metrics
from planr.topics import Topics
from producers.publisher import Publisher
from schemas.codec import Codec
from schemas.models import SignalIn

SECRET_SUMMARY = "SUMMARY-MUST-NOT-LEAK"


def signal_json(**overrides: Any) -> dict[str, Any]:
    """The DESIGN.md example signal, with overrides (nested keys replace whole objects)."""
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


async def publish_all(
    conn: KafkaConnection,
    topics: Topics,
    codec: Codec,
    metrics: Metrics,
    signals: list[tuple[Agency, SignalIn]],
) -> list[str]:
    by_agency: dict[Agency, list[SignalIn]] = defaultdict(list)
    for agency, s in signals:
        by_agency[agency].append(s)
    ids: list[str] = []
    for agency, batch in by_agency.items():
        async with Publisher(conn=conn, agency=agency, topics=topics, codec=codec,
                             metrics=metrics) as pub:
            ids.extend(await pub.publish_many(batch))
    return ids
