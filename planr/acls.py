"""The Kafka ACLs a production cluster needs, per principal, derived from the topic registry.

Need-to-know at the broker: each principal gets exactly the topics its job needs, and nothing
else (Kafka denies whatever no ACL allows, once an authorizer is configured with
``allow.everyone.if.no.acl.found=false``).

* ``User:agency-<id>`` (14): write its own ingress topic; OCAM also reads
  ``<p>.ftf.ocam-requests``, every other service reads its own OCAM answers topic
  ``<p>.ftf.ocam-answers.<id>``, each in its groups ``agency-<id>.*``.
* ``User:tfl-<arrondissement>``, ``User:wg-<id>``, ``User:csilr-<REFNIS>``, ``User:ntf``: read
  its own delivery topic, in consumer groups named ``<name>.*``.
* ``User:planr-router``: read every ingress topic (group ``planr-router``); write the TFL, WG,
  CSIL R and common-database deliveries, the routing audit, the NTF facts and dead letters.
* ``User:planr-aggregator``: read the NTF facts (group ``planr-ntf-aggregator``); write the
  NTF's delivery topic and dead letters.
* ``User:planr-projector``: read the common-database delivery topic; write removals, the
  consultation audit, OCAM requests, OCAM answers (every service's) and dead letters.
* ``User:planr-inboxes``: read every TFL, WG and CSIL R delivery topic; write dead letters.
* ``User:planr-jib``: the JIB's consensus process: read ``<p>.jib.submissions`` (no group: its
  offsets live in its database) and write its ticks there; write the JIB's decisions, its
  per-party delivery topics, its audit topic and dead letters.
* The JIB's parties: each agency and each local taskforce writes ``<p>.jib.submissions`` (its
  records are signed: the consensus process checks the author) and reads its own JIB delivery
  topic (``<p>.jib.deliver.service.<agency>``, ``<p>.jib.deliver.tfl.<arrondissement>``),
  in its groups (``agency-<id>.*``, ``tfl-<arrondissement>.*``).
* ``User:operator``: read dead letters, the audit topics and the JIB's decisions, in groups
  ``operator.*``.
* ``User:planr-provisioner``: create (and describe) the bus's topics.

Reading implies ``Describe`` and so does writing; both are granted explicitly anyway.
The router never writes the NTF's delivery topic (the NTF view is an aggregate: the router
writes minimal facts, the aggregator writes the NTF's topic). The projector and the inbox
service (and the JIB's consensus process) track their offsets in their database, so they use
no consumer group. Prefixed patterns are used only where the prefix covers exactly the topics
granted (``<p>.ingress.``, ``<p>.deliver.tfl.``, ``<p>.deliver.wg.``, ``<p>.deliver.csilr.``,
``<p>.ftf.ocam-answers.``, ``<p>.jib.deliver.``); recipient groups are prefixed with ``<name>.``
(a dot ends the name, so one recipient's prefix never covers another's groups).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from itertools import groupby

from planr.domain import Agency, Recipient, RecipientClass, all_recipients
from planr.errors import UsageError
from planr.parties import all_parties, is_tfl
from planr.topics import Topics, answer_recipients

OPERATOR = "User:operator"
ROUTER = "User:planr-router"
AGGREGATOR = "User:planr-aggregator"
PROJECTOR = "User:planr-projector"
INBOXES = "User:planr-inboxes"
JIB = "User:planr-jib"
PROVISIONER = "User:planr-provisioner"

DEFAULT_ROUTER_GROUP = "planr-router"
DEFAULT_AGGREGATOR_GROUP = "planr-ntf-aggregator"
FORMATS = ("kafka-acls", "json")

#: Recipient classes whose deliveries the inbox service stores (one topic each).
INBOX_CLASSES = (RecipientClass.TFL, RecipientClass.WG, RecipientClass.CSILR)


class ResourceType(StrEnum):
    TOPIC = "topic"
    GROUP = "group"
    CLUSTER = "cluster"


class PatternType(StrEnum):
    LITERAL = "literal"
    PREFIXED = "prefixed"


class Operation(StrEnum):
    """Kafka ACL operations, spelt as ``kafka-acls.sh --operation`` takes them."""

    READ = "Read"
    WRITE = "Write"
    DESCRIBE = "Describe"
    CREATE = "Create"


@dataclass(frozen=True, order=True, slots=True)
class AclEntry:
    """One ALLOW rule: ``principal`` may do ``operation`` on the named resource(s)."""

    principal: str
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    operation: Operation
    permission: str = "Allow"
    host: str = "*"


def agency_principal(agency: Agency | str) -> str:
    return f"User:agency-{Agency(agency).value}"


def recipient_principal(recipient: Recipient) -> str:
    """The principal that reads a recipient's deliveries; the projector for the common DB."""
    if recipient.cls is RecipientClass.FTF_DB:
        return PROJECTOR
    if recipient.key is None:
        return f"User:{recipient.cls.value}"
    return f"User:{recipient.cls.value}-{recipient.key}"


