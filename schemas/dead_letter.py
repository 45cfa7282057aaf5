"""The one way to build a ``DeadLetter`` record from a consumed record that failed.

``reason`` and ``detail`` must be labels and field names, never content; the original bytes
are kept so that nothing is lost, up to :data:`MAX_COPIED_BYTES`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord

MAX_COPIED_BYTES = 512 * 1024
"""The largest original (value and key together) a dead letter copies. A dead letter must
always fit under the broker's maximum message size (Kafka's default: 1 MiB) and the
producer's maximum request size, or the consumer writing it could never get past the bad
record. A larger original is not copied (``original`` empty, ``original_key`` null): it stays
where it was written, at ``source_topic``/``source_partition``/``source_offset``, and the
detail ends with :data:`NOT_COPIED`."""

NOT_COPIED = "; original not copied"


def dead_letter_record(
    rec: ConsumerRecord, reason: str, detail: str, failed_at: datetime | None = None
) -> dict[str, Any]:
    value: bytes = rec.value if rec.value is not None else b""
    key: bytes | None = rec.key
    size = len(value) + len(key or b"")
    if size > MAX_COPIED_BYTES:
        value, key = b"", None
        detail = f"{detail}{NOT_COPIED} ({size} bytes)"
    return {
        "reason": reason,
        "detail": detail,
        "source_topic": rec.topic,
        "source_partition": rec.partition,
        "source_offset": rec.offset,
        "original_key": key,
        "original": value,
        "failed_at": failed_at or datetime.now(UTC),
    }
