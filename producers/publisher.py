"""The agency publisher: one per publishing service; every signal it sends is signed with the
agency's own key (:mod:`planr.signing`), which the router checks before anything else.

:meth:`Publisher.publish_many` signs its signals in chunks of
:data:`~planr.batching.CHUNK_RECORDS` (one Ed25519 signature per chunk, a proof per record), so
the router's check costs one signature verification per chunk too. It fills its own record
batches (:class:`~planr.batching.SharedSender`: partitions chosen as Kafka's default
partitioner chooses them; the calls made while a group is being acknowledged are sent together
as the next group), so its producer does not linger: a group leaves as soon as it is built."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaProducer

from planr.batching import SharedSender
from planr.domain import Agency
from planr.errors import UsageError
from planr.kafka import KafkaConnection, make_producer
from planr.lifecycle import Service
from planr.signing import Signer, sign_headers
from planr.telemetry import Metrics
from planr.topics import Topics
from schemas.codec import Codec
from schemas.models import SignalIn
from schemas.names import SIGNAL, WITHDRAWAL

log = structlog.get_logger(__name__)

#: The publisher fills its own record batches, so its producer has nothing to wait for: a
#: linger would only hold every group's last batches back (5 ms by default;
#: docs/benchmarks.md).
PRODUCER_LINGER_MS = 0


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
        self._out: SharedSender

    async def _open(self) -> None:
        self._producer = make_producer(self._conn, linger_ms=PRODUCER_LINGER_MS)
        self._out = SharedSender(self._producer, signer=self._signer)
        await self._producer.start()

    async def _close(self) -> None:
        try:
            await self._out.drain()  # the calls under way get their outcome
        finally:
            await self._producer.stop()  # flushes pending sends

    async def _send(self, signals: Iterable[SignalIn]) -> list[str]:
        """Encode each signal and send it, signed in chunks, in record batches shared with
        the calls under way (:class:`~planr.batching.SharedSender`); returns their event ids,
        in order, once the broker acknowledged every one. A signal that claims another agency
        is a UsageError, raised before anything is sent."""
        signals = list(signals)
        if any(s.agency is not None and s.agency is not self.agency for s in signals):
            raise UsageError("agency: the signal claims another agency than its publisher")
        await self._out.send((self._topic,
                              self._codec.encode(SIGNAL, s.to_avro(self.agency, datetime.now(UTC))),
                              s.subject.id.encode()) for s in signals)
        return [str(s.event_id) for s in signals]

    async def publish(self, signal: SignalIn) -> str:
        """Publish one signal and wait for the acknowledgement; returns its event id."""
        await self._send([signal])
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
        """Publish many signals, signed in chunks, in record batches; returns their event ids
        once every one is acknowledged (DeliveryError otherwise: some may have been written,
        and publishing them again is safe, since the router treats a repeated version as a
        duplicate)."""
        ids = await self._send(signals)
        self._metrics.signals_published.labels(self.agency.value).inc(len(ids))
        log.debug("publisher.acknowledged", agency=self.agency.value, count=len(ids))
        return ids
