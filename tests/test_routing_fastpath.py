"""The router's fast paths give the same results as the plain ones: the engine's per-signal
evaluation (precomputed candidates, signal conditions evaluated once) decides as
``decide_one`` does per candidate; ids equal the standard library's UUIDv5; the audit reader
reads records of every writer version."""

from __future__ import annotations

import calendar
import io
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastavro import schemaless_writer

from routing.engine import Facts
from routing.outputs import (
    DELIVERY_NS,
    RETRACTION_NS,
    delivery_id,
    epoch_micros,
    retraction_id,
    uuid5_str,
)
from routing.setup import RoutingSetup
from scenarios.signals import generate
from schemas import AVRO_DIR
from schemas.audit import candidate_decisions
from schemas.codec import Codec, SchemaStore, load_schema_file
from schemas.names import ROUTING_DECISION

NOW = datetime(2026, 11, 29, 6, 0, 1, 123456, tzinfo=UTC)


def _fastavro(codec: Codec, name: str, record: dict[str, Any]) -> bytes:
    known = codec.store.current(name)
    out = io.BytesIO()
    schemaless_writer(out, known.parsed, record)
    return out.getvalue()


@pytest.mark.parametrize("seed", [1, 2015, 77])
def test_fast_decisions_equal_one_by_one_decisions_over_generated_signals(
    routing_setup: RoutingSetup, seed: int
):
    engine = routing_setup.engine
    named = 0
    for agency, s in generate(1500, seed=seed):
        facts = Facts.of(s.to_avro(agency))
        named += bool(facts.named)
        plain = [engine.decide_one(facts, r) for r in engine.candidates(facts)]
        assert list(engine.decide(facts)) == plain
        assert [d.recipient_id for d in plain] == [str(d.recipient) for d in plain]
    assert named > 0  # the owner-named recipients were exercised


def test_ids_equal_the_standard_library_uuid5_for_many_names():
    rng = random.Random(5)
    for i in range(5000):
        name = "".join(chr(rng.randrange(32, 0xD000)) for _ in range(rng.randrange(0, 80)))
        ns = DELIVERY_NS if i % 2 else RETRACTION_NS
        assert uuid5_str(ns, name) == str(uuid.uuid5(ns, name)), name
    event = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    assert delivery_id(event, "tfl:brussel") == str(uuid.uuid5(DELIVERY_NS,
                                                               f"{event}|tfl:brussel"))
    assert retraction_id("d", 3, "withdrawn") == str(uuid.uuid5(RETRACTION_NS, "d|3|withdrawn"))
    other = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert uuid5_str(other, "x") == str(uuid.uuid5(other, "x"))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_per_candidate_audit_records_of_older_writers_read_as_one_row(
    codec: Codec, version: str
):
    store = SchemaStore()
    store.add(load_schema_file(AVRO_DIR / "superseded" / f"routing_decision-{version}.avsc"))
    old: dict[str, Any] = {"event_id": "e1", "agency": "vsse", "recipient": "tfl:liege",
                           "outcome": "allow",
                           "rule": "tfl-territory", "rules": ["tfl-territory", "x"],
                           "policy_version": "p", "delivery_id": "d1", "decided_at": NOW,
                           "version": 4}
    if version == "v1":
        del old["version"]
    record = codec.decode(Codec(store).encode(ROUTING_DECISION, old), ROUTING_DECISION)
    assert record["decisions"] == []
    (row,) = candidate_decisions(record)
    assert row == {**old, "version": old.get("version", 1), "view": None}


def test_a_per_signal_audit_record_reads_as_one_row_per_candidate(codec: Codec):
    entries: list[dict[str, Any]] = [
        {"recipient": "ntf", "outcome": "allow", "rule": "r1", "rules": ["r1"],
         "delivery_id": "d", "view": "ntf"},
        {"recipient": "wg:media", "outcome": "deny", "rule": "default-deny",
         "rules": ["default-deny"], "delivery_id": None, "view": "wg"}]
    record = codec.decode(codec.encode(ROUTING_DECISION, {
        "event_id": "e", "agency": "ocam", "version": 2, "policy_version": "p",
        "decided_at": NOW, "decisions": entries}), ROUTING_DECISION)
    shared = {"event_id": "e", "agency": "ocam", "version": 2, "policy_version": "p",
              "decided_at": NOW}
    assert candidate_decisions(record) == [{**shared, **e} for e in entries]


@pytest.mark.parametrize("at", [NOW, datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                                NOW.astimezone(timezone(timedelta(hours=-5)))])
def test_a_batch_time_converted_once_encodes_as_the_datetime_itself(codec: Codec, at: datetime):
    base = {"event_id": "e", "agency": "vsse", "version": 1, "policy_version": "v",
            "decisions": []}
    stamp = epoch_micros(at)
    assert stamp == calendar.timegm(at.utctimetuple()) * 1_000_000 + at.microsecond
    assert codec.encode(ROUTING_DECISION, {**base, "decided_at": stamp}) == codec.encode(
        ROUTING_DECISION, {**base, "decided_at": at})
    with pytest.raises(ValueError, match="timezone-aware"):
        epoch_micros(at.replace(tzinfo=None))
