"""Read a topic from its beginning up to its current end, without a consumer group."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import ConsumerRecord, TopicPartition

from planr.kafka import KafkaConnection, make_consumer


async def read_topic(conn: KafkaConnection, topic: str) -> AsyncIterator[ConsumerRecord]:
    """Yield every record of ``topic`` that exists now, partition by partition in order."""
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
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset < end[tp]:
                        yield rec
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
