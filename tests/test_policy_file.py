"""The policy file: it validates on load, names the line of every problem, has a content-hash
version, and its semantics are Cedar's (default deny, forbid overrides permit)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
from planr.errors import PolicyError
from routing import DEFAULT_POLICY
from routing.engine import DEFAULT_DENY, Engine, Facts
from routing.policy import Policy, PolicyDocument
from routing.satisfiable import never_matching
from routing.setup import RoutingSetup, prepare
from scenarios.builders import make_signal
from schemas.codec import Codec


@pytest.fixture(scope="module")
def shipped(default_policy_path: Path) -> str:
    return default_policy_path.read_text(encoding="utf-8")


def mutate(text: str, old: str, new: str, marker: str | None = None) -> tuple[str, int]:
    """Replace the first ``old`` by ``new``; return the text and the line of ``marker`` (a
    word of ``new``; by default, its first line)."""
    at = text.index(old)  # ValueError here means the shipped policy changed: update the anchor
    offset = new.index(marker) if marker is not None else 0
    line = text.count("\n", 0, at) + new.count("\n", 0, offset) + 1
    return text[:at] + new + text[at + len(old) :], line


def rejected(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        Policy.from_text(text, "policy.yaml")
    return str(info.value)


def lines_named(message: str) -> set[int]:
    return {int(n) for n in re.findall(r"line (\d+)", message)}


def decide(setup: RoutingSetup, recipient: str, agency: Agency = Agency.VSSE, **signal: object):
    facts = Facts.of(make_signal(**signal).to_avro(agency))
    return setup.engine.decide_one(facts, Recipient.parse(recipient))


def test_shipped_policy_loads_with_every_class_view_and_rule(routing_setup: RoutingSetup):
    doc = routing_setup.policy.document
    assert set(doc.classes) == set(RecipientClass)
    assert {r.id for r in doc.rules} >= {"tfl-territory", "wg-remit", "csilr-own-commune",
                                         "ftf-db-statuses", "ntf-aggregates"}
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", routing_setup.policy.version)
    assert routing_setup.engine.version == routing_setup.policy.version
    assert routing_setup.views.fields("csilr")  # views were checked against their .avsc


# (what, anchor in the shipped policy, replacement, the word on the faulty line,
#  what the message must say)
REJECTIONS = [
    ("unknown key in a rule", "    effect: forbid\n    description: Handling code H2",
     "    effect: forbid\n    colour: red\n    description: Handling code H2",
     "colour", "Extra inputs"),
    ("unknown condition", "named: false}", "nammed: false}", "nammed", "Extra inputs"),
    ("unknown recipient class", "  ntf:\n    description: National",
     "  nft:\n    description: National", "nft", "classes.nft"),
    ("unknown recipient class in a rule", "    recipients: [wg]\n",
     "    recipients: [wgx]\n", "wgx", "unknown recipient class"),
    ("unknown candidate scope", "candidates: all", "candidates: everyone", "everyone",
     "candidates"),
    ("unknown classification", "classification_above: secret}",
     "classification_above: top_secret}", "top_secret", "classification_above"),
    ("unknown TLP", "tlp: [red]", "tlp: [crimson]", "crimson", "amber+strict"),
    ("unknown handling code", "handling: [H2]", "handling: [H7]", "H7", "'H3'"),
    ("unknown status", "statuses_any: [FTF, HTF, PH, EPV, CTE]",
     "statuses_any: [FTF, HTF, PH, EPV, CTE, FOO]", "FOO", "statuses_any.5"),
    ("unknown phenomenon", "{phenomena: [salafism]}", "{phenomena: [jihadism]}", "jihadism",
     "working_groups.salafism.phenomena.0"),
    ("unknown domain", "{domains: [internet]}", "{domains: [television]}", "television",
     "working_groups.internet.domains.0"),
    ("unknown working group", "  ftf:                        {statuses: [FTF]}",
     "  ftfs:                       {statuses: [FTF]}", "ftfs", "working_groups.ftfs"),
    ("unknown municipality in a condition", "    recipients: [ntf]\n",
     "    recipients: [ntf]\n    when: {location_municipality: ['21004', '99999']}\n",
     "99999", "unknown municipality REFNIS code '99999'"),
    ("unknown arrondissement in a condition", "    recipients: [ntf]\n",
     "    recipients: [ntf]\n    when: {location_arrondissement: [atlantis]}\n", "atlantis",
     "unknown arrondissement id 'atlantis'"),
    ("unknown municipality in a recipient id", "    recipients: [ntf]\n",
     "    recipients: [ntf, csilr:99999]\n", "csilr:99999", "'csilr:99999'"),
    ("unknown arrondissement in a recipient id", "    recipients: [ntf]\n",
     "    recipients: [ntf, tfl:atlantis]\n", "tfl:atlantis", "'tfl:atlantis'"),
    ("duplicated rule id", "  - id: ceiling-wg\n", "  - id: ceiling-tfl\n", "ceiling-tfl",
     "'ceiling-tfl' is used twice"),
    ("reserved rule id", "  - id: ceiling-wg\n", "  - id: default-deny\n", "default-deny",
     "reserved"),
    ("undefined view", "    view: wg\n", "    view: wg_detail\n", "wg_detail",
     "'wg_detail' is not defined"),
    ("view field that a signal lacks", "  csilr: [event_id, occurred_at,",
     "  csilr: [event_id, occurred_on,", "occurred_on", "'occurred_on' is not a field"),
]


@pytest.mark.parametrize(("what", "old", "new", "marker", "says"), REJECTIONS,
                         ids=[r[0] for r in REJECTIONS])
def test_invalid_policy_is_rejected_naming_its_line(shipped, what, old, new, marker, says):
    text, line = mutate(shipped, old, new, marker)
    message = rejected(text)
    assert lines_named(message) == {line}, (what, message)
    assert says in message
    assert message.startswith(f"policy.yaml: line {line}: ")


def test_unknown_top_level_key_is_rejected_naming_its_line(shipped):
    text = shipped.rstrip("\n") + "\n\nextras: {colour: blue}\n"
    message = rejected(text)
    assert lines_named(message) == {text.count("\n")}
    assert "extras" in message


def test_yaml_syntax_error_names_its_line(shipped):
    text, line = mutate(shipped, "  wg:\n    description:", "  wg: [unclosed\n    description:")
    assert lines_named(rejected(text)) & {line, line + 1}


@pytest.mark.parametrize(("old", "new", "only"), [
    ("  csilr: [event_id, occurred_at, subject, location, phenomena, domains, tlp]",
     "  csilr: [event_id, occurred_at, subject, location, phenomena, domains]", "['tlp']"),
    ("  csilr: [event_id, occurred_at, subject, location, phenomena, domains, tlp]",
     "  csilr: [event_id, occurred_at, subject, location, phenomena, domains, tlp, summary]",
     "['summary']"),
])
def test_view_disagreeing_with_its_avsc_is_rejected_naming_its_line(
    shipped, tmp_path, codec: Codec, old, new, only
):
    text, line = mutate(shipped, old, new)
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    Policy.load(path)  # the document alone is valid: only the schema check catches it
    with pytest.raises(PolicyError) as info:
        prepare(path, codec)
    message = str(info.value)
    assert message.startswith(f"{path}: line {line}: views.csilr")
    assert lines_named(message) == {line}
    assert only in message
    assert "CsilrView" in message


def test_version_ignores_comments_and_layout(shipped):
    base = Policy.from_text(shipped).version
    no_comments = "\n".join(ln for ln in shipped.splitlines() if not ln.lstrip().startswith("#"))
    relaid, _ = mutate(no_comments + "\n\n\n", "when: {handling: [H2], named: false}",
                       "when:\n      handling:\n        - H2\n      named: false   # owner")
    assert relaid != shipped
    assert Policy.from_text(relaid).version == base


@pytest.mark.parametrize(("old", "new"), [
    ("when: {classification_above: secret}", "when: {classification_above: confidentiel}"),
    ("{phenomena: [salafism]}", "{phenomena: [salafism, other]}"),
    ("  csilr: [event_id, occurred_at, subject, location, phenomena, domains, tlp]",
     "  csilr: [event_id, occurred_at, subject, location, phenomena, tlp]"),
])
def test_version_changes_when_a_rule_or_view_changes(shipped, old, new):
    changed, _ = mutate(shipped, old, new)
    assert Policy.from_text(changed).version != Policy.from_text(shipped).version


def test_forbid_overrides_permit_for_a_classified_ftf_signal_at_the_database(
    routing_setup: RoutingSetup,
):
    d = decide(routing_setup, "ftf-db", classification="restreint",
               subject={"id": "P-1", "kind": "person", "statuses": ["FTF"]})
    assert not d.allowed
    assert d.rule == "ceiling-ftf-db"
    assert d.rules == ("ceiling-ftf-db",)  # the matching permit does not appear in a denial
    allowed = decide(routing_setup, "ftf-db",
                     subject={"id": "P-1", "kind": "person", "statuses": ["FTF"]})
    assert (allowed.allowed, allowed.rule) == (True, "ftf-db-statuses")


def test_forbid_overrides_permit_whatever_the_rule_order(shipped, codec: Codec, tmp_path):
    extra = ("\n  - id: no-polfed-to-wg\n    effect: forbid\n"
             "    description: Test rule listed after every permit.\n"
             "    recipients: [wg]\n    when: {agency: [polfed]}\n")
    path = tmp_path / "policy.yaml"
    path.write_text(shipped.rstrip("\n") + "\n" + extra, encoding="utf-8")
    setup = prepare(path, codec)
    denied = decide(setup, "wg:salafism", Agency.POLFED, phenomena=["salafism"])
    assert (denied.allowed, denied.rules) == (False, ("no-polfed-to-wg",))
    allowed = decide(setup, "wg:salafism", Agency.VSSE, phenomena=["salafism"])
    assert (allowed.allowed, allowed.rule) == (True, "wg-remit")


def test_default_deny_names_default_deny(routing_setup: RoutingSetup):
    d = decide(routing_setup, "wg:media", domains=["internet"], phenomena=["salafism"])
    assert (d.allowed, d.rule, d.rules) == (False, DEFAULT_DENY, (DEFAULT_DENY,))


def test_without_a_permit_rule_a_class_is_denied_by_default(shipped):
    text, _ = mutate(shipped, "  - id: ntf-aggregates\n    effect: permit",
                     "  - id: ntf-aggregates\n    effect: forbid")
    engine = Engine(Policy.from_text(text))
    facts = Facts.of(make_signal().to_avro(Agency.VSSE))
    (ntf,) = [d for d in engine.decide(facts) if d.recipient.cls is RecipientClass.NTF]
    assert (ntf.allowed, ntf.rule) == (False, "ntf-aggregates")
    no_permit, _ = mutate(shipped, "  - id: ntf-aggregates\n    effect: permit",
                          "  - id: ntf-aggregates\n    effect: permit\n"
                          "    when: {agency: [comreg]}")
    d = Engine(Policy.from_text(no_permit)).decide_one(facts, Recipient(RecipientClass.NTF))
    assert (d.allowed, d.rule) == (False, DEFAULT_DENY)


def test_missing_recipient_class_is_rejected_naming_the_classes_line(shipped):
    text, _ = mutate(shipped, "  ntf:\n    description: National Taskforce; strategic, receives "
                     "aggregates only.\n", "  # ntf: gone\n    # description: gone\n")
    text = text.replace("    candidates: all\n    view: ntf\n", "")
    line = shipped[: shipped.index("\nclasses:")].count("\n") + 2
    message = rejected(text)
    assert lines_named(message) == {line}
    assert "missing recipient classes ['ntf']" in message


def test_view_listing_a_field_twice_is_rejected_naming_its_line(shipped):
    text, line = mutate(shipped, "  csilr: [event_id, occurred_at,",
                        "  csilr: [event_id, event_id, occurred_at,", "csilr")
    message = rejected(text)
    assert lines_named(message) == {line}
    assert "lists a field twice" in message


def test_a_candidate_scope_that_does_not_fit_the_class_is_rejected_with_its_line():
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    lines = text.splitlines()
    number = next(i for i, line in enumerate(lines, 1) if "candidates: remit" in line)
    with pytest.raises(PolicyError) as info:
        Policy.from_text(text.replace("candidates: remit", "candidates: municipality"), "p.yaml")
    assert f"p.yaml: line {number}: classes.wg.candidates" in str(info.value)


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
    ("empty statuses_any list", "statuses_any: [FTF, HTF, PH, EPV, CTE]", "statuses_any: []",
     "statuses_any", "when.statuses_any: an empty list matches no signal"),
    ("empty recipients list", "    recipients: [ntf]\n", "    recipients: []\n", "recipients",
     "recipients: an empty list names no recipient"),
    ("empty except list", "    except: [tfl]\n", "    except: []\n", "except",
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
     "territory", "rules.8.when.territory: the rule can never match"),
    ("remit for CSIL R", "    recipients: [csilr]\n    when: {local_sharing: false}",
     "    recipients: [csilr]\n    when: {local_sharing: false, remit: true}", "remit",
     "rules.7.when.remit: the rule can never match: remit: true holds only for working"),
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
]


@pytest.mark.parametrize(("what", "body", "marker", "says"), NEVER_MATCHING,
                         ids=[r[0] for r in NEVER_MATCHING])
def test_rule_that_can_never_match_is_rejected_naming_its_line(
    shipped, what, body, marker, says
):
    text, line = with_probe(shipped, body, marker)
    message = rejected(text)
    assert lines_named(message) == {line}, (what, message)
    assert message.startswith(f"policy.yaml: line {line}: rules.13.")
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
    "csilr-local-sharing-required": ({"local_sharing": False}, "csilr:21004"),
    "tfl-territory": ({}, "tfl:brussel"),
    "wg-remit": ({"phenomena": ["salafism"]}, "wg:salafism"),
    "csilr-own-commune": ({"local_sharing": True}, "csilr:21004"),
    "ftf-db-statuses": ({}, "ftf-db"),
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
        facts = Facts.of(make_signal(**overrides).to_avro(Agency.VSSE))
        decision = routing_setup.engine.decide_one(facts, Recipient.parse(recipient))
        assert rule.id in decision.rules, (rule.id, decision.rules)


# ---- the check never rejects a rule that the engine can match ------------------------------

COMMUNES = ("21004", "21001", "11002", "24062", "44021", "62063")


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
})
RULES = st.fixed_dictionaries(
    {"id": st.just("probe"), "effect": st.just("forbid"), "description": st.just("Probe."),
     "when": WHEN.map(lambda w: {k: v for k, v in w.items() if v is not None})},
    optional={"recipients": _some(TARGETS, 2), "except": _some(TARGETS, 2)},
)


def random_signal(rng: random.Random) -> Facts:
    """A real signal (validated, Avro-encoded, then read as the router does), drawn at random
    over every marking and a few communes of four arrondissements."""
    def some(values: Iterable[object]) -> list[str]:
        return rng.sample([str(v) for v in values], rng.randint(0, 2))

    handling, tlp = rng.choice(list(Handling)).value, rng.choice(list(Tlp)).value
    pool = ["ntf", "ftf-db", "wg:salafism", "wg:media", f"csilr:{rng.choice(COMMUNES)}",
            "tfl:brussel"]
    signal = make_signal(
        location={"municipality": rng.choice(COMMUNES)}, handling=handling, tlp=tlp,
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
