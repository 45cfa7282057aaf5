"""Structured logging and Prometheus metrics.

Need-to-know applies here too: log events and metric labels carry ids and labels (agency,
recipient class, outcome, reason) and never signal content (summaries, grounds, subjects'
details) or key material.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import threading
from functools import cache
from typing import Literal
from weakref import WeakKeyDictionary

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def configure_logging(
    fmt: Literal["json", "console"] = "console", level: str = "info"
) -> None:
    """Configure structlog once, at the entry point. Logs go to stderr."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class Metrics:
    """Every metric of planr-bus, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.signals_published = Counter(
            "planr_signals_published",
            "Signals published to an ingress topic, by agency.",
            ["agency"],
            registry=registry,
        )
        self.signals_routed = Counter(
            "planr_signals_routed",
            "Signals taken through the need-to-know decision, by source agency.",
            ["agency"],
            registry=registry,
        )
        self.decisions = Counter(
            "planr_routing_decisions",
            "Need-to-know decisions, by recipient class and outcome.",
            ["recipient_class", "outcome"],
            registry=registry,
        )
        self.retractions = Counter(
            "planr_retractions",
            "Retractions sent to recipients, by reason (withdrawn, not_entitled, "
            "removed_from_database).",
            ["reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "planr_dead_letters",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.routing_latency = Histogram(
            "planr_routing_latency_seconds",
            "From publication of a signal to acknowledgement of its deliveries.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "planr_router_batch_records",
            "Records per routing batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.policy_info = Gauge(
            "planr_policy_info",
            "The policy version in force (value 1).",
            ["version"],
            registry=registry,
        )
        self._declare_runtime(registry)

    def _declare_runtime(self, registry: CollectorRegistry) -> None:
        """Decisions by rule and the state of the running services."""
        self.denials = Counter(
            "planr_routing_denials",
            "Deny decisions, by recipient class and deciding rule of the policy.",
            ["recipient_class", "rule"],
            registry=registry,
        )
        self.allowances = Counter(
            "planr_routing_allowances",
            "Allow decisions, by recipient class and deciding rule of the policy.",
            ["recipient_class", "rule"],
            registry=registry,
        )
        rt = self.runtime = runtime_metrics(registry)
        self.consumer_lag, self.broker_connected = rt.consumer_lag, rt.broker_connected
        self.broker_outages, self.build_info = rt.broker_outages, rt.build_info


class RuntimeMetrics:
    """The state of a running service (lag, broker connection, build): one set per registry,
    shared by :class:`Metrics` and the store consumers' metrics (see :func:`runtime_metrics`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumer_lag = Gauge(
            "planr_consumer_lag_records",
            "Records not yet consumed (high watermark minus position), by consumer group "
            "(or store consumer), topic and partition.",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.broker_connected = Gauge(
            "planr_broker_connected",
            "1 while the service's Kafka clients reach the brokers, 0 otherwise.",
            ["service"],
            registry=registry,
        )
        self.broker_outages = Counter(
            "planr_broker_outages",
            "Times the service found the brokers unreachable (at start or while running).",
            ["service"],
            registry=registry,
        )
        self.build_info = Gauge(
            "planr_build_info",
            "The planr-bus version, the policy version in force and a digest of the Avro "
            "schemas' fingerprints (value 1).",
            ["version", "policy_version", "schemas"],
            registry=registry,
        )


_RUNTIME: WeakKeyDictionary[CollectorRegistry, RuntimeMetrics] = WeakKeyDictionary()
_RUNTIME_LOCK = threading.Lock()


def runtime_metrics(registry: CollectorRegistry) -> RuntimeMetrics:
    """The runtime metrics of ``registry``, registered once however many holders ask."""
    with _RUNTIME_LOCK:
        found = _RUNTIME.get(registry)
        if found is None:
            found = _RUNTIME[registry] = RuntimeMetrics(registry)
        return found


def set_build_info(runtime: RuntimeMetrics, *, policy_version: str, schemas: str) -> None:
    """Publish ``planr_build_info`` (one series, value 1) for this process."""
    try:
        version = importlib.metadata.version("planr-bus")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        version = "unknown"
    runtime.build_info.clear()
    runtime.build_info.labels(version, policy_version, schemas).set(1)

@cache
def default_metrics() -> Metrics:
    """The process-wide metrics on prometheus_client's default registry."""
    return Metrics(REGISTRY)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics of the default registry over HTTP (a daemon thread)."""
    _start_http_server(port, addr=host, registry=REGISTRY)
