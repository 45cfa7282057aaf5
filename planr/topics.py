"""Topic naming and provisioning.

Naming scheme (``<p>`` is the topic prefix, ``planr`` by default)::

    <p>.ingress.<agency>           one per publishing service (14)
    <p>.deliver.tfl.<arrondissement>
    <p>.deliver.wg.<group>
    <p>.deliver.csilr.<REFNIS>
    <p>.deliver.ftf-db             the common-database projector's input
    <p>.deliver.ntf                aggregates for the National Taskforce
    <p>.audit.routing              one RoutingDecision per routed signal (every candidate)
    <p>.internal.ntf-facts         minimal facts the NTF aggregator counts
    <p>.deadletter                 records that could not be processed, with a reason
    <p>.ftf.removals, <p>.ftf.ocam-requests, <p>.audit.ftf-consultations
    <p>.ftf.ocam-answers.<agency>  OCAM's answers to one service's forwarded requests (13)
    <p>.jib.submissions            JIB proposals, votes and clock ticks (one partition)
    <p>.jib.decisions              every JIB decision (ids and labels)
    <p>.jib.deliver.service.<agency>
    <p>.jib.deliver.tfl.<arrondissement>
                                   what the need-to-know policy routes to one JIB party
    <p>.audit.jib                  JIB routing decisions, refused votes, consultations

One topic per recipient lets broker ACLs isolate each recipient. :func:`provision` creates
them with a replication factor and a ``min.insync.replicas`` given by the caller (production:
3 and 2, so that an acknowledged record (``acks=all``) is on two brokers at least).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from planr.domain import Agency, Recipient, all_recipients
from planr.errors import BrokerError, TopicError, UsageError
from planr.kafka import KafkaConnection, make_admin
from planr.parties import TFL_PREFIX, all_parties, is_tfl, parse_party

log = structlog.get_logger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class Topics:
    prefix: str = "planr"

    def ingress(self, agency: Agency | str) -> str:
        return f"{self.prefix}.ingress.{Agency(agency).value}"

    def agency_of_ingress(self, topic: str) -> Agency | None:
        head = f"{self.prefix}.ingress."
        if not topic.startswith(head):
            return None
        try:
            return Agency(topic[len(head) :])
        except ValueError:
            return None

    def all_ingress(self) -> list[str]:
        return [self.ingress(a) for a in Agency]

    def delivery(self, recipient: Recipient) -> str:
        if recipient.key is None:
            return f"{self.prefix}.deliver.{recipient.cls.value}"
        return f"{self.prefix}.deliver.{recipient.cls.value}.{recipient.key}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}.audit.routing"

    @property
    def ntf_facts(self) -> str:
        return f"{self.prefix}.internal.ntf-facts"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def ftf_removals(self) -> str:
        """Removal events of the common database (ids only), for holders of a fiche."""
        return f"{self.prefix}.ftf.removals"

    @property
    def ftf_consultations(self) -> str:
        """Audit of every consultation of the common database."""
        return f"{self.prefix}.audit.ftf-consultations"

    @property
    def ftf_ocam_requests(self) -> str:
        """Consultations by services with indirect access, forwarded to OCAM."""
        return f"{self.prefix}.ftf.ocam-requests"

    def ftf_ocam_answers(self, agency: Agency | str) -> str:
        """OCAM's answers to the requests one service forwarded; read by that service only."""
        return f"{self.ftf_ocam_answers_prefix()}{Agency(agency).value}"

    def ftf_ocam_answers_prefix(self) -> str:
        """The common start of every OCAM answers topic (and of nothing else)."""
        return f"{self.prefix}.ftf.ocam-answers."

    def all_ftf_ocam_answers(self) -> list[str]:
        """One answers topic per service except OCAM, which answers and never asks."""
        return [self.ftf_ocam_answers(a) for a in answer_recipients()]

    @property
    def jib_submissions(self) -> str:
        """The JIB's one input: proposals, votes and ticks, in one total order."""
        return f"{self.prefix}.jib.submissions"

    @property
    def jib_decisions(self) -> str:
        """Every decision of the JIB (ids and labels, no grounds)."""
        return f"{self.prefix}.jib.decisions"

    @property
    def jib_audit(self) -> str:
        """The JIB's routing decisions, refused votes and consultations."""
        return f"{self.prefix}.audit.jib"

    def jib_delivery(self, party: str) -> str:
        """What the policy routes to one party: ``<p>.jib.deliver.service.vsse``,
        ``<p>.jib.deliver.tfl.brussel``."""
        party = parse_party(party)
        if is_tfl(party):
            return f"{self.prefix}.jib.deliver.tfl.{party.removeprefix(TFL_PREFIX)}"
        return f"{self.prefix}.jib.deliver.service.{party}"

    def all_jib(self) -> list[str]:
        return [self.jib_submissions, self.jib_decisions, self.jib_audit,
                *(self.jib_delivery(p) for p in all_parties())]

    def everything(self) -> list[str]:
        return [
            *self.all_ingress(),
            *(self.delivery(r) for r in all_recipients()),
            self.audit,
            self.ntf_facts,
            self.dead_letter,
            self.ftf_removals,
            self.ftf_consultations,
            self.ftf_ocam_requests,
            *self.all_ftf_ocam_answers(),
            *self.all_jib(),
        ]


