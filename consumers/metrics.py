"""Metrics of the common database, the durable inboxes and the JIB: labels, never content."""

from __future__ import annotations

from functools import cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from planr.telemetry import LATENCY_BUCKETS, runtime_metrics

#: A consultation is one database transaction: milliseconds, seconds when the store is slow.
CONSULTATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class StoreMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ftf_events = Counter(
            "planr_ftf_events",
            "Events taken by the common-database projector, by agency and outcome.",
            ["agency", "outcome"],
            registry=registry,
        )
        self.ftf_governance = Counter(
            "planr_ftf_governance_audits",
            "Governance audit records (ignored OCAM fields, refused feeds), by reason.",
            ["reason"],
            registry=registry,
        )
        self.ftf_overdue = Gauge(
            "planr_ftf_overdue_reviews",
            "Included entries based on serious indications whose review is overdue.",
            registry=registry,
        )
        self.ftf_removals = Counter(
            "planr_ftf_removals", "Subjects removed from the common database.", registry=registry
        )
        self.ftf_consultations = Counter(
            "planr_ftf_consultations",
            "Consultations of the common database, by access mode and verb.",
            ["access_mode", "verb"],
            registry=registry,
        )
        self.inbox_stored = Counter(
            "planr_inbox_deliveries_stored",
            "Deliveries stored in durable inboxes, by recipient class.",
            ["recipient_class"],
            registry=registry,
        )
        self.duplicates = Counter(
            "planr_store_duplicates_skipped",
            "Records already applied (replays), skipped, by consumer.",
            ["consumer"],
            registry=registry,
        )
        self.bad_records = Counter(
            "planr_store_bad_records",
            "Input records sent to the dead-letter topic by a store consumer, by reason.",
            ["consumer", "reason"],
            registry=registry,
        )
        self.jib_expiring = Gauge(
            "planr_jib_proposals_expiring",
            "JIB proposals whose expiry is near and that are not yet decided.",
            registry=registry,
        )
        self.outbox_sent = Counter(
            "planr_outbox_sent",
            "Outbox messages acknowledged by the broker, by kind.",
            ["kind"],
            registry=registry,
        )
        self._ntf(registry)
        self._jib(registry)
        self._domain(registry)
        self._runtime(registry)

    def _runtime(self, registry: CollectorRegistry) -> None:
        """Delivery -> applied latency, and the runtime metrics shared with Metrics."""
        self.applied_latency = Histogram(
            "planr_store_apply_latency_seconds",
            "From a record's production (its broker timestamp) to its application in a store "
            "consumer's database (the batch's commit), by consumer.",
            ["consumer"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        rt = self.runtime = runtime_metrics(registry)  # shared with Metrics on one registry
        self.consumer_lag, self.broker_connected = rt.consumer_lag, rt.broker_connected
        self.broker_outages, self.build_info = rt.broker_outages, rt.build_info

    def _ntf(self, registry: CollectorRegistry) -> None:
        """The NTF statistics' metrics (consumers.ntf)."""
        self.ntf_facts = Counter(
            "planr_ntf_facts",
            "NtfFacts counted by the NTF aggregator: counted, or late (their month was already "
            "published).",
            ["outcome"],
            registry=registry,
        )
        self.ntf_months = Counter(
            "planr_ntf_months",
            "Closed months of NTF statistics, published or withheld.",
            ["outcome"],
            registry=registry,
        )
        self.ntf_cells = Counter(
            "planr_ntf_cells_published",
            "Entries of the NTF's month tables published, by status: shown, primary "
            "(below the threshold) or secondary (withheld to protect one).",
            ["status"],
            registry=registry,
        )

    def _jib(self, registry: CollectorRegistry) -> None:
        self.jib_proposals = Counter(
            "planr_jib_proposals",
            "Proposals taken by the JIB's consensus process, by action.",
            ["action"],
            registry=registry,
        )
        self.jib_votes = Counter(
            "planr_jib_votes",
            "Votes taken by the JIB's consensus process: counted, or the refusal reason.",
            ["status"],
            registry=registry,
        )
        self.jib_decisions = Counter(
            "planr_jib_decisions",
            "Decisions of the JIB, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.jib_consultations = Counter(
            "planr_jib_consultations",
            "Consultations of the JIB, by verb and answer class.",
            ["verb", "answer_class"],
            registry=registry,
        )

    def _domain(self, registry: CollectorRegistry) -> None:
        """The domain gauges (refreshed by the services every few seconds, by one aggregate
        query) and the consultation times. Labels are states, verbs and answer classes only."""
        self.ftf_fiches = Gauge(
            "planr_ftf_fiches",
            "Fiches of the common database, by state (proposed, included, removed).",
            ["state"],
            registry=registry,
        )
        self.ftf_ocam_pending = Gauge(
            "planr_ftf_ocam_pending",
            "What waits for OCAM's decision: proposed fiches (fiche) and forwarded "
            "consultations not yet answered (request).",
            ["kind"],
            registry=registry,
        )
        self.jib_open = Gauge(
            "planr_jib_proposals_open", "JIB proposals not yet decided.", registry=registry
        )
        self.ftf_consult_seconds = Histogram(
            "planr_ftf_consultation_seconds",
            "Time to answer a consultation of the common database (and a use of OCAM's "
            "worklist), its logging included, by verb and answer class.",
            ["verb", "answer_class"],
            buckets=CONSULTATION_BUCKETS,
            registry=registry,
        )
        self.jib_consult_seconds = Histogram(
            "planr_jib_consultation_seconds",
            "Time to answer a consultation of the JIB, its logging included, by verb and "
            "answer class.",
            ["verb", "answer_class"],
            buckets=CONSULTATION_BUCKETS,
            registry=registry,
        )


@cache
def default_store_metrics() -> StoreMetrics:
    return StoreMetrics(REGISTRY)
