"""The baselines the planr router is measured against, on the same input and broker.

- **floor**: the raw fan-out floor. ``getmany``, then for each input record the very output
  records the planr router wrote for it in this run (bytes, keys, headers and partitions, from
  :attr:`Workload.profile`), added to aiokafka ``create_batch`` builders and sent with
  ``send_batch``; await the acknowledgements; commit. No decoding, no deciding, no signing:
  what the wire allows for the same outputs.
- **naive**: the obvious hand-written router with aiokafka and fastavro, one ``send()`` per
  output: verify the agency's signature (the project's ``verify_record``), decode with
  fastavro, decide with the project's policy engine (``Engine.decide``, the shipped policy),
  render each allowed view (the project's ``Views``), build and fastavro-encode each delivery,
  NTF fact and the audit record (one per signal, as the router's audit contract has it), sign
  the outputs of each signal as one chunk (``sign_chunk``, the planr record format), ``send()``
  each; await the acknowledgements; commit. No ledger.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from fastavro import schemaless_reader, schemaless_writer

from benchmarks.workload import Workload, warm
from planr.kafka import make_consumer, make_producer
from planr.signing import ROUTER, sign_chunk, verify_record
from routing.engine import Facts
from routing.outputs import audit, delivery_id, envelope
from schemas.codec import HEADER_LEN, MAGIC, KnownSchema
from schemas.names import DELIVERY, NTF_FACT, ROUTING_DECISION

Batch = dict[Any, list[ConsumerRecord]]


@dataclass
class Run:
    """One measured run: signals routed in the window from the first batch to the last
    acknowledged commit."""

    name: str
    signals: int
    seconds: float
    outputs: int = 0  # output records sent
    output_bytes: int = 0  # values and headers produced, when the implementation knows

    @property
    def per_s(self) -> float:
        return self.signals / self.seconds if self.seconds > 0 else 0.0


async def consume(work: Workload, group: str, name: str,
                  handle: Callable[[Batch], Awaitable[int]]) -> Run:
    """Consume the whole input in ``group``; ``handle`` produces a batch's outputs and
    returns once they are acknowledged (then the batch is committed)."""
    consumer: AIOKafkaConsumer = make_consumer(work.conn, *work.ingress, group_id=group)
    await consumer.start()
    done, first = 0, None
    try:
        while done < work.signals:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                continue
            first = first or time.perf_counter()
            done += await handle(batch)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items()})
        return Run(name, done, time.perf_counter() - (first or time.perf_counter()))
    finally:
        await consumer.stop()


async def floor(work: Workload, group: str) -> Run:
    producer: AIOKafkaProducer = make_producer(work.conn)
    await producer.start()
    await warm(producer, work.outputs())
    sent_bytes = 0
    run_outputs = [0]

    async def handle(batch: Batch) -> int:
        nonlocal sent_bytes
        builders: dict[tuple[str, int], Any] = {}
        futures = []
        for recs in batch.values():
            for rec in recs:
                for topic, part, key, value, headers in work.profile.get(
                        (rec.topic, rec.partition, rec.offset), ()):
                    b = builders.get((topic, part))
                    if b is None:
                        b = builders[(topic, part)] = producer.create_batch()
                    if b.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        futures.append(await producer.send_batch(b, topic, partition=part))
                        b = builders[(topic, part)] = producer.create_batch()
                        b.append(key=key, value=value, timestamp=None, headers=headers)
                    run_outputs[0] += 1
                    sent_bytes += len(value) + sum(len(k) + len(v) for k, v in headers)
        for (topic, part), b in builders.items():
            futures.append(await producer.send_batch(b, topic, partition=part))
        await asyncio.gather(*futures)
        return sum(len(r) for r in batch.values())

    try:
        run = await consume(work, group, "floor", handle)
    finally:
        await producer.stop()
    run.outputs, run.output_bytes = run_outputs[0], sent_bytes
    return run


class NaiveRouter:
    """The per-record logic of the naive router, shared with the Quix Streams one."""

    def __init__(self, work: Workload) -> None:
        self.work = work
        self.codec = work.setup.codec
        self.engine = work.setup.engine
        self.views = work.setup.views
        self.signer = work.keys.signer(ROUTER)
        store = self.codec.store
        self.out_schemas = {n: store.current(n) for n in (DELIVERY, NTF_FACT, ROUTING_DECISION)}
        self.sent_bytes = 0
        self.sent = 0

    def _decode(self, value: bytes) -> dict[str, Any]:
        writer = self.codec.store.writer(value[2:HEADER_LEN])
        record: dict[str, Any] = schemaless_reader(  # type: ignore[assignment]
            io.BytesIO(value[HEADER_LEN:]), writer.parsed, None)
        return record

    @staticmethod
    def _encode(known: KnownSchema, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(MAGIC)
        out.write(known.fingerprint)
        schemaless_writer(out, known.parsed, record)
        return out.getvalue()

    def outputs(self, topic: str, value: bytes, headers: Any
                ) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
        """(topic, key, value, headers) of every output of one input record."""
        now = datetime.now(UTC)
        agency = self.work.topics.agency_of_ingress(topic)
        assert agency is not None
        verify_record(self.work.keys.registry, topic, value, headers, at=now,
                      expected_owner=agency.value)
        signal = self._decode(value)
        facts = Facts.of(signal)
        key = facts.event_id.encode()
        version = int(signal.get("version", 1))
        records: list[tuple[str, str, dict[str, Any]]] = []
        decisions = self.engine.decide(facts)
        ids = [delivery_id(facts.event_id, d.recipient_id) if d.allowed else None
               for d in decisions]
        for d, did in zip(decisions, ids, strict=True):
            if d.allowed and d.view in self.views.aggregate_views:
                occurred: datetime = signal["occurred_at"]
                records.append((self.work.topics.ntf_facts, NTF_FACT, {
                    "event_id": facts.event_id, "period": occurred.strftime("%Y-%m"),
                    "arrondissement": facts.arrondissement,
                    "phenomena": sorted(facts.phenomena),
                    "policy_version": self.engine.version}))
            elif d.allowed:
                records.append((self.work.topics.delivery(d.recipient), DELIVERY, envelope(
                    d, event_id=facts.event_id, version=version,
                    policy_version=self.engine.version, routed_at=now,
                    payload=self.views.render(d.view, signal), delivery=did)))
        records.append((self.work.topics.audit, ROUTING_DECISION, audit(
            decisions, ids, event_id=facts.event_id, agency=facts.agency, version=version,
            policy_version=self.engine.version, decided_at=now)))
        encoded_all = [(t, self._encode(self.out_schemas[schema], r)) for t, schema, r in records]
        out = []
        # the outputs of one signal signed as one chunk: the planr record format (signature
        # and proof headers), one Ed25519 signature per signal
        for (out_topic, encoded), signed in zip(encoded_all, sign_chunk(self.signer, encoded_all),
                                               strict=True):
            self.sent += 1
            self.sent_bytes += len(encoded) + sum(len(k) + len(v) for k, v in signed)
            out.append((out_topic, key, encoded, signed))
        return out


async def naive(work: Workload, group: str) -> Run:
    producer: AIOKafkaProducer = make_producer(work.conn)
    await producer.start()
    await warm(producer, work.outputs())
    router = NaiveRouter(work)

    async def handle(batch: Batch) -> int:
        futures = []
        for recs in batch.values():
            for rec in recs:
                for topic, key, value, headers in router.outputs(rec.topic, rec.value,
                                                                 rec.headers):
                    futures.append(await producer.send(topic, value=value, key=key,
                                                       headers=headers))
        await asyncio.gather(*futures)
        return sum(len(r) for r in batch.values())

    try:
        run = await consume(work, group, "naive", handle)
    finally:
        await producer.stop()
    run.outputs, run.output_bytes = router.sent, router.sent_bytes
    return run
