"""The router's fast paths give the same results as the plain ones: the engine's per-signal
evaluation (precomputed candidates, signal conditions evaluated once) decides as
``decide_one`` does per candidate; ids equal the standard library's UUIDv5; the compiled Avro
writer writes fastavro's bytes, and leaves what it does not handle to fastavro; the audit
reader reads records of every writer version."""

from __future__ import annotations

import io
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastavro import schemaless_writer

from planr.errors import EncodeError
from routing.engine import Facts
from routing.outputs import (
    DELIVERY_NS,
    RETRACTION_NS,
    audit,
    delivery_id,
    envelope,
    retraction_id,
    uuid5_str,
)
from routing.setup import RoutingSetup
from scenarios.signals import generate
from schemas import AVRO_DIR
from schemas.audit import candidate_decisions
from schemas.codec import Codec, SchemaStore, load_schema_file
from schemas.names import DELIVERY, NTF_FACT, ROUTING_DECISION

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


def test_compiled_writer_writes_fastavros_bytes_for_every_router_record(
    routing_setup: RoutingSetup
):
    codec, engine, views = routing_setup.codec, routing_setup.engine, routing_setup.views
    compared = 0
    for agency, s in generate(400, seed=3):
        signal = s.to_avro(agency, NOW)
        facts = Facts.of(signal)
        decisions = engine.decide(facts)
        ids = [delivery_id(facts.event_id, d.recipient_id) if d.allowed else None
               for d in decisions]
        records = [(ROUTING_DECISION, audit(decisions, ids, event_id=facts.event_id,
                                            agency=agency.value, version=2,
                                            policy_version=engine.version, decided_at=NOW))]
        for d in decisions:
            if d.view in views.aggregate_views:
                continue
            payload = views.project(d.view, signal)
            name = views._schemas[d.view].name
            records.append((name, payload))
            records.append((DELIVERY, envelope(d, event_id=facts.event_id, version=1,
                                               policy_version="p", routed_at=NOW,
                                               payload=views.render(d.view, signal))))
        records.append((NTF_FACT, {"event_id": facts.event_id, "period": "2026-11",
                                   "arrondissement": facts.arrondissement,
                                   "phenomena": sorted(facts.phenomena),
                                   "policy_version": "p"}))
        for name, record in records:
            known = codec.store.current(name)
            assert known.write is not None, name
            assert known.write(record) == _fastavro(codec, name, record), name
            compared += 1
    assert compared > 1000


@pytest.mark.parametrize("value", [
    "", "é" * 70, "x" * 5000, "tfl:brussel",
])
def test_compiled_writer_matches_fastavro_on_string_lengths(codec: Codec, value: str):
    record = {"delivery_id": value, "event_id": value, "recipient": value, "rule": value,
              "rules": [value] * 70, "policy_version": value,
              "routed_at": datetime(1960, 1, 1, tzinfo=timezone(timedelta(hours=5))),
              "view": value, "payload": value.encode() * 3, "version": -(2**31)}
    assert codec.store.current(DELIVERY).write(record) == _fastavro(codec, DELIVERY, record)  # type: ignore[misc]


def test_what_the_compiled_writer_does_not_handle_is_left_to_fastavro(codec: Codec):
    base = {"event_id": "e", "agency": "vsse", "policy_version": "v", "decided_at": NOW,
            "decisions": []}
    # a naive datetime and a missing defaulted field: fastavro's result, byte for byte
    naive = {**base, "decided_at": NOW.replace(tzinfo=None)}
    del naive["decisions"]
    encoded = codec.encode(ROUTING_DECISION, naive)
    assert encoded[10:] == _fastavro(codec, ROUTING_DECISION, naive)
    # a bad value: fastavro's refusal, as an EncodeError naming the schema and no value
    with pytest.raises(EncodeError) as info:
        codec.encode(ROUTING_DECISION, {**base, "version": "secret-text"})
    assert "RoutingDecision" in str(info.value)
    assert "secret-text" not in str(info.value)
    with pytest.raises(EncodeError):
        codec.encode(ROUTING_DECISION, {**base, "decisions": [{"recipient": "ntf"}]})


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
