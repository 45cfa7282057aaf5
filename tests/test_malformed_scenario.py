"""The malformed-input generator (scenarios.malformed) without a broker: deterministic per
seed, every category in its share, and each record built the way its category says (so that
the broker run in tests/test_malformed_run.py tests what it claims to)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from planr.signing import HEADER_SIGNATURE, SignatureError, verify_record
from planr.topics import Topics
from scenarios.keys import KeyRing
from scenarios.malformed import CATEGORIES, HUGE_VALUE_BYTES, MalformedRun, malformed_run
from schemas.codec import Codec
from schemas.names import SIGNAL

T = datetime(2026, 11, 28, tzinfo=UTC)
TOPICS = Topics(prefix="p")
BAD, VALID = 1_000, 150


@pytest.fixture(scope="module")
def run(keys: KeyRing) -> MalformedRun:
    return malformed_run(TOPICS, Codec(), keys.signers, published_at=T, bad=BAD, valid=VALID)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others(run, keys):
    again = malformed_run(TOPICS, Codec(), keys.signers, published_at=T, bad=BAD, valid=VALID)
    other = malformed_run(TOPICS, Codec(), keys.signers, published_at=T, bad=BAD, valid=VALID,
                          seed=9)

    def dump(r: MalformedRun) -> list[tuple[object, ...]]:
        return [(x.topic, x.key, x.value, x.headers, x.expected) for x in r.records]

    assert dump(again) == dump(run)
    assert dump(other) != dump(run)


def test_every_category_has_its_share_and_every_bad_record_an_expected_reason(run):
    counts = Counter(r.category for r in run.bad)
    assert counts == {cat: round(share * BAD) for cat, share in CATEGORIES.items()}
    assert len(run.valid) == VALID
    assert all(r.expected is not None and r.expected.reason for r in run.bad)


def test_reused_ids_come_in_the_second_wave_and_reuse_first_wave_signals(run):
    first = {str(s.event_id): a for a, s in run.valid}
    assert {r.category for r in run.waves[1]} == {"reused_ids"}
    codec = Codec()
    for r in run.waves[1]:
        assert r.value is not None
        name = codec.writer_of(r.value).name
        rec = codec.decode(r.value, name)
        assert rec["event_id"] in first
        other_agency = rec["agency"] != first[rec["event_id"]].value
        assert r.expected is not None
        assert r.expected.detail == ("agency" if other_agency else "content")


def test_records_meant_to_reach_validation_are_rightfully_signed_signals(run, keys):
    codec = Codec()
    for r in run.bad:
        if r.category not in ("invalid_fields", "unknown_places", "oversize"):
            continue
        agency = TOPICS.agency_of_ingress(r.topic)
        assert agency is not None
        assert r.value is not None
        assert verify_record(keys.registry, r.topic, r.value, r.headers, at=datetime.now(UTC),
                             expected_owner=agency.value) == agency.value
        assert codec.decode(r.value, SIGNAL)["agency"] == agency.value


def test_forged_records_carry_no_valid_signature_of_their_topic_owner(run, keys):
    forged = [r for r in run.bad if r.category == "forged_signature"]
    assert {r.expected.detail.split()[0] for r in forged if r.expected and r.expected.detail
            } == {"unsigned", "unknown_key", "wrong_signer", "bad_signature"}
    for r in forged:
        owner = TOPICS.agency_of_ingress(r.topic)
        assert owner is not None
        assert r.value is not None
        with pytest.raises(SignatureError) as info:
            verify_record(keys.registry, r.topic, r.value, r.headers, at=datetime.now(UTC),
                          expected_owner=owner.value)
        assert info.value.detail == r.expected.detail
    assert any(len([h for h in r.headers if h[0] == HEADER_SIGNATURE]) == 2 for r in forged)


def test_oversize_records_include_values_and_keys_above_one_mebibyte(run):
    huge = [r for r in run.bad if len(r.value or b"") >= HUGE_VALUE_BYTES
            or len(r.key or b"") >= HUGE_VALUE_BYTES]
    assert sorted((r.category, r.value is not None and len(r.value) >= HUGE_VALUE_BYTES)
                  for r in huge) == [
        ("forged_delivery", True), ("oversize", False), ("oversize", True)]