def answer_recipients() -> list[Agency]:
    """The services that may receive OCAM's answers: every one but OCAM itself."""
    return [a for a in Agency if a is not Agency.OCAM]


def partitions_for(topics: Topics, name: str) -> int:
    """Ingress and audit topics are partitioned by subject/event key; deliveries are small."""
    if name.startswith(f"{topics.prefix}.ingress.") or name == topics.audit:
        return 3
    return 1


def check_replication(replication_factor: int, min_insync_replicas: int) -> None:
    """Refuse a replication that cannot work: each at least 1, ISR minimum <= replicas."""
    if replication_factor < 1:
        raise UsageError(f"replication_factor must be at least 1, not {replication_factor}")
    if min_insync_replicas < 1:
        raise UsageError(f"min_insync_replicas must be at least 1, not {min_insync_replicas}")
    if min_insync_replicas > replication_factor:
        raise UsageError(f"min_insync_replicas {min_insync_replicas} exceeds replication_factor "
                         f"{replication_factor}: no write with acks=all could succeed")


def new_topic(topics: Topics, name: str, replication_factor: int,
              min_insync_replicas: int) -> NewTopic:
    """The creation request of one topic: its partitions, replicas and ISR minimum."""
    return NewTopic(name, partitions_for(topics, name), replication_factor,
                    topic_configs={"min.insync.replicas": str(min_insync_replicas)})


async def provision(
    conn: KafkaConnection,
    topics: Topics,
    names: Iterable[str] | None = None,
    *,
    replication_factor: int = 1,
    min_insync_replicas: int = 1,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Idempotent: topics
    that exist are left as they are (their replication is not changed)."""
    check_replication(replication_factor, min_insync_replicas)
    wanted = list(names) if names is not None else topics.everything()
    admin = make_admin(conn)
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"broker {conn.bootstrap_servers} refused or unreachable "
                          f"({type(exc).__name__})") from None
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        created: list[str] = []
        for i in range(0, len(missing), 100):
            chunk = missing[i : i + 100]
            response = await admin.create_topics(
                [new_topic(topics, t, replication_factor, min_insync_replicas) for t in chunk]
            )
            for name, code, *_ in response.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != _TOPIC_ALREADY_EXISTS:
                    raise TopicError(f"could not create topic {name}: error code {code}")
        log.info("topics.provisioned", created=len(created), existing=len(wanted) - len(missing),
                 replication_factor=replication_factor, min_insync_replicas=min_insync_replicas)
        return created
    finally:
        await admin.close()
