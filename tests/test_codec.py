"""The Avro codec: single-object encoding, schema resolution, specific errors on bad bytes."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from planr.domain import Agency
from planr.errors import DecodeError, UnknownSchemaError
from scenarios.builders import make_signal
from schemas import AVRO_DIR
from schemas.codec import MAGIC, Codec, SchemaStore
from schemas.dead_letter import MAX_COPIED_BYTES, dead_letter_record
from schemas.names import DEAD_LETTER, DELIVERY, ROUTING_DECISION, SIGNAL


def _signal_record() -> dict[str, Any]:
    return make_signal().to_avro(Agency.VSSE, datetime(2026, 11, 28, tzinfo=UTC))


def test_signal_round_trips_through_single_object_encoding(codec: Codec):
    record = _signal_record()
    data = codec.encode(SIGNAL, record)
    assert data[:2] == MAGIC
    assert data[2:10] == codec.store.current(SIGNAL).fingerprint
    assert codec.decode(data, SIGNAL) == record


@pytest.mark.parametrize(
    ("name", "record"),
    [
        (DELIVERY, {"delivery_id": "d", "event_id": "e", "recipient": "tfl:brussel",
                    "rule": "tfl-territory", "rules": ["tfl-territory"], "policy_version": "v",
                    "routed_at": datetime(2026, 1, 1, tzinfo=UTC), "view": "tfl",
                    "payload": b"\x01\x02", "version": 2}),
        (ROUTING_DECISION, {"event_id": "e", "agency": "vsse", "version": 1,
                            "policy_version": "v",
                            "decided_at": datetime(2026, 1, 1, tzinfo=UTC),
                            "recipient": None, "outcome": None, "rule": None, "rules": [],
                            "delivery_id": None,
                            "decisions": [{"recipient": "ntf", "outcome": "deny",
                                           "rule": "default-deny", "rules": [],
                                           "delivery_id": None, "view": "ntf"},
                                          {"recipient": "tfl:liege", "outcome": "allow",
                                           "rule": "tfl-territory", "rules": ["tfl-territory"],
                                           "delivery_id": "d", "view": "tfl"}]}),
        (DEAD_LETTER, {"reason": "undecodable", "detail": "", "source_topic": "t",
                       "source_partition": 0, "source_offset": 3, "original_key": None,
                       "original": b"junk", "failed_at": datetime(2026, 1, 1, tzinfo=UTC)}),
    ],
)
def test_envelope_schemas_round_trip(codec: Codec, name: str, record: dict[str, Any]):
    assert codec.decode(codec.encode(name, record), name) == record


def test_old_writer_schema_is_read_by_the_newer_reader():
    current = json.loads((AVRO_DIR / "signal.avsc").read_text())
    old = copy.deepcopy(current)
    # An older Signal: no FTF details, no owner-named recipients, no local-sharing flag.
    old["fields"] = [f for f in old["fields"]
                     if f["name"] not in {"ftf", "named_recipients", "local_sharing"}]
    store = SchemaStore.default()
    store.add(old, current=False, source="old")
    codec = Codec(store)
    writer_only = store.writer(next(
        fp for fp, k in store._by_fp.items() if k.source == "old"
    ))
    record = {k: v for k, v in _signal_record().items()
              if k not in {"ftf", "named_recipients", "local_sharing"}}
    data = Codec.encode_with(writer_only, record)
    decoded = codec.decode(data, SIGNAL)
    assert decoded["event_id"] == record["event_id"]
    assert decoded["ftf"] is None
    assert decoded["named_recipients"] == []
    assert decoded["local_sharing"] is False


def test_unknown_fingerprint_raises_unknown_schema_error(codec: Codec):
    data = MAGIC + b"\x00" * 8 + b"\x02"
    with pytest.raises(UnknownSchemaError) as info:
        codec.decode(data, SIGNAL)
    assert info.value.reason == "unknown_schema"


@pytest.mark.parametrize("data", [b"", b"not avro at all", b"\xc3\x01"])
def test_bytes_without_header_raise_decode_error(codec: Codec, data: bytes):
    with pytest.raises(DecodeError) as info:
        codec.decode(data, SIGNAL)
    assert info.value.reason == "bad_header"


def test_truncated_body_raises_decode_error_not_a_crash(codec: Codec):
    data = codec.encode(SIGNAL, _signal_record())
    with pytest.raises(DecodeError) as info:
        codec.decode(data[: len(data) // 2], SIGNAL)
    assert info.value.reason == "undecodable"


def test_trailing_bytes_are_rejected(codec: Codec):
    data = codec.encode(SIGNAL, _signal_record()) + b"\x00\x00"
    with pytest.raises(DecodeError):
        codec.decode(data, SIGNAL)


def test_a_message_of_another_schema_is_not_read_as_a_signal(codec: Codec):
    data = codec.encode(DEAD_LETTER, {
        "reason": "r", "detail": "", "source_topic": "t", "source_partition": 0,
        "source_offset": 0, "original_key": None, "original": b"",
        "failed_at": datetime(2026, 1, 1, tzinfo=UTC)})  # fmt: skip
    with pytest.raises(DecodeError) as info:
        codec.decode(data, SIGNAL)
    assert info.value.reason == "wrong_schema"


def test_decode_errors_do_not_echo_the_bytes(codec: Codec):
    data = codec.encode(SIGNAL, _signal_record())
    with pytest.raises(DecodeError) as info:
        codec.decode(data[:-3], SIGNAL)
    assert "SUMMARY" not in str(info.value)
    assert info.value.__cause__ is None


def _consumed(value: bytes, key: bytes | None) -> ConsumerRecord:
    return ConsumerRecord(topic="p.ingress.vsse", partition=2, offset=7, timestamp=0,
                          timestamp_type=0, key=key, value=value, checksum=None,
                          serialized_key_size=len(key or b""), serialized_value_size=len(value),
                          headers=())


@pytest.mark.parametrize(("value_size", "key_size"), [(MAX_COPIED_BYTES - 2, 2), (100, 0)])
def test_a_dead_letter_keeps_an_original_up_to_the_copy_limit(value_size, key_size):
    rec = _consumed(b"v" * value_size, b"k" * key_size or None)
    dead = dead_letter_record(rec, "invalid_signal", "summary")
    assert (dead["original"], dead["original_key"], dead["detail"]) == (
        rec.value, rec.key, "summary")


@pytest.mark.parametrize(("value_size", "key_size"), [(MAX_COPIED_BYTES + 1, 0),
                                                      (10, MAX_COPIED_BYTES)])
def test_a_dead_letter_of_a_larger_original_fits_and_says_it_was_not_copied(value_size,
                                                                             key_size):
    rec = _consumed(b"v" * value_size, b"k" * key_size or None)
    dead = dead_letter_record(rec, "invalid_signal", "summary")
    assert (dead["original"], dead["original_key"]) == (b"", None)
    assert dead["detail"] == f"summary; original not copied ({value_size + key_size} bytes)"
    assert (dead["source_topic"], dead["source_partition"], dead["source_offset"]) == (
        "p.ingress.vsse", 2, 7)
    assert len(Codec().encode(DEAD_LETTER, dead)) < 1024