def recipient_group_prefix(recipient: Recipient) -> str:
    """Consumer groups of a recipient are named ``<name>.<anything>``."""
    return recipient_principal(recipient).removeprefix("User:") + "."


def _grant(
    principal: str,
    rtype: ResourceType,
    name: str,
    pattern: PatternType,
    *operations: Operation,
) -> list[AclEntry]:
    return [AclEntry(principal, rtype, name, pattern, op) for op in operations]


def _read_topic(
    principal: str, name: str, pattern: PatternType = PatternType.LITERAL
) -> list[AclEntry]:
    return _grant(principal, ResourceType.TOPIC, name, pattern, Operation.READ, Operation.DESCRIBE)


def _write_topic(
    principal: str, name: str, pattern: PatternType = PatternType.LITERAL
) -> list[AclEntry]:
    return _grant(principal, ResourceType.TOPIC, name, pattern, Operation.WRITE, Operation.DESCRIBE)


def _group(
    principal: str, name: str, pattern: PatternType = PatternType.LITERAL
) -> list[AclEntry]:
    return _grant(principal, ResourceType.GROUP, name, pattern, Operation.READ, Operation.DESCRIBE)


def _class_prefix(topics: Topics, cls: RecipientClass) -> str:
    return f"{topics.prefix}.deliver.{cls.value}."


def _services(topics: Topics, router_group: str, aggregator_group: str) -> list[AclEntry]:
    pre = PatternType.PREFIXED
    ntf = topics.delivery(Recipient(RecipientClass.NTF))
    ftf_db = topics.delivery(Recipient(RecipientClass.FTF_DB))
    out = [
        *_read_topic(ROUTER, f"{topics.prefix}.ingress.", pre),
        *_read_topic(ROUTER, topics.ftf_removals),  # retracts what it sent about a removed person
        *_group(ROUTER, router_group),
        *(e for c in INBOX_CLASSES for e in _write_topic(ROUTER, _class_prefix(topics, c), pre)),
        *_write_topic(ROUTER, ftf_db),
        *_write_topic(ROUTER, topics.audit),
        *_write_topic(ROUTER, topics.ntf_facts),
        *_read_topic(AGGREGATOR, topics.ntf_facts),
        *_group(AGGREGATOR, aggregator_group),
        *_write_topic(AGGREGATOR, ntf),
        *_read_topic(PROJECTOR, ftf_db),
        *_write_topic(PROJECTOR, topics.ftf_removals),
        *_write_topic(PROJECTOR, topics.ftf_consultations),
        *_write_topic(PROJECTOR, topics.ftf_ocam_requests),
        *_write_topic(PROJECTOR, topics.ftf_ocam_answers_prefix(), pre),
        *(e for c in INBOX_CLASSES for e in _read_topic(INBOXES, _class_prefix(topics, c), pre)),
        *_read_topic(OPERATOR, topics.dead_letter),
        *_read_topic(OPERATOR, topics.audit),
        *_read_topic(OPERATOR, topics.ftf_consultations),
        *_read_topic(OPERATOR, topics.jib_audit),
        *_read_topic(OPERATOR, topics.jib_decisions),
        *_read_topic(JIB, topics.jib_submissions),
        *_write_topic(JIB, topics.jib_submissions),
        *_write_topic(JIB, topics.jib_decisions),
        *_write_topic(JIB, f"{topics.prefix}.jib.deliver.", pre),
        *_write_topic(JIB, topics.jib_audit),
        *_group(OPERATOR, "operator.", pre),
        *_grant(PROVISIONER, ResourceType.TOPIC, f"{topics.prefix}.", pre,
                Operation.CREATE, Operation.DESCRIBE),
    ]
    for writer in (ROUTER, AGGREGATOR, PROJECTOR, INBOXES, JIB):
        out += _write_topic(writer, topics.dead_letter)
    return out


