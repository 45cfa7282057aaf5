"""The agency publisher: one per publishing service; every signal it sends is signed with the
agency's own key (:mod:`planr.signing`), which the router checks before anything else.

:meth:`Publisher.publish_many` signs its signals in chunks of
:data:`~planr.batching.CHUNK_RECORDS` (one Ed25519 signature per chunk, a proof per record), so
the router's check costs one signature verification per chunk too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from planr.batching import CHUNK_RECORDS
from planr.domain import Agency
from planr.errors import UsageError
from planr.kafka import KafkaConnection, make_producer
from planr.lifecycle import Service
from planr.signing import Signer, sign_chunk, sign_headers
from planr.telemetry import Metrics
from planr.topics import Topics
from schemas.codec import Codec
from schemas.models import SignalIn
from schemas.names import SIGNAL, WITHDRAWAL

log = structlog.get_logger(__name__)


class Publisher(Service):
    """Publishes an agency's signals to its ingress topic, keyed by subject id, ``acks=all``,
    each signed by ``signer`` (a key owned by ``agency``; UsageError otherwise).

    ``start()``/``stop()`` or ``async with``; ``stop()`` is idempotent and flushes.
    """

    def __init__(
        self,
        *,
        conn: KafkaConnection,
        agency: Agency,
        topics: Topics,
        codec: Codec,
        metrics: Metrics,
        signer: Signer,
    ) -> None:
        if signer.owner != agency.value:
            raise UsageError(f"signer: key {signer.key_id} belongs to {signer.owner}, "
                             f"not to the publishing agency {agency.value}")
        self.agency = agency
        self._signer = signer
        self._topic = topics.ingress(agency)
        self._codec = codec
        self._metrics = metrics
        self._conn = conn
        self._producer: AIOKafkaProducer  # created in start()

    async def _open(self) -> None:
        self._producer = make_producer(self._conn)
        await self._producer.start()

    async def _close(self) -> None:
        await self._producer.stop()  # flushes pending sends

    def _record(self, signal: SignalIn) -> dict[str, Any]:
        if signal.agency is not None and signal.agency is not self.agency:
            raise UsageError("agency: the signal claims another agency than its publisher")
        return signal.to_avro(self.agency, datetime.now(UTC))

    async def _enqueue(self, signals: list[SignalIn]) -> list[asyncio.Future[Any]]:
        """Encode and sign ``signals`` as one chunk and hand them to the producer, in order."""
        values = [self._codec.encode(SIGNAL, self._record(s)) for s in signals]
        signed = sign_chunk(self._signer, [(self._topic, v) for v in values])
        futures: list[asyncio.Future[Any]] = []
        for signal, value, headers in zip(signals, values, signed, strict=True):
            futures.append(await self._producer.send(
                self._topic, value=value, key=signal.subject.id.encode(), headers=headers))
        return futures

    async def publish(self, signal: SignalIn) -> str:
        """Publish one signal and wait for the acknowledgement; returns its event id."""
        await (await self._enqueue([signal]))[0]
        self._metrics.signals_published.labels(self.agency.value).inc()
        return str(signal.event_id)

    async def withdraw(self, event_id: str, *, subject_id: str, version: int) -> None:
        """Withdraw one of this agency's signals (every holder gets a retraction); waits for
        the acknowledgement. ``version`` is the latest version published."""
        record = {"event_id": str(uuid.UUID(event_id)), "agency": self.agency.value,
                  "subject_id": subject_id, "version": version,
                  "withdrawn_at": datetime.now(UTC)}
        value = self._codec.encode(WITHDRAWAL, record)
        await (await self._producer.send(self._topic, value=value, key=subject_id.encode(),
                                         headers=sign_headers(self._signer, self._topic, value)))
        log.info("publisher.withdrawn", agency=self.agency.value, event_id=record["event_id"],
                 version=version)

    async def publish_many(self, signals: Iterable[SignalIn]) -> list[str]:
        """Publish many signals, pipelined and signed in chunks; returns once every one is
        acknowledged."""
        futures: list[asyncio.Future[Any]] = []
        ids: list[str] = []
        chunk: list[SignalIn] = []
        for s in signals:
            chunk.append(s)
            ids.append(str(s.event_id))
            if len(chunk) == CHUNK_RECORDS:
                futures += await self._enqueue(chunk)
                chunk = []
        if chunk:
            futures += await self._enqueue(chunk)
        await asyncio.gather(*futures)
        self._metrics.signals_published.labels(self.agency.value).inc(len(ids))
        log.debug("publisher.acknowledged", agency=self.agency.value, count=len(ids))
        return ids
