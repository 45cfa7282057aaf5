"""The policy file: it validates on load, names the line of every problem, has a content-hash
version, and its semantics are Cedar's (default deny, forbid overrides permit)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from planr.domain import Agency, Recipient, RecipientClass
from planr.errors import PolicyError
from routing import DEFAULT_POLICY
from routing.engine import DEFAULT_DENY, Engine, Facts
from routing.policy import Policy
from routing.setup import RoutingSetup, prepare
from scenarios.builders import make_signal
from schemas.codec import Codec
from tests.policy_helpers import lines_named, mutate, rejected


@pytest.fixture(scope="module")
def shipped(default_policy_path: Path) -> str:
    return default_policy_path.read_text(encoding="utf-8")


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
    ("unknown location kind", "location_kind: [prison]", "location_kind: [jail]", "jail",
     "location_kind.0: Input should be 'municipality' or 'prison'"),
    ("location kind not a list", "location_kind: [prison]", "location_kind: prison",
     "location_kind", "location_kind: Input should be a valid list"),
    ("ocam_decision not a boolean", "ocam_decision: true", "ocam_decision: sometimes",
     "sometimes", "ocam_decision: Input should be a valid boolean"),
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
