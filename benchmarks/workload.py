"""The benchmark suite's shared input: one embedded broker, one set of throw-away keys, one
pre-loaded input of generated signals on the ingress topics, and the output profile the
planr router wrote for it (what the raw fan-out floor replays).

Every implementation reads the same input with its own consumer group and writes to the same
output topics; what each wrote is counted from the output topics' end offsets before and after
its run, the same way for all.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from planr.domain import Agency
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.telemetry import Metrics
from planr.topics import Topics, partitions_for, provision
from producers.publisher import Publisher
from routing import DEFAULT_POLICY
from routing.setup import RoutingSetup, prepare
from scenarios.keys import KeyRing, throwaway_keys
from scenarios.signals import generate
from schemas.models import SignalIn

PREFIX = "bench"
SEED = 7

#: One output record: (topic, partition, key, value, headers).
Output = tuple[str, int, bytes | None, bytes, list[tuple[str, bytes]]]
#: An input record's coordinates: (topic, partition, offset).
Coords = tuple[str, int, int]


@dataclass
class Workload:
    """What every benchmark of one suite run shares."""

    conn: KafkaConnection
    topics: Topics
    keys: KeyRing
    setup: RoutingSetup
    signals: int
    tmp: Path
    publish_s: float = 0.0
    #: per input record, the planr router's outputs for it (filled by :func:`load_profile`)
    profile: dict[Coords, list[Output]] = field(default_factory=dict)
    profile_bytes: int = 0
    profile_records: int = 0

    @property
    def ingress(self) -> list[str]:
        return self.topics.all_ingress()

    def outputs(self) -> list[str]:
        """Every topic a router may write (all but the inputs)."""
        inputs = {*self.ingress, self.topics.ftf_removals}
        return [t for t in self.topics.everything() if t not in inputs]


def by_agency(scenario: list[tuple[Agency, SignalIn]]) -> dict[Agency, list[SignalIn]]:
    out: dict[Agency, list[SignalIn]] = defaultdict(list)
    for agency, s in scenario:
        out[agency].append(s)
    return out


async def publish(conn: KafkaConnection, topics: Topics, setup: RoutingSetup, keys: KeyRing,
                  scenario: list[tuple[Agency, SignalIn]]) -> None:
    """Publish ``scenario`` with the project's Publisher, signed by each agency's key."""
    metrics = Metrics(CollectorRegistry())
    for agency, batch in by_agency(scenario).items():
        async with Publisher(conn=conn, agency=agency, topics=topics, codec=setup.codec,
                             metrics=metrics, signer=keys.signer(agency)) as pub:
            await pub.publish_many(batch)


async def load(bootstrap: str, signals: int, tmp: Path) -> Workload:
    """Provision the topics and publish ``signals`` generated signals, once."""
    conn = KafkaConnection(bootstrap, session_timeout_ms=6_000)
    topics = Topics(PREFIX)
    setup = prepare(DEFAULT_POLICY)
    scenario = list(generate(signals, seed=SEED))
    keys = throwaway_keys(tmp / "keys", sorted({a.value for a, _ in scenario} | {ROUTER}))
    await provision(conn, topics)
    work = Workload(conn, topics, keys, setup, signals, tmp)
    started = time.perf_counter()
    await publish(conn, topics, setup, keys, scenario)
    work.publish_s = time.perf_counter() - started
    return work


async def warm(producer: AIOKafkaProducer, names: list[str]) -> None:
    """Let ``producer`` learn every output topic's partitions before a measurement (a
    long-running router knows them; learning ~700 topics one metadata round trip at a time
    would otherwise dominate a short run)."""
    await asyncio.gather(*(producer.partitions_for(t) for t in names))


def _reader(conn: KafkaConnection) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**conn.client_kwargs(), group_id=None, enable_auto_commit=False,
                            max_poll_records=10_000, fetch_max_bytes=64 * 1024 * 1024)


async def read_all(conn: KafkaConnection, topics: Topics, names: list[str],
                   idle: float = 2.0) -> list[Any]:
    """Every record of ``names`` from the start, until none came for ``idle`` seconds.
    (Not bounded by end offsets: Tansu's do not count the records of a compressed batch.)"""
    consumer = _reader(conn)
    await consumer.start()
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(t, p) for t in names
                         for p in range(partitions_for(topics, t))])
        await consumer.seek_to_beginning()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
            if batch:
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return out


async def load_profile(work: Workload, outputs: list[Output]) -> None:
    """Attribute the planr router's outputs (captured as it sent them) to its input records:
    an output's key is its event id; each input record's event id is decoded here, once,
    outside any measurement."""
    by_event: dict[bytes | None, list[Output]] = defaultdict(list)
    for out in outputs:
        by_event[out[2]].append(out)
        work.profile_bytes += len(out[3]) + sum(len(k) + len(v) for k, v in out[4])
        work.profile_records += 1
    for rec in await read_all(work.conn, work.topics, work.ingress):
        kind = work.setup.codec.writer_of(rec.value).name
        event = str(work.setup.codec.decode(rec.value, kind)["event_id"])
        work.profile[(rec.topic, rec.partition, rec.offset)] = by_event.get(event.encode(), [])
