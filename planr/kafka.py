"""Kafka client creation, in one place.

Broker limitation (read this before changing producer settings): the embedded broker is
Tansu, which implements produce/fetch, consumer groups and commits, but has **no idempotent
producer and no transactions** (``InitProducerId`` fails). Every producer made here therefore
sets ``enable_idempotence=False`` and never uses a ``transactional_id``. Our guarantees come
from ``acks="all"``, committing consumer offsets only after every output is acknowledged
(at-least-once), and deterministic ids that downstream sinks deduplicate on
(effectively-once in every projection).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr


@dataclass(frozen=True)
class KafkaConnection:
    """How to reach the brokers. Built from settings at the entry point."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    client_id: str = "planr-bus"
    #: Tansu completes a group join after half the session timeout: 6 s (the Kafka minimum)
    #: keeps joins at ~3 s on the embedded broker.
    session_timeout_ms: int = 10_000

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        if self.security_protocol in {"SSL", "SASL_SSL"}:
            kwargs["ssl_context"] = ssl.create_default_context()
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kwargs


def make_producer(conn: KafkaConnection, *, linger_ms: int = 5) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas; no idempotence (Tansu lacks it)."""
    return AIOKafkaProducer(
        **conn.client_kwargs(),
        acks="all",
        enable_idempotence=False,
        compression_type="lz4",
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
    )


def make_consumer(
    conn: KafkaConnection, *topics: str, group_id: str | None, max_records: int = 2000
) -> AIOKafkaConsumer:
    """A consumer that never auto-commits: callers commit once outputs are acknowledged."""
    return AIOKafkaConsumer(
        *topics,
        **conn.client_kwargs(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        session_timeout_ms=conn.session_timeout_ms,
        heartbeat_interval_ms=max(500, conn.session_timeout_ms // 4),
    )


def make_admin(conn: KafkaConnection) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**conn.client_kwargs())
