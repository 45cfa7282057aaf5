"""The cluster's ACLs, checked by evaluating them against every topic of the registry.

The oracle here is independent of planr.acls: who may read and write what is written down
below from the bus's design (not from the generated list), and a small Kafka-style matcher
(literal = equal name, prefixed = name starts with the pattern) decides what each entry
grants.
"""

from __future__ import annotations

import json
import shlex
from collections import defaultdict

import pytest

from planr.acls import (
    AclEntry,
    Operation,
    PatternType,
    ResourceType,
    cluster_acls,
    render,
    render_json,
    render_kafka_acls,
)
from planr.domain import Agency, Recipient, RecipientClass, all_recipients
from planr.errors import UsageError
from planr.topics import Topics

TOPICS = Topics("planr")
ALL_TOPICS = TOPICS.everything()
ALL_TOPIC_SET = set(ALL_TOPICS)
ENTRIES = cluster_acls(TOPICS)


Rule = tuple[str, str, str, str, str]  # operation, permission, resource type, pattern, name


def _index(entries: list[AclEntry]) -> dict[str, list[Rule]]:
    by_principal: dict[str, list[Rule]] = defaultdict(list)
    for e in entries:
        by_principal[e.principal].append((str(e.operation), str(e.permission),
                                          str(e.resource_type), str(e.pattern_type),
                                          e.resource_name))
    return dict(by_principal)


BY_PRINCIPAL = _index(ENTRIES)


def _covers(pattern: str, pattern_name: str, name: str) -> bool:
    if pattern == "literal":
        return pattern_name == name
    assert pattern == "prefixed"
    return name.startswith(pattern_name)


def allowed(principal: str, op: str, rtype: str, name: str, by_principal=BY_PRINCIPAL) -> bool:
    return any(
        rop == op and perm == "Allow" and rt == rtype and _covers(pattern, pname, name)
        for rop, perm, rt, pattern, pname in by_principal.get(principal, [])
    )


def topics_with(principal: str, op: str, by_principal=BY_PRINCIPAL) -> set[str]:
    """The registry's topics on which ``principal`` may do ``op`` (same rule as allowed())."""
    out: set[str] = set()
    for rop, perm, rtype, pattern, pname in by_principal.get(principal, []):
        if rop == op and perm == "Allow" and rtype == "topic":
            if pattern == "literal":
                out |= {pname} & ALL_TOPIC_SET
            else:
                out |= {t for t in ALL_TOPICS if _covers(pattern, pname, t)}
    return out


def delivery(cls: str, key: str | None = None) -> str:
    return f"planr.deliver.{cls}" if key is None else f"planr.deliver.{cls}.{key}"


def deliveries_of(*classes: str) -> set[str]:
    return {t for t in ALL_TOPICS if any(t.startswith(f"planr.deliver.{c}.") for c in classes)}


INGRESS = {f"planr.ingress.{a.value}" for a in Agency}
DEAD = "planr.deadletter"
AUDIT = "planr.audit.routing"
FACTS = "planr.internal.ntf-facts"
REMOVALS = "planr.ftf.removals"
CONSULTATIONS = "planr.audit.ftf-consultations"
OCAM_REQUESTS = "planr.ftf.ocam-requests"
#: OCAM answers each service that asks on that service's own topic; OCAM itself never asks.
ASKING = [a for a in Agency if a is not Agency.OCAM]
OCAM_ANSWERS = {a: f"planr.ftf.ocam-answers.{a.value}" for a in ASKING}
JIB_IN = "planr.jib.submissions"
JIB_DECISIONS = "planr.jib.decisions"
JIB_AUDIT = "planr.audit.jib"


def jib_delivery(party: str) -> str:
    """A JIB party's own topic: ``planr.jib.deliver.service.vsse``, ``...tfl.brussel``."""
    if party.startswith("tfl:"):
        return f"planr.jib.deliver.tfl.{party[4:]}"
    return f"planr.jib.deliver.service.{party}"


JIB_DELIVERIES = {t for t in ALL_TOPICS if t.startswith("planr.jib.deliver.")}


def recipient_name(r: Recipient) -> str:
    return r.cls.value if r.key is None else f"{r.cls.value}-{r.key}"


