"""The channels of the bus: which Avro records travel on which family of topics, keyed how,
signed by whom. One place for what the topic registry (``planr.topics``) cannot know, since
it sees no schema; :mod:`schemas.asyncapi` turns it into the AsyncAPI document.
"""

from __future__ import annotations

from dataclasses import dataclass

from planr import territory
from planr.domain import Agency, Recipient, RecipientClass, WorkingGroup
from planr.topics import Topics, answer_recipients
from schemas import names


@dataclass(frozen=True)
class Family:
    """Topics of one kind: a single topic (``parameter`` None) or one per value."""

    channel: str
    title: str
    address: str  # with ``{parameter}`` where the value goes
    record: str  # full name of the Avro record on it
    key: str  # what the record key is
    parameter: str | None = None
    values: tuple[str, ...] = ()
    view: str | None = None  # the view record a delivery's payload holds
    signed_by: str | None = None  # who signs its records (planr/signing.py), if anyone
    more: tuple[str, ...] = ()  # other records on the same topics

    @property
    def records(self) -> tuple[str, ...]:
        return (self.record, *self.more)

    def topics(self) -> list[str]:
        if self.parameter is None:
            return [self.address]
        return [self.address.replace(f"{{{self.parameter}}}", v) for v in self.values]

    def value_of(self, topic: str) -> str | None:
        """The parameter value of one of this family's topics; '' for a single topic."""
        if self.parameter is None:
            return "" if topic == self.address else None
        head, tail = self.address.split(f"{{{self.parameter}}}")
        if topic.startswith(head) and topic.endswith(tail):
            value = topic[len(head) : len(topic) - len(tail)]
            return value if value in self.values else None
        return None


def families(topics: Topics) -> list[Family]:
    """Every topic family of the bus, in the order of ``Topics.everything()``."""
    p = topics.prefix

    def delivery(cls: RecipientClass, param: str, values: tuple[str, ...], title: str) -> Family:
        return Family(f"deliver-{cls.value}", title, f"{p}.deliver.{cls.value}.{{{param}}}",
                      names.DELIVERY, "event id", param, values,
                      names.view_schema_name(cls.value), "the router", (names.RETRACTION,))

    ftf_db = Recipient(RecipientClass.FTF_DB)
    return [
        Family("ingress", "Signals published by one service", f"{p}.ingress.{{agency}}",
               names.SIGNAL, "subject id", "agency", tuple(a.value for a in Agency),
               signed_by="the publishing agency", more=(names.WITHDRAWAL,)),
        delivery(RecipientClass.TFL, "arrondissement", territory.arrondissement_ids(),
                 "Deliveries to one local taskforce (TFL)"),
        delivery(RecipientClass.WG, "group", tuple(w.value for w in WorkingGroup),
                 "Deliveries to one working group"),
        delivery(RecipientClass.CSILR, "refnis", territory.municipality_ids(),
                 "Deliveries to one municipal CSIL R (REFNIS code)"),
        Family("deliver-ftf-db", "Deliveries to the common database's projector",
               topics.delivery(ftf_db), names.DELIVERY, "event id",
               view=names.view_schema_name("ftf_db"), signed_by="the router",
               more=(names.RETRACTION,)),
        Family("deliver-ntf", "Aggregates for the National Taskforce",
               topics.delivery(Recipient(RecipientClass.NTF)), names.NTF_AGGREGATE,
               "period|arrondissement"),
        Family("audit-routing", "Every need-to-know decision, allow and deny", topics.audit,
               names.ROUTING_DECISION, "event id"),
        Family("internal-ntf-facts", "Minimal facts the NTF aggregator counts",
               topics.ntf_facts, names.NTF_FACT, "event id"),
        Family("deadletter", "Records that could not be processed", topics.dead_letter,
               names.DEAD_LETTER, "the original key, or the source topic"),
        Family("ftf-removals", "Subjects OCAM removed from the common database",
               topics.ftf_removals, names.FTF_REMOVAL, "subject id"),
        Family("audit-ftf-consultations", "Every consultation of the common database",
               topics.ftf_consultations, names.FTF_CONSULTATION, "consulting service"),
        Family("ftf-ocam-requests", "Consultations forwarded to OCAM",
               topics.ftf_ocam_requests, names.OCAM_REQUEST, "consulting service"),
        Family("ftf-ocam-answers", "OCAM's answers to one service's forwarded requests",
               f"{topics.ftf_ocam_answers_prefix()}{{agency}}", names.OCAM_ANSWER,
               "requesting service", "agency", tuple(a.value for a in answer_recipients())),
        *_jib(topics),
    ]


def _jib(topics: Topics) -> list[Family]:
    """The Joint Information Box's topics (docs/jib.md)."""
    p, jib = topics.prefix, "the JIB's consensus process (jib)"
    return [
        Family("jib-submissions", "JIB proposals, votes and clock ticks, in one total order",
               topics.jib_submissions, names.JIB_PROPOSAL, "proposal id",
               signed_by="its author: the proposer, the voting service, jib for a tick",
               more=(names.JIB_VOTE, names.JIB_TICK)),
        Family("jib-decisions", "Every decision of the JIB", topics.jib_decisions,
               names.JIB_DECISION, "proposal id", signed_by=jib),
        Family("jib-deliver-service", "What the policy routes to one service from the JIB",
               f"{p}.jib.deliver.service.{{agency}}", names.JIB_DELIVERY, "recipient",
               "agency", tuple(a.value for a in Agency), signed_by=jib),
        Family("jib-deliver-tfl", "What the policy routes to one local taskforce from the JIB",
               f"{p}.jib.deliver.tfl.{{arrondissement}}", names.JIB_DELIVERY, "recipient",
               "arrondissement", territory.arrondissement_ids(), signed_by=jib),
        Family("audit-jib", "Routing decisions, refused votes and consultations of the JIB",
               topics.jib_audit, names.JIB_AUDIT, "proposal id, or the consulting party",
               signed_by=jib),
    ]
