"""The one way to build a ``DeadLetter`` record from a consumed record that failed.

``reason`` and ``detail`` must be labels and field names, never content; the original bytes
are kept so that nothing is lost."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord


def dead_letter_record(
    rec: ConsumerRecord, reason: str, detail: str, failed_at: datetime | None = None
) -> dict[str, Any]:
    return {
        "reason": reason,
        "detail": detail,
        "source_topic": rec.topic,
        "source_partition": rec.partition,
        "source_offset": rec.offset,
        "original_key": rec.key,
        "original": rec.value if rec.value is not None else b"",
        "failed_at": failed_at or datetime.now(UTC),
    }
