"""Batched produce: fill one aiokafka record batch per topic-partition, send it whole, and
wait for every acknowledgement at once.

Per-message ``send()`` costs a future, a partitioner call and accumulator work per record;
filling :meth:`AIOKafkaProducer.create_batch` builders amortises that over a whole batch.
Partitions are chosen like the Java client's default partitioner (murmur2 of the key), so
keyed records land where any other producer would put them; the hash is memoised because one
signal yields many records with the same key.

With a :class:`~planr.signing.Signer`, every record is signed once as it is added (its
signature headers travel in the record batch).
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from planr.errors import DeliveryError
from planr.signing import Signer, sign_headers


@lru_cache(maxsize=65_536)
def _hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


class BatchSender:
    """Collects records for one unit of work; :meth:`flush` sends and awaits them all."""

    def __init__(self, producer: AIOKafkaProducer, *, signer: Signer | None = None) -> None:
        self._producer = producer
        self._signer = signer
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], Any] = {}
        self._sent: list[asyncio.Future[Any]] = []
        self._round_robin = 0
        self.records = 0

    async def _partition(self, topic: str, key: bytes | None) -> int:
        parts = self._partitions.get(topic)
        if parts is None:
            found = await self._producer.partitions_for(topic)
            parts = self._partitions[topic] = sorted(found)
        if key is None:
            self._round_robin += 1
            return parts[self._round_robin % len(parts)]
        return parts[_hash(key) % len(parts)]

    async def add(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Add one record; with a signer, its signature headers follow ``headers``."""
        if self._signer is not None:
            headers = [*(headers or ()), *sign_headers(self._signer, topic, value)]
        partition = await self._partition(topic, key)
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            self._sent.append(await self._producer.send_batch(batch, topic, partition=partition))
            batch = self._open[slot] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise DeliveryError(f"a record for {topic} is larger than a whole batch")
        self.records += 1

    async def flush(self) -> int:
        """Send every open batch and wait until the broker acknowledged all records added
        since the last flush; returns their number. Raises DeliveryError otherwise."""
        for (topic, partition), batch in self._open.items():
            if batch.record_count():
                self._sent.append(await self._producer.send_batch(batch, topic,
                                                                  partition=partition))
        self._open.clear()
        sent, self._sent = self._sent, []
        count, self.records = self.records, 0
        try:
            await asyncio.gather(*sent)
        except Exception as exc:
            raise DeliveryError(f"{count} records were not acknowledged by the broker") from exc
        return count
