"""The JIB's pure parts: the consensus rules, the policy's ``jib:`` section, the panels file
and the record checks. No broker, no database."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from consumers.jib.panels import DEFAULT_PANELS_FILE, Panels
from consumers.jib.rules import (
    Decision,
    Proposal,
    decision_id,
    open_proposal,
    take_tick,
    take_vote,
)
from planr import territory
from planr.errors import PolicyError, UsageError
from planr.parties import all_parties, parse_party
from planr.topics import Topics
from routing import DEFAULT_POLICY
from routing.jib import JibRouting
from routing.policy import Policy
from scenarios.jib import SECRET_GROUNDS, T0, proposal, vote
from schemas.jib import JibRecordError, check_proposal, check_tick, check_vote

PANEL = ("ocam", "vsse", "polfed")
H = timedelta(hours=1)


def _open(deadline: datetime = T0 + 10 * H, clock: datetime | None = None
          ) -> tuple[Proposal, Decision | None]:
    record = proposal("tfl:brussel", "brussel", "P-1", "insert", at=T0, deadline=deadline)
    return open_proposal(record, PANEL, clock)


def _vote(p: Proposal | None, service: str, choice: str = "approve", at: datetime = T0 + H
          ) -> tuple[str, Decision | None]:
    return take_vote(p, vote(p.proposal_id if p else str(uuid.uuid4()), service, choice, at))


# ---- consensus rules --------------------------------------------------------------------


def test_the_approval_that_completes_the_panel_adopts_at_its_cast_time():
    p, decided = _open()
    assert decided is None
    assert _vote(p, "ocam", at=T0 + H) == ("counted", None)
    assert _vote(p, "polfed", at=T0 + 2 * H) == ("counted", None)
    status, decision = _vote(p, "vsse", at=T0 + 3 * H)
    assert status == "counted"
    assert decision is not None
    assert decision.record()["outcome"] == "adopted"
    assert decision.record()["decided_at"] == T0 + 3 * H
    assert decision.record()["approvals"] == ["ocam", "polfed", "vsse"]


def test_the_first_objection_rejects_and_later_approvals_change_nothing():
    p, _ = _open()
    _vote(p, "ocam")
    status, decision = _vote(p, "polfed", "object", at=T0 + 2 * H)
    assert decision is not None
    assert (status, p.outcome, p.decided_at) == ("counted", "rejected", T0 + 2 * H)
    assert _vote(p, "vsse") == ("decided", None)
    assert (p.outcome, p.approvals, p.objections) == ("rejected", ["ocam"], ["polfed"])


def test_refusals_name_the_first_reason_that_applies():
    p, _ = _open()
    assert _vote(None, "ocam") == ("unknown_proposal", None)
    assert _vote(p, "nccn") == ("not_required", None)
    assert _vote(p, "ocam", at=T0 + 10 * H) == ("late", None)  # at the deadline is late
    _vote(p, "ocam")
    assert _vote(p, "ocam", "object") == ("already_voted", None)
    assert p.objections == []


def test_a_tick_expires_open_proposals_whose_deadline_it_reached_at_the_deadline():
    early, _ = _open(deadline=T0 + 2 * H)
    late, _ = _open(deadline=T0 + 9 * H)
    done, _ = _open(deadline=T0 + H)
    _vote(done, "ocam", "object", at=T0)
    expired = take_tick([late, early, done], T0 + 5 * H)
    assert [d.proposal for d in expired] == [early]
    assert (early.outcome, early.decided_at) == ("expired", T0 + 2 * H)
    assert (late.outcome, done.outcome) == (None, "rejected")


def test_a_proposal_past_the_jib_clock_expires_on_arrival():
    p, decision = _open(deadline=T0 + H, clock=T0 + 2 * H)
    assert decision is not None
    assert p.outcome == "expired"


def test_decision_ids_are_one_per_proposal_and_stable():
    pid = str(uuid.uuid4())
    assert decision_id(pid) == decision_id(pid) != decision_id(str(uuid.uuid4()))


# ---- the policy's jib section -----------------------------------------------------------


def _routing(text: str | None = None) -> JibRouting:
    policy = Policy.from_text(text) if text else Policy.load(DEFAULT_POLICY)
    return JibRouting(policy.document.jib, policy.version)


def test_shipped_policy_sends_proposals_to_the_panel_and_the_outcome_to_the_proposer():
    r = _routing()
    sent = r.decide("proposal", proposer="tfl:brussel", panel=PANEL, action="insert")
    assert {x.recipient for x in sent if x.allowed} == set(PANEL)
    assert [(x.recipient, x.rule) for x in sent if not x.allowed] == [
        ("tfl:brussel", "default-deny")]
    out = r.decide("decision", proposer="tfl:brussel", panel=PANEL, action="insert",
                   outcome="expired")
    assert {x.recipient for x in out if x.allowed} == {*PANEL, "tfl:brussel"}


def test_jib_forbid_overrides_permit_and_conditions_select():
    shipped = DEFAULT_POLICY.read_text("utf-8")
    end = shipped.index("\nrules:")  # the JIB section comes before the signal rules
    text = shipped[:end] + (
        "\n    - id: jib-no-removals-to-tfl\n      effect: forbid\n"
        "      description: Removals are not sent to local taskforces.\n"
        "      messages: [decision]\n      recipients: [proposer]\n"
        "      when: {action: [remove], proposer: [tfl]}\n") + shipped[end:]
    r = _routing(text)
    out = {x.recipient: x for x in r.decide("decision", proposer="tfl:liege", panel=PANEL,
                                            action="remove", outcome="adopted")}
    assert (out["tfl:liege"].allowed, out["tfl:liege"].rule) == (False, "jib-no-removals-to-tfl")
    kept = {x.recipient: x for x in r.decide("decision", proposer="tfl:liege", panel=PANEL,
                                             action="insert", outcome="adopted")}
    assert kept["tfl:liege"].allowed


def test_without_a_jib_section_nothing_is_routed():
    text = DEFAULT_POLICY.read_text("utf-8")
    text = text[: text.index("\njib:")] + text[text.index("\nrules:"):]
    routes = _routing(text).decide("proposal", proposer="vsse", panel=PANEL, action="insert")
    assert routes
    assert not any(x.allowed for x in routes)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("recipients: [panel]", "recipients: [everyone]", "jib.rules.0.recipients.0"),
    ("messages: [proposal]", "messages: []", "an empty list matches nothing"),
    ("id: jib-decision-to-panel", "id: jib-proposal-to-panel", "is used twice"),
    ("messages: [proposal]", "messages: [proposal]\n      when: {outcome: [adopted]}",
     "can never match"),
])
def test_jib_section_errors_name_their_line(old, new, message):
    text = DEFAULT_POLICY.read_text("utf-8")
    jib_at = text.index("\njib:")
    head, tail = text[:jib_at], text[jib_at:]
    changed = head + tail.replace(old, new, 1)
    at = jib_at + tail.index(old)  # the error is on the last line of the replacement
    line = changed[:at].count("\n") + 1 + new.count("\n")
    with pytest.raises(PolicyError) as err:
        Policy.from_text(changed, "p.yaml")
    assert message in str(err.value)
    assert f"p.yaml: line {line}:" in str(err.value)


# ---- panels, parties, topics ------------------------------------------------------------


def test_shipped_panels_cover_every_arrondissement():
    panels = Panels.load(DEFAULT_PANELS_FILE)
    assert set(panels.panels) == set(territory.arrondissement_ids())
    assert all(panels.of(a) for a in territory.arrondissement_ids())


@pytest.mark.parametrize(("body", "line", "message"), [
    ("  brussel: [ocam, vsse, ocam]\n", 4, "listed twice"),
    ("  brussel: []\n", 4, "at least one service"),
    ("  brussel: [ocam, nobody]\n", 4, "panels.brussel.1"),
    ("  atlantis: [ocam]\n", 4, "not a judicial arrondissement"),
    ("  brussel: [ocam]\n  brussel: [vsse]\n", 5, "given twice"),
])
def test_panel_file_errors_name_their_line(body, line, message):
    others = "".join(f"  {a}: [ocam]\n" for a in territory.arrondissement_ids()
                     if a != "brussel")
    text = "version: 1\n# the panels\npanels:\n" + body + others
    with pytest.raises(UsageError) as err:
        Panels.from_text(text, "panels.yaml")
    assert f"panels.yaml: line {line}:" in str(err.value)
    assert message in str(err.value)


def test_a_missing_arrondissement_is_refused():
    with pytest.raises(UsageError, match=r"missing arrondissements: .*liege"):
        Panels.from_text("version: 1\npanels:\n  brussel: [ocam]\n")


def test_parties_are_the_services_and_the_local_taskforces():
    assert len(all_parties()) == 26
    assert parse_party("tfl:brussel") == "tfl:brussel"
    for bad in ("tfl:atlantis", "wg:internet", "VSSE", "tfl:", "tfl:brussel "):
        with pytest.raises(UsageError) as err:
            parse_party(bad)
        assert bad not in str(err.value) or bad == "tfl:"  # the message shows the form
    assert Topics("p").jib_delivery("tfl:liege") == "p.jib.deliver.tfl.liege"
    assert Topics("p").jib_delivery("mp") == "p.jib.deliver.service.mp"


# ---- record checks ----------------------------------------------------------------------


def _proposal(**changes: Any) -> dict[str, Any]:
    return {**proposal("vsse", "brussel", "P-1", "insert", at=T0, deadline=T0 + H), **changes}


@pytest.mark.parametrize(("changes", "field"), [
    ({"proposal_id": "not-a-uuid"}, "proposal_id"),
    ({"proposer": "wg:internet"}, "proposer"),
    ({"arrondissement": "atlantis"}, "arrondissement"),
    ({"proposer": "tfl:liege"}, "arrondissement"),  # a TFL proposes for its own
    ({"subject_id": "Jane Doe, Molenbeek"}, "subject_id"),
    ({"action": "delete"}, "action"),
    ({"grounds": "   "}, "grounds"),
    ({"grounds": "x" * 4001}, "grounds"),
    ({"deadline": T0}, "deadline"),
    ({"deadline": T0 + timedelta(days=93)}, "deadline"),
])
def test_invalid_proposals_name_the_field_never_the_value(changes, field):
    record = _proposal(**changes)
    with pytest.raises(JibRecordError) as err:
        check_proposal(record)
    assert err.value.field == field
    assert err.value.reason == "invalid_proposal"
    assert SECRET_GROUNDS not in str(err.value)
    for value in changes.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(err.value)


def test_valid_records_pass_and_bad_votes_and_ticks_are_named():
    check_proposal(_proposal())
    good = vote(str(uuid.uuid4()), "vsse", "object", T0)
    check_vote(good)
    for field, value in (("service", "tfl:brussel"), ("choice", "abstain"), ("reason", "")):
        with pytest.raises(JibRecordError) as err:
            check_vote({**good, field: value})
        assert (err.value.field, err.value.reason) == (field, "invalid_vote")
    with pytest.raises(JibRecordError, match="tick_id"):
        check_tick({"tick_id": "1", "at": T0})