#: principal -> (topics it reads, topics it writes); written from the design, not the code.
SERVICES: dict[str, tuple[set[str], set[str]]] = {
    "User:planr-router": (
        INGRESS | {REMOVALS},  # it retracts what it sent about a person OCAM removed
        deliveries_of("tfl", "wg", "csilr") | {delivery("ftf-db"), AUDIT, FACTS, DEAD},
    ),
    "User:planr-aggregator": ({FACTS}, {delivery("ntf"), DEAD}),
    "User:planr-projector": (
        {delivery("ftf-db")},
        {REMOVALS, CONSULTATIONS, OCAM_REQUESTS, DEAD, *OCAM_ANSWERS.values()},
    ),
    "User:planr-inboxes": (deliveries_of("tfl", "wg", "csilr"), {DEAD}),
    "User:operator": ({DEAD, AUDIT, CONSULTATIONS, JIB_AUDIT, JIB_DECISIONS}, set()),
    "User:planr-jib": ({JIB_IN}, {JIB_IN, JIB_DECISIONS, JIB_AUDIT, DEAD} | JIB_DELIVERIES),
    "User:planr-provisioner": (set(), set()),
}


def expected_access() -> dict[str, tuple[set[str], set[str]]]:
    expected = dict(SERVICES)
    for a in Agency:
        reads = {OCAM_REQUESTS} if a is Agency.OCAM else {OCAM_ANSWERS[a]}
        expected[f"User:agency-{a.value}"] = (reads | {jib_delivery(a.value)},
                                              {f"planr.ingress.{a.value}", JIB_IN})
    for r in all_recipients():
        if r.cls is RecipientClass.TFL:  # a local taskforce proposes to the JIB too
            expected[f"User:{recipient_name(r)}"] = ({TOPICS.delivery(r), jib_delivery(str(r))},
                                                     {JIB_IN})
        elif r.cls is not RecipientClass.FTF_DB:
            expected[f"User:{recipient_name(r)}"] = ({TOPICS.delivery(r)}, set())
    return expected


EXPECTED = expected_access()


def test_registry_has_the_topics_the_oracle_names():
    for name in (*INGRESS, DEAD, AUDIT, FACTS, REMOVALS, CONSULTATIONS, OCAM_REQUESTS,
                 *OCAM_ANSWERS.values(),
                 delivery("ntf"), delivery("ftf-db"), delivery("tfl", "brussel"), JIB_IN,
                 JIB_DECISIONS, JIB_AUDIT, jib_delivery("vsse"), jib_delivery("tfl:brussel")):
        assert name in ALL_TOPICS


def test_every_principal_reads_and_writes_exactly_the_topics_of_its_job():
    assert set(BY_PRINCIPAL) == set(EXPECTED)
    for principal, (reads, writes) in EXPECTED.items():
        assert topics_with(principal, "Read") == reads, principal
        assert topics_with(principal, "Write") == writes, principal


@pytest.mark.parametrize("agency", list(Agency))
def test_each_agency_writes_only_its_own_ingress_topic_and_the_jib_input(agency):
    assert topics_with(f"User:agency-{agency.value}", "Write") == {
        f"planr.ingress.{agency.value}", JIB_IN}


def test_each_jib_party_reads_only_its_own_jib_delivery_topic():
    parties = [a.value for a in Agency] + [str(r) for r in all_recipients()
                                           if r.cls is RecipientClass.TFL]
    assert len(parties) == 26
    for party in parties:
        name = party.replace(":", "-") if ":" in party else f"agency-{party}"
        principal = f"User:{name}"
        assert topics_with(principal, "Read") & JIB_DELIVERIES == {jib_delivery(party)}, party


def test_the_jib_input_is_read_by_the_consensus_process_only():
    readers = {p for p in BY_PRINCIPAL if allowed(p, "Read", "topic", JIB_IN)}
    assert readers == {"User:planr-jib"}


def test_no_recipient_reads_another_recipients_delivery_topic():
    deliveries = {TOPICS.delivery(r) for r in all_recipients()}
    for r in all_recipients():
        if r.cls is RecipientClass.FTF_DB:
            continue
        readable = topics_with(f"User:{recipient_name(r)}", "Read")
        assert readable & deliveries == {TOPICS.delivery(r)}, str(r)


