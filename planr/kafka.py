"""Kafka client creation, in one place.

Broker limitation (read this before changing producer settings): the embedded broker is
Tansu, which implements produce/fetch, consumer groups and commits, but has **no idempotent
producer and no transactions**: it lists ``InitProducerId`` among its APIs, yet answers it
with an error. Producers made here enable idempotence only when
:attr:`KafkaConnection.idempotence` is ``on``, or ``auto`` and a probe of the broker obtained
a producer id (:func:`broker_supports_idempotence`); they never use a ``transactional_id``.
Our guarantees do not depend on idempotence: they come from ``acks="all"``, committing
consumer offsets only after every output is acknowledged (at-least-once), and deterministic
ids that downstream sinks deduplicate on (effectively-once in every projection). Idempotence
only spares the duplicates a producer's own retries would write.

Security: :class:`KafkaConnection` carries SASL credentials (the password is a
``SecretStr`` and stays out of ``repr``, logs and error messages) and TLS files (CA bundle,
client certificate and key). Inconsistent combinations are refused with a
:class:`~planr.errors.UsageError` naming the field, when the connection is built.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import ApiVersionRequest
from aiokafka.protocol.transaction import InitProducerIdRequest
from pydantic import SecretStr

from planr.errors import UsageError

log = structlog.get_logger(__name__)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
IDEMPOTENCE_MODES = ("auto", "on", "off")
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
_TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
_SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


@dataclass(frozen=True)
class KafkaConnection:
    """How to reach the brokers. Built from settings at the entry point.

    ``security_protocol`` is one of :data:`SECURITY_PROTOCOLS`. The ``SASL_*`` protocols need
    ``sasl_mechanism``, ``sasl_username`` and ``sasl_password``; ``PLAIN`` is accepted only
    over ``SASL_SSL`` (it sends the password itself). ``SSL`` and ``SASL_SSL`` verify the
    broker's certificate against ``ssl_cafile`` (the system store when unset) and, unless
    ``ssl_check_hostname`` is off, its host name; ``ssl_certfile``/``ssl_keyfile`` (PEM) give
    a client certificate for brokers that require one.

    ``idempotence`` is one of :data:`IDEMPOTENCE_MODES`: whether producers enable
    idempotence (``auto``: when the broker grants a producer id; see :func:`make_producer`).
    """

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    client_id: str = "planr-bus"
    #: Tansu completes a group join after half the session timeout: 6 s (the Kafka minimum)
    #: keeps joins at ~3 s on the embedded broker.
    session_timeout_ms: int = 10_000
    #: How long a broker may hold a fetch that found nothing new. Apache Kafka answers as soon
    #: as a record arrives, so its default (500) costs no latency there; Tansu answers much
    #: later, so a consumer on it sees a trickle of records up to this long after they were
    #: written (docs/benchmarks.md: lower it there when latency matters; each idle consumer
    #: then fetches more often).
    fetch_max_wait_ms: int = 500
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True
    idempotence: str = "off"

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise UsageError("bootstrap_servers is empty")
        if not 0 <= self.fetch_max_wait_ms <= 30_000:
            raise UsageError(f"fetch_max_wait_ms {self.fetch_max_wait_ms} is not within 0-30000")
        if self.idempotence not in IDEMPOTENCE_MODES:
            raise UsageError(
                f"idempotence {self.idempotence!r} is not one of " + ", ".join(IDEMPOTENCE_MODES)
            )
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise UsageError(
                f"security_protocol {self.security_protocol!r} is not one of "
                + ", ".join(SECURITY_PROTOCOLS)
            )
        self._check_sasl()
        self._check_tls()

    def _check_sasl(self) -> None:
        given = [
            name
            for name in ("sasl_mechanism", "sasl_username", "sasl_password")
            if getattr(self, name) is not None
        ]
        if self.security_protocol not in _SASL_PROTOCOLS:
            if given:
                raise UsageError(
                    f"{given[0]} is set but security_protocol {self.security_protocol} does not "
                    "use SASL (use SASL_SSL or SASL_PLAINTEXT)"
                )
            return
        if self.sasl_mechanism is None:
            raise UsageError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise UsageError(
                f"sasl_mechanism {self.sasl_mechanism!r} is not one of "
                + ", ".join(SASL_MECHANISMS)
            )
        if not self.sasl_username:
            raise UsageError(f"security_protocol {self.security_protocol} needs sasl_username")
        if self.sasl_password is None or not self.sasl_password.get_secret_value():
            raise UsageError(f"security_protocol {self.security_protocol} needs sasl_password")
        if self.sasl_mechanism == "PLAIN" and self.security_protocol != "SASL_SSL":
            raise UsageError(
                "sasl_mechanism PLAIN sends the password itself: use it only with "
                "security_protocol SASL_SSL"
            )

    def _check_tls(self) -> None:
        files = {
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        if self.security_protocol not in _TLS_PROTOCOLS:
            extra = [n for n, v in files.items() if v is not None]
            if self.ssl_key_password is not None:
                extra.append("ssl_key_password")
            if extra:
                raise UsageError(
                    f"{extra[0]} is set but security_protocol {self.security_protocol} does not "
                    "use TLS (use SSL or SASL_SSL)"
                )
            return
        for name, path in files.items():
            if path is not None and not Path(path).is_file():
                raise UsageError(f"{name}: no such file: {path}")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise UsageError("ssl_keyfile is set without ssl_certfile")
        if self.ssl_key_password is not None and self.ssl_certfile is None:
            raise UsageError("ssl_key_password is set without ssl_certfile")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in _TLS_PROTOCOLS

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of SSL/SASL_SSL connections (TLS 1.2 or later); None otherwise."""
        if not self.uses_tls:
            return None
        try:
            ctx = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH,
                cafile=str(self.ssl_cafile) if self.ssl_cafile is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"ssl_cafile: cannot load CA certificates ({type(exc).__name__})"
            ) from exc
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile is not None:
            password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            try:
                ctx.load_cert_chain(
                    str(self.ssl_certfile),
                    str(self.ssl_keyfile) if self.ssl_keyfile is not None else None,
                    password=password,
                )
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(
                    "ssl_certfile/ssl_keyfile: cannot load the client certificate and key "
                    f"({type(exc).__name__})"
                ) from exc
        return ctx

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.security_protocol in _SASL_PROTOCOLS and self.sasl_password is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return kwargs


