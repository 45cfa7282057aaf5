"""One set of signal rules for both ways in: the JSON model and decoded Avro records.

Each rule is exercised twice, on a JSON submission (``SignalIn``) and on an Avro record
(``validate_signal_record``); both must reject it naming the same field path. The base record
below is written out by hand, independently of ``SignalIn.to_avro``.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from planr.domain import Agency
from planr.errors import InvalidSignalError, PlanrError
from scenarios.builders import SECRET_SUMMARY, signal_json
from scenarios.signals import generate
from schemas.codec import Codec
from schemas.models import SignalIn, describe_errors
from schemas.names import SIGNAL
from schemas.validation import validate_signal_record, validate_withdrawal_record

PUBLISHED = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
NOW = PUBLISHED + timedelta(seconds=3)
FREE_TEXT = "name, street, informant says"
DELETE = object()


def base_record() -> dict[str, Any]:
    """A valid decoded Signal record, as fastavro returns it."""
    return {
        "event_id": "0b6f3c1e-2a4d-4f5e-9c7b-8d1e2f3a4b5c",
        "agency": "vsse",
        "occurred_at": datetime(2026, 11, 27, 18, 5, tzinfo=UTC),
        "published_at": PUBLISHED,
        "subject": {"id": "P-1042", "kind": "person", "statuses": ["FTF"]},
        "location": {"municipality": "21004", "prison": None},
        "phenomena": ["salafism"],
        "domains": ["internet"],
        "classification": "unclassified",
        "handling": "H0",
        "tlp": "amber",
        "reliability": "B",
        "accuracy": 2,
        "local_sharing": False,
        "named_recipients": [],
        "summary": SECRET_SUMMARY,
        "ftf": {"situation": "returned", "country": "SY"},
        "ocam": None,
    }


def changed(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with each dotted path set to its value (or deleted)."""
    out = copy.deepcopy(data)
    for path, value in changes.items():
        *parents, last = path.split(".")
        target = out
        for key in parents:
            if target.get(key) is None:
                target[key] = {}
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return out


def json_error(changes: dict[str, Any]) -> tuple[list[str], str]:
    data = changed(signal_json(agency="vsse"), changes)
    with pytest.raises(ValidationError) as info:
        SignalIn.model_validate_json(json.dumps(data))
    paths = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    return paths, describe_errors(info.value)


def avro_error(changes: dict[str, Any]) -> InvalidSignalError:
    with pytest.raises(InvalidSignalError) as info:
        validate_signal_record(changed(base_record(), changes), now=NOW)
    return info.value


MANY = ["ntf"] * 65
# (field path both paths must report, changes to the JSON form, changes to the Avro record);
# None for the Avro changes means: the same as the JSON ones.
CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
    ("event_id", {"event_id": "not-a-uuid"}, None),
    ("event_id", {"event_id": "0B6F3C1E-2A4D-4F5E-9C7B-8D1E2F3A4B5C"}, None),
    ("event_id", {"event_id": "0b6f3c1e2a4d4f5e9c7b8d1e2f3a4b5c"}, None),
    ("agency", {"agency": "cia"}, None),
    ("occurred_at", {"occurred_at": "2099-01-01T00:00:00Z"},
     {"occurred_at": datetime(2099, 1, 1, tzinfo=UTC)}),
    ("subject", {"subject": DELETE}, None),
    ("subject.id", {"subject.id": FREE_TEXT}, None),
    ("subject.id", {"subject.id": ""}, None),
    ("subject.id", {"subject.id": "P" * 65}, None),
    ("subject.id", {"subject.id": "-P-1"}, None),
    ("subject.id", {"subject.id": "P/1"}, None),
    ("subject.id", {"subject.id": "P-1\n"}, None),
    ("subject.id", {"subject.id": "Ṗ-1"}, None),
    ("subject.kind", {"subject.kind": "alien"}, None),
    ("subject.statuses.0", {"subject.statuses": ["ftf"]}, None),
    ("subject.statuses", {"subject.statuses": ["FTF", "FTF"]}, None),
    ("location", {"location.municipality": "99999"}, None),
    ("location", {"location": {"prison": "alcatraz"}},
     {"location": {"municipality": None, "prison": "alcatraz"}}),
    ("location", {"location.prison": "centrale-gevangenis-leuven"}, None),
    ("location", {"location.municipality": None}, None),
    ("phenomena.0", {"phenomena": ["jihad"]}, None),
    ("phenomena", {"phenomena": ["other"] * 6}, None),
    ("domains.1", {"domains": ["internet", "darkweb"]}, None),
    ("domains", {"domains": ["media"] * 8}, None),
    ("classification", {"classification": "top"}, None),
    ("handling", {"handling": "H9"}, None),
    ("tlp", {"tlp": "AMBER"}, None),
    ("reliability", {"reliability": "Z"}, None),
    ("accuracy", {"accuracy": 0}, None),
    ("accuracy", {"accuracy": 5}, None),
    ("named_recipients.0", {"named_recipients": ["tfl:atlantis"], "tlp": "red"}, None),
    ("named_recipients.1", {"named_recipients": ["ntf", FREE_TEXT], "handling": "H2"}, None),
    ("named_recipients", {"named_recipients": ["ntf"]}, None),
    ("named_recipients", {"named_recipients": ["tfl:brussel"], "handling": "H3"}, None),
    ("named_recipients", {"named_recipients": MANY, "tlp": "red"}, None),
    ("summary", {"summary": "x" * 4_001}, None),
    ("ftf.country", {"ftf.country": "Syria"}, None),
    ("ftf.country", {"ftf.country": "sy"}, None),
    ("ftf.country", {"ftf.country": "XX"}, None),
    ("ftf.country", {"ftf.country": FREE_TEXT}, None),
    ("ftf.situation", {"ftf.situation": "missing"}, None),
    ("ocam.threat_level", {"ocam": {"threat_level": 5}},
     {"ocam": {"action": None, "threat_level": 5, "basis": None}}),
    ("ocam.action", {"ocam": {"action": "delete"}},
     {"ocam": {"action": "delete", "threat_level": None, "basis": None}}),
    ("ocam.basis", {"ocam": {"basis": "rumour"}},
     {"ocam": {"action": None, "threat_level": None, "basis": "rumour"}}),
]