def test_ocam_answers_to_a_service_are_readable_by_that_service_only():
    assert "planr.ftf.ocam-answers.ocam" not in ALL_TOPIC_SET
    for agency, topic in OCAM_ANSWERS.items():
        readers = {p for p in BY_PRINCIPAL if allowed(p, "Read", "topic", topic)}
        assert readers == {f"User:agency-{agency.value}"}, topic
        writers = {p for p in BY_PRINCIPAL if allowed(p, "Write", "topic", topic)}
        assert writers == {"User:planr-projector"}, topic


def test_each_agency_has_its_own_consumer_groups_only():
    candidates = [f"agency-{a.value}.answers" for a in Agency] + ["agency-ocam.requests",
                                                                    "planr-router"]
    for agency in Agency:
        readable = {
            g for rop, _perm, rtype, pattern, pname in BY_PRINCIPAL[f"User:agency-{agency.value}"]
            if rop == "Read" and rtype == "group"
            for g in candidates if _covers(pattern, pname, g)
        }
        assert readable == {g for g in candidates if g.startswith(f"agency-{agency.value}.")}


def test_dead_letters_are_readable_by_the_operator_only():
    readers = {p for p in BY_PRINCIPAL if allowed(p, "Read", "topic", DEAD)}
    assert readers == {"User:operator"}


def test_ingress_topics_are_read_by_the_router_only():
    for topic in INGRESS:
        readers = {p for p in BY_PRINCIPAL if allowed(p, "Read", "topic", topic)}
        assert readers == {"User:planr-router"}, topic


def test_the_ntf_delivery_topic_is_written_by_the_aggregator_only():
    writers = {p for p in BY_PRINCIPAL if allowed(p, "Write", "topic", delivery("ntf"))}
    assert writers == {"User:planr-aggregator"}


def test_describe_is_granted_wherever_read_or_write_is():
    for principal in BY_PRINCIPAL:
        for topic in topics_with(principal, "Read") | topics_with(principal, "Write"):
            assert allowed(principal, "Describe", "topic", topic), (principal, topic)


def test_only_the_provisioner_creates_topics_and_it_reads_nothing():
    creators = {p for p in BY_PRINCIPAL if topics_with(p, "Create")}
    assert creators == {"User:planr-provisioner"}
    assert topics_with("User:planr-provisioner", "Create") == set(ALL_TOPICS)
    assert topics_with("User:planr-provisioner", "Read") == set()
    assert topics_with("User:planr-provisioner", "Write") == set()


def test_a_principal_without_entries_may_do_nothing():
    for op in ("Read", "Write", "Describe", "Create"):
        assert topics_with("User:stranger", op) == set()


def test_consumer_groups_are_isolated_per_principal():
    assert allowed("User:planr-router", "Read", "group", "planr-router")
    assert allowed("User:planr-aggregator", "Read", "group", "planr-ntf-aggregator")
    assert not allowed("User:planr-aggregator", "Read", "group", "planr-router")
    names = [recipient_name(r) for r in all_recipients() if r.cls is not RecipientClass.FTF_DB]
    candidates = [f"{n}.inbox" for n in names] + ["planr-router", "planr-ntf-aggregator",
                                                   "operator.replay", "agency-ocam.requests"]
    for name in names:
        readable = {
            g for rop, _perm, rtype, pattern, pname in BY_PRINCIPAL[f"User:{name}"]
            if rop == "Read" and rtype == "group"
            for g in candidates if _covers(pattern, pname, g)
        }
        # its own groups, and no other principal's
        assert readable == {f"{name}.inbox"}, name
    group_holders = {e.principal for e in ENTRIES if e.resource_type is ResourceType.GROUP}
    assert "User:planr-inboxes" not in group_holders  # offsets live in its database
    assert all(e.resource_type is not ResourceType.CLUSTER for e in ENTRIES)


def test_only_allow_entries_are_produced():
    assert {e.permission for e in ENTRIES} == {"Allow"}
    assert {e.host for e in ENTRIES} == {"*"}


def test_prefixed_patterns_keep_the_service_grants_compact():
    inbox_topic_entries = [
        e for e in ENTRIES
        if e.principal == "User:planr-inboxes" and e.resource_type is ResourceType.TOPIC
    ]
    # 589 delivery topics, 3 prefixes (Read + Describe each) and the dead-letter topic
    assert len(inbox_topic_entries) <= 8
    assert len(BY_PRINCIPAL["User:planr-router"]) <= 20