def cluster_acls(
    topics: Topics,
    *,
    recipients: Iterable[Recipient] | None = None,
    router_group: str = DEFAULT_ROUTER_GROUP,
    aggregator_group: str = DEFAULT_AGGREGATOR_GROUP,
) -> list[AclEntry]:
    """Every ALLOW entry the bus needs on a cluster whose topics are named by ``topics``.

    ``recipients`` defaults to every recipient of the bus (the common database's deliveries are
    read by the projector, covered by the services' entries). Sorted, without duplicates.
    """
    for label, group in (("router_group", router_group), ("aggregator_group", aggregator_group)):
        if not group.strip():
            raise UsageError(f"{label} is empty")
    entries = _services(topics, router_group, aggregator_group)
    for agency in Agency:
        entries += _write_topic(agency_principal(agency), topics.ingress(agency))
    entries += _read_topic(agency_principal(Agency.OCAM), topics.ftf_ocam_requests)
    for agency in answer_recipients():
        entries += _read_topic(agency_principal(agency), topics.ftf_ocam_answers(agency))
    for agency in Agency:
        principal = agency_principal(agency)
        entries += _group(principal, principal.removeprefix("User:") + ".", PatternType.PREFIXED)
    for r in all_recipients() if recipients is None else recipients:
        if r.cls is RecipientClass.FTF_DB:
            continue
        principal = recipient_principal(r)
        entries += _read_topic(principal, topics.delivery(r))
        entries += _group(principal, recipient_group_prefix(r), PatternType.PREFIXED)
    chosen = None if recipients is None else {str(r) for r in recipients}
    return sorted(set(entries + _jib_parties(topics, chosen)))


def jib_principal(party: str) -> str:
    """``User:agency-vsse`` for a service, ``User:tfl-brussel`` for a local taskforce."""
    if is_tfl(party):
        return recipient_principal(Recipient.parse(party))
    return agency_principal(party)


def _jib_parties(topics: Topics, chosen: set[str] | None) -> list[AclEntry]:
    """Every agency, and the local taskforces among the ``chosen`` recipients (default all)."""
    entries = []
    for party in all_parties():
        if is_tfl(party) and chosen is not None and party not in chosen:
            continue
        principal = jib_principal(party)
        entries += _write_topic(principal, topics.jib_submissions)
        entries += _read_topic(principal, topics.jib_delivery(party))
        entries += _group(principal, principal.removeprefix("User:") + ".", PatternType.PREFIXED)
    return entries


def _resource_args(entry: AclEntry) -> list[str]:
    if entry.resource_type is ResourceType.CLUSTER:
        args = ["--cluster"]
    else:
        args = [f"--{entry.resource_type.value}", entry.resource_name]
    if entry.pattern_type is PatternType.PREFIXED:
        args += ["--resource-pattern-type", "prefixed"]
    return args


def render_kafka_acls(
    entries: Sequence[AclEntry],
    *,
    bootstrap_server: str,
    command_config: str | None = None,
    command: str = "kafka-acls.sh",
) -> list[str]:
    """``kafka-acls.sh --add`` command lines, one per (principal, resource), operations merged.

    ``command_config`` is the client properties file (``--command-config``) of the admin who
    runs them. Every argument is shell-quoted.
    """
    if not bootstrap_server.strip():
        raise UsageError("bootstrap_server is empty")
    head = [command, "--bootstrap-server", bootstrap_server]
    if command_config is not None:
        head += ["--command-config", command_config]

    def same_target(e: AclEntry) -> tuple[str, str, str, str, str, str]:
        return (e.principal, e.resource_type, e.resource_name, e.pattern_type, e.permission,
                e.host)

    lines = []
    for (principal, *_rest), group in groupby(sorted(entries, key=same_target), key=same_target):
        items = list(group)
        if items[0].permission != "Allow":  # pragma: no cover - only ALLOW entries are built
            raise UsageError(f"unsupported permission {items[0].permission!r}")
        args = [*head, "--add", "--allow-principal", principal]
        if items[0].host != "*":
            args += ["--allow-host", items[0].host]
        for op in sorted({e.operation.value for e in items}):
            args += ["--operation", op]
        args += _resource_args(items[0])
        lines.append(shlex.join(args))
    return lines


def render_json(entries: Sequence[AclEntry]) -> str:
    """The entries as a JSON array of objects (one per principal, resource and operation)."""
    return json.dumps([{k: str(v) for k, v in asdict(e).items()} for e in entries], indent=2)


def render(
    entries: Sequence[AclEntry],
    fmt: str,
    *,
    bootstrap_server: str | None = None,
    command_config: str | None = None,
) -> str:
    """One text for the CLI: ``kafka-acls`` (needs ``bootstrap_server``) or ``json``."""
    if fmt == "json":
        return render_json(entries) + "\n"
    if fmt == "kafka-acls":
        if bootstrap_server is None:
            raise UsageError("format kafka-acls needs bootstrap_server")
        lines = render_kafka_acls(
            entries, bootstrap_server=bootstrap_server, command_config=command_config
        )
        return "".join(line + "\n" for line in lines)
    raise UsageError(f"format {fmt!r} is not one of " + ", ".join(FORMATS))