@pytest.mark.parametrize(("field", "json_changes", "avro_changes"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_json_and_avro_reject_the_same_rule_naming_the_same_field(
    field: str, json_changes: dict[str, Any], avro_changes: dict[str, Any] | None
):
    paths, _ = json_error(json_changes)
    assert paths == [field]
    exc = avro_error(json_changes if avro_changes is None else avro_changes)
    assert exc.field == field
    assert str(exc).startswith(f"{field}: ")


@pytest.mark.parametrize(("field", "json_changes", "avro_changes"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_error_messages_name_the_field_and_never_contain_the_offending_value(
    field: str, json_changes: dict[str, Any], avro_changes: dict[str, Any] | None
):
    _, json_msg = json_error(json_changes)
    avro_msg = str(avro_error(json_changes if avro_changes is None else avro_changes))
    assert json_msg.startswith(f"{field}: ")
    assert avro_msg.startswith(f"{field}: ")
    values = [v for v in json_changes.values() if isinstance(v, str) and len(v) >= 2]
    for value in values:
        assert value not in json_msg
        assert value not in avro_msg
    assert SECRET_SUMMARY not in json_msg + avro_msg


def test_free_text_subject_id_never_reaches_the_message_or_the_field():
    exc = avro_error({"subject.id": FREE_TEXT})
    assert FREE_TEXT not in str(exc)
    assert exc.field == "subject.id"
    assert "name" not in str(exc)
    assert "informant" not in str(exc)


def test_the_invalid_signal_error_is_a_planr_error_with_the_dead_letter_reason():
    exc = avro_error({"ftf.country": "Syria"})
    assert isinstance(exc, PlanrError)
    assert isinstance(exc, ValueError)
    assert exc.reason == "invalid_signal"
    assert exc.retriable is False


def test_a_valid_record_passes_and_is_returned_unchanged():
    record = base_record()
    assert validate_signal_record(record, now=NOW) is record
    assert record == base_record()


def test_a_published_at_in_the_future_of_the_validating_clock_is_rejected():
    record = changed(base_record(), {"published_at": datetime(2099, 1, 1, tzinfo=UTC),
                                     "occurred_at": datetime(2099, 1, 1, tzinfo=UTC)})
    with pytest.raises(InvalidSignalError) as info:
        validate_signal_record(record, now=NOW)
    assert info.value.field == "published_at"
    later = NOW + timedelta(minutes=4)
    ok = changed(base_record(), {"published_at": later, "occurred_at": later})
    assert validate_signal_record(ok, now=NOW) is ok


def test_occurred_at_may_exceed_published_at_by_less_than_five_minutes_of_skew():
    ok = changed(base_record(), {"occurred_at": PUBLISHED + timedelta(minutes=4, seconds=59)})
    validate_signal_record(ok, now=NOW)
    late = changed(base_record(), {"occurred_at": PUBLISHED + timedelta(minutes=5, seconds=1)})
    with pytest.raises(InvalidSignalError) as info:
        validate_signal_record(late, now=NOW)
    assert info.value.field == "occurred_at"


def test_json_occurred_at_is_checked_against_the_publication_time_given_in_the_context():
    data = signal_json(occurred_at=(PUBLISHED + timedelta(minutes=6)).isoformat())
    with pytest.raises(ValidationError) as info:
        SignalIn.model_validate(data, context={"published_at": PUBLISHED})
    assert [e["loc"] for e in info.value.errors()] == [("occurred_at",)]
    fine = signal_json(occurred_at=(PUBLISHED + timedelta(minutes=4)).isoformat())
    SignalIn.model_validate(fine, context={"published_at": PUBLISHED})


def test_json_text_occurred_at_is_checked_against_the_current_clock():
    soon = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(ValidationError) as info:
        SignalIn.model_validate_json(json.dumps(signal_json(occurred_at=soon.isoformat())))
    assert "occurred_at: must not be later than published_at" in describe_errors(info.value)
    earlier = datetime.now(UTC) - timedelta(hours=1)
    SignalIn.model_validate_json(json.dumps(signal_json(occurred_at=earlier.isoformat())))


def test_a_missing_avro_field_is_named_by_its_path():
    assert avro_error({"accuracy": DELETE}).field == "accuracy"
    assert avro_error({"subject.kind": DELETE}).field == "subject.kind"
    assert str(avro_error({"summary": DELETE})) == "summary: field required"


def test_non_record_sub_objects_are_rejected_by_name():
    assert avro_error({"location": "21004"}).field == "location"
    assert avro_error({"ftf": "SY"}).field == "ftf"
    assert avro_error({"named_recipients": "ntf"}).field == "named_recipients"
    assert avro_error({"local_sharing": "yes"}).field == "local_sharing"
    assert avro_error({"occurred_at": datetime(2026, 1, 1)}).field == "occurred_at"  # noqa: DTZ001


def test_the_avro_tlp_spelling_is_amber_strict_and_the_json_one_amber_plus_strict():
    validate_signal_record(changed(base_record(), {"tlp": "amber_strict"}), now=NOW)
    assert avro_error({"tlp": "amber+strict"}).field == "tlp"
    SignalIn.model_validate_json(json.dumps(signal_json(tlp="amber+strict")))


def test_owner_named_recipients_pass_with_h2_or_tlp_red():
    for marking in ({"handling": "H2"}, {"tlp": "red"}):
        record = changed(base_record(), {"named_recipients": ["tfl:brussel", "ftf-db"],
                                         **marking})
        validate_signal_record(record, now=NOW)
        SignalIn.model_validate_json(json.dumps(
            signal_json(named_recipients=["tfl:brussel", "ftf-db"], **marking)))


def test_every_demo_scenario_signal_passes_after_an_avro_round_trip(codec: Codec):
    now = datetime.now(UTC)
    count = 0
    for agency, signal in generate(3_000):
        data = codec.encode(SIGNAL, signal.to_avro(agency, now))
        validate_signal_record(codec.decode(data, SIGNAL), now=now)
        count += 1
    assert count == 3_000


def test_a_free_text_subject_id_survives_avro_encoding_but_not_validation(codec: Codec):
    record = changed(base_record(), {"subject.id": FREE_TEXT})
    decoded = codec.decode(codec.encode(SIGNAL, record), SIGNAL)
    assert decoded["subject"]["id"] == FREE_TEXT
    with pytest.raises(InvalidSignalError) as info:
        validate_signal_record(decoded, now=NOW)
    assert info.value.field == "subject.id"


def test_the_json_form_of_a_valid_signal_gives_a_valid_record():
    signal = SignalIn.model_validate_json(json.dumps(signal_json(agency="vsse")))
    validate_signal_record(signal.to_avro(Agency.VSSE, PUBLISHED), now=NOW)


def _withdrawal(**overrides: Any) -> dict[str, Any]:
    return {"event_id": "0a000000-0000-4000-8000-000000000001", "agency": "vsse",
            "subject_id": "P-1", "version": 2, "withdrawn_at": datetime.now(UTC), **overrides}


@pytest.mark.parametrize(("overrides", "field"), [
    ({"event_id": "Peeters, informant report"}, "event_id"),
    ({"event_id": "0A000000-0000-4000-8000-000000000001"}, "event_id"),
    ({"agency": "interpol"}, "agency"),
    ({"subject_id": "Jan Peeters, Hoogstraat 12"}, "subject_id"),
    ({"version": 0}, "version"),
    ({"withdrawn_at": datetime(2026, 1, 1)}, "withdrawn_at"),  # noqa: DTZ001 - naive on purpose
])
def test_a_withdrawal_obeys_the_id_rules_of_a_signal_naming_the_field(overrides, field):
    with pytest.raises(InvalidSignalError) as info:
        validate_withdrawal_record(_withdrawal(**overrides))
    assert info.value.field == field
    value = next(iter(overrides.values()))
    if isinstance(value, str):  # text values never reach the message
        assert value not in str(info.value)


def test_a_valid_withdrawal_passes_unchanged():
    record = _withdrawal()
    assert validate_withdrawal_record(record) is record