_INIT_PRODUCER_ID = 22  # the Kafka API key of InitProducerId
_PROBE_TIMEOUT_S = 10.0
_probed: dict[KafkaConnection, bool] = {}
_probed_lock = threading.Lock()


async def broker_supports_idempotence(conn: KafkaConnection) -> bool:
    """Whether the brokers grant idempotent producers: they list ``InitProducerId`` among
    their APIs *and* answer it with a producer id. False when they do not, or cannot be
    asked (the caller then produces without idempotence, which is always safe here)."""
    client = AIOKafkaClient(**conn.client_kwargs(), request_timeout_ms=5_000)
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            await client.bootstrap()
            node = client.get_random_node()
            if node is None:
                return False
            versions = await client.send(node, ApiVersionRequest())
            if not any(key == _INIT_PRODUCER_ID for key, *_ in versions.api_versions):
                return False
            answer = await client.send(node, InitProducerIdRequest(None, 60_000))
            return bool(answer.error_code == 0 and answer.producer_id >= 0)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("kafka.idempotence_probe_failed", error=type(exc).__name__)
        raise
    finally:
        await client.close()


def producer_idempotence(conn: KafkaConnection) -> bool:
    """Whether producers on ``conn`` enable idempotence. ``auto`` probes the brokers once per
    connection (a definite answer is kept; a failed probe means off, and is tried again by
    the next producer). Blocking: the probe runs on its own event loop in a worker thread,
    so this may be called from synchronous code and from inside a running loop alike."""
    if conn.idempotence != "auto":
        return conn.idempotence == "on"
    with _probed_lock:
        known = _probed.get(conn)
    if known is not None:
        return known
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="planr-probe") as pool:
        try:
            answer = pool.submit(asyncio.run, broker_supports_idempotence(conn)).result()
        except (KafkaError, OSError, TimeoutError):
            return False
    with _probed_lock:
        _probed[conn] = answer
    log.info("kafka.idempotence", enabled=answer, mode="auto")
    return answer


def make_producer(conn: KafkaConnection, *, linger_ms: int = 5,
                  compression: str = "lz4") -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas; idempotent per
    :func:`producer_idempotence` (never on Tansu, which lacks it). ``compression``: the
    record batches' codec (``lz4``, ``zstd``, ``snappy``, ``gzip``; aiokafka's levels:
    lz4 at 9, zstd at 3)."""
    return AIOKafkaProducer(
        **conn.client_kwargs(),
        acks="all",
        enable_idempotence=producer_idempotence(conn),
        compression_type=compression,
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
        fetch_max_wait_ms=conn.fetch_max_wait_ms,
        session_timeout_ms=conn.session_timeout_ms,
        heartbeat_interval_ms=max(500, conn.session_timeout_ms // 4),
    )


def make_admin(conn: KafkaConnection) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**conn.client_kwargs())
