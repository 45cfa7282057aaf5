"""Records assembled from parts (schemas.splice, routing.encoders) are byte for byte what
fastavro writes for the whole record built by routing.outputs, for generated decisions,
ids, versions and times, across batches that reuse the encoders' memos."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planr.domain import Recipient
from planr.errors import EncodeError, UsageError
from routing.encoders import AuditEncoder, DeliveryEncoder
from routing.engine import Decision
from routing.outputs import audit, envelope, epoch_micros
from schemas.codec import Codec
from schemas.names import DELIVERY, ROUTING_DECISION
from schemas.splice import Runs, array_count

CODEC = Codec()
RECIPIENTS = [Recipient.parse(r) for r in (
    "tfl:brussel", "tfl:antwerpen", "wg:salafism", "csilr:42004", "csilr:21004", "ntf",
    "ftf-db")]
RULES = st.text(alphabet="abcdefghij-", min_size=1, max_size=12)
T0 = datetime(2026, 1, 1, tzinfo=UTC)

decisions = st.lists(st.builds(
    lambda r, ok, rules, view: Decision(r, ok, rules[0], tuple(rules), view, str(r)),
    st.sampled_from(RECIPIENTS), st.booleans(), st.lists(RULES, min_size=1, max_size=4),
    st.sampled_from(["tfl", "wg", "csilr", "ftf", "aggregate"])), max_size=12)
stamps = st.one_of(st.integers(0, 2**62).map(lambda m: T0 + timedelta(microseconds=m % 10**15)),
                   st.integers(0, 10**17))  # up to the year 5138
ids = st.uuids().map(str)


def _ids(ds: list[Decision], seed: int) -> list[str | None]:
    return [str(uuid.UUID(int=seed + i)) if d.allowed else None for i, d in enumerate(ds)]


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.tuples(decisions, ids, st.sampled_from(["vsse", "ocam", "sgrs"]),
                                  st.integers(1, 2**31 - 1), st.sampled_from(["sha256:a", "v2"]),
                                  stamps, st.integers(0, 2**64)), min_size=1, max_size=4))
def test_an_audit_record_from_parts_is_the_bytes_fastavro_writes_for_the_whole(batches):
    encoder = AuditEncoder(CODEC)  # one encoder across every record: its memos are reused
    for ds, event_id, agency, version, pv, at, seed in batches:
        dids = _ids(ds, seed % 2**100)
        whole = CODEC.encode(ROUTING_DECISION, audit(
            ds, dids, event_id=event_id, agency=agency, version=version, policy_version=pv,
            decided_at=at))
        parts = encoder.encode(ds, dids, event_id=event_id, agency=agency, version=version,
                               policy_version=pv, decided_at=at)
        assert parts == whole
        assert CODEC.decode(parts, ROUTING_DECISION)["decisions"] == CODEC.decode(
            whole, ROUTING_DECISION)["decisions"]


@settings(max_examples=150, deadline=None)
@given(deliveries=st.lists(st.tuples(decisions, ids, st.integers(1, 2**31 - 1),
                                     st.binary(max_size=300), st.sampled_from(["p1", "p2"]),
                                     stamps), min_size=1, max_size=4))
def test_a_delivery_from_parts_is_the_bytes_fastavro_writes_for_the_whole(deliveries):
    encoder = DeliveryEncoder(CODEC)
    for ds, event_id, version, payload, pv, at in deliveries:
        body = encoder.body(payload, version)
        for i, d in enumerate(ds):
            did = str(uuid.UUID(int=i + 1))
            whole = CODEC.encode(DELIVERY, envelope(
                d, event_id=event_id, version=version, policy_version=pv, routed_at=at,
                payload=payload, delivery=did))
            assert encoder.encode(d, delivery=did, event_id=event_id, policy_version=pv,
                                  routed_at=at, body=body) == whole


def test_a_stamp_as_a_datetime_or_as_epoch_micros_encodes_alike():
    at = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    d = Decision(RECIPIENTS[0], True, "r", ("r",), "tfl", str(RECIPIENTS[0]))
    a, b = AuditEncoder(CODEC), AuditEncoder(CODEC)
    assert a.encode([d], ["x"], event_id="e", agency="vsse", version=1, policy_version="p",
                    decided_at=at) == b.encode([d], ["x"], event_id="e", agency="vsse",
                                               version=1, policy_version="p",
                                               decided_at=epoch_micros(at))


def test_runs_that_skip_reorder_or_repeat_a_field_are_refused():
    known = CODEC.store.current(DELIVERY)
    fields = [f["name"] for f in known.parsed["fields"]]
    for runs in ([fields[1:]], [fields[1:2], fields[:1], fields[2:]], [fields, fields[:1]]):
        with pytest.raises(UsageError, match="in order"):
            Runs.of(known, runs)
    with pytest.raises(UsageError, match="no array field"):
        Runs.of(known, [fields], nested=("recipient",))


def test_an_array_block_count_is_at_least_one():
    assert array_count(1) == b"\x02"  # zig-zag: 1 -> 2
    assert array_count(64) == b"\x80\x01"
    with pytest.raises(UsageError):
        array_count(0)


def test_a_value_that_does_not_fit_is_refused_without_quoting_it():
    secret = "summary text that must not leak"
    runs = Runs.of(CODEC.store.current(DELIVERY), [
        ("delivery_id", "event_id"), ("recipient", "rule", "rules"),
        ("policy_version", "routed_at"), ("view",), ("payload", "version")])
    with pytest.raises(EncodeError) as caught:
        runs.encode(4, {"payload": secret, "version": 1})  # a str where bytes are due
    assert secret not in str(caught.value)
    assert "Delivery__run4" in str(caught.value)
