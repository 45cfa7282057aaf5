"""Read a topic from its beginning up to its current end, without a consumer group.

The end of each partition is taken from the high watermark that fetch responses carry, not
from ``end_offsets()``: Tansu (the embedded broker) answers ListOffsets(latest) with the base
offset of the last record batch plus one, which is short of the real end after a batch of
several records.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiokafka import ConsumerRecord, TopicPartition

from planr.errors import PlanrError
from planr.kafka import KafkaConnection, make_consumer


async def read_topic(
    conn: KafkaConnection, topic: str, *, stall_timeout: float = 15.0
) -> AsyncIterator[ConsumerRecord]:
    """Yield every record of ``topic`` that exists now, in order within each partition."""
    consumer = make_consumer(conn, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes the metadata of every topic
        numbers = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(numbers)]
        if not tps:
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = set(tps)
        last_progress = time.monotonic()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    yield rec
            if batch:
                last_progress = time.monotonic()
            for tp in list(remaining):
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    remaining.discard(tp)
            if remaining and time.monotonic() - last_progress > stall_timeout:
                raise PlanrError(f"reading {topic} stalled: no end of partition in sight")
    finally:
        await consumer.stop()