def test_a_custom_topic_prefix_and_group_names_are_honoured():
    other = Topics("bus2")
    entries = _index(cluster_acls(other, router_group="r-prod", aggregator_group="a-prod"))
    assert allowed("User:planr-router", "Read", "group", "r-prod", entries)
    assert not allowed("User:planr-router", "Read", "group", "planr-router", entries)
    assert allowed("User:planr-aggregator", "Read", "group", "a-prod", entries)
    assert allowed("User:agency-vsse", "Write", "topic", "bus2.ingress.vsse", entries)
    assert not allowed("User:agency-vsse", "Write", "topic", "planr.ingress.vsse", entries)


def test_recipients_can_be_restricted():
    chosen = [Recipient(RecipientClass.TFL, "brussel"), Recipient(RecipientClass.FTF_DB)]
    entries = _index(cluster_acls(TOPICS, recipients=chosen))
    assert allowed("User:tfl-brussel", "Read", "topic", delivery("tfl", "brussel"), entries)
    assert "User:tfl-liege" not in entries
    assert "User:ntf" not in entries


def test_empty_group_names_are_refused():
    with pytest.raises(UsageError, match="router_group"):
        cluster_acls(TOPICS, router_group=" ")


def _parse_kafka_acls_line(line: str) -> list[tuple[str, str, str, str, str]]:
    """(principal, resource type, name, pattern, operation) for each operation of a line."""
    args = shlex.split(line)
    assert args[0] == "kafka-acls.sh"
    assert args[args.index("--bootstrap-server") + 1] == "kafka-1:9093"
    assert "--add" in args
    principal = args[args.index("--allow-principal") + 1]
    ops = [args[i + 1] for i, a in enumerate(args) if a == "--operation"]
    if "--topic" in args:
        rtype, name = "topic", args[args.index("--topic") + 1]
    else:
        rtype, name = "group", args[args.index("--group") + 1]
    pattern = "literal"
    if "--resource-pattern-type" in args:
        pattern = args[args.index("--resource-pattern-type") + 1]
    return [(principal, rtype, name, pattern, op) for op in ops]


def _as_tuples(entries: list[AclEntry]) -> set[tuple[str, str, str, str, str]]:
    return {(e.principal, str(e.resource_type), e.resource_name, str(e.pattern_type),
             str(e.operation)) for e in entries}


def test_kafka_acls_lines_grant_exactly_the_entries():
    lines = render_kafka_acls(ENTRIES, bootstrap_server="kafka-1:9093")
    parsed = {t for line in lines for t in _parse_kafka_acls_line(line)}
    assert parsed == _as_tuples(ENTRIES)
    # one line per (principal, resource): operations are merged
    assert len(lines) == len({(e.principal, e.resource_type, e.resource_name) for e in ENTRIES})


def test_kafka_acls_lines_quote_and_carry_the_admin_config():
    entry = AclEntry("User:x y", ResourceType.TOPIC, "t;rm", PatternType.LITERAL, Operation.READ)
    (line,) = render_kafka_acls([entry], bootstrap_server="k:1", command_config="/etc/a b.conf")
    args = shlex.split(line)
    assert args[args.index("--allow-principal") + 1] == "User:x y"
    assert args[args.index("--topic") + 1] == "t;rm"
    assert args[args.index("--command-config") + 1] == "/etc/a b.conf"


def test_json_lists_every_entry():
    data = json.loads(render_json(ENTRIES))
    assert len(data) == len(ENTRIES)
    assert {(d["principal"], d["resource_type"], d["resource_name"], d["pattern_type"],
             d["operation"]) for d in data} == _as_tuples(ENTRIES)
    assert {d["permission"] for d in data} == {"Allow"}


def test_render_checks_format_and_bootstrap_server():
    assert render(ENTRIES[:2], "kafka-acls", bootstrap_server="k:1").count("\n") >= 1
    assert json.loads(render(ENTRIES[:2], "json"))
    with pytest.raises(UsageError, match="bootstrap_server"):
        render(ENTRIES, "kafka-acls")
    with pytest.raises(UsageError, match="bootstrap_server"):
        render(ENTRIES, "kafka-acls", bootstrap_server="")
    with pytest.raises(UsageError, match="format 'yaml'"):
        render(ENTRIES, "yaml")
