"""The one settings object, read only at the entry point (the CLI).

Library classes never read the environment: they take explicit arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.ftf.governance import DEFAULT_ACCESS_FILE
from routing import DEFAULT_POLICY


class Settings(BaseSettings):
    """planr-bus settings, from ``PLANR_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="PLANR_", frozen=True, extra="ignore")

    bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers; unset means: start the embedded Tansu broker.",
    )
    policy: Path = Field(default=DEFAULT_POLICY, description="Path to the need-to-know policy.")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve Prometheus metrics on this port."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address for the metrics server.")
    log_format: Literal["json", "console"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    topic_prefix: str = Field(default="planr", pattern=r"^[A-Za-z0-9_-]+$")
    data_dir: Path = Field(default=Path(".planr"), description="Local state (databases).")
    ftf_db_url: str | None = Field(
        default=None,
        description="The common database's store; unset means SQLite file ftf.db in data_dir.")
    ledger_db_url: str | None = Field(
        default=None,
        description="The router's ledger (who received what); unset means SQLite file "
                    "ledger.db in data_dir.")
    inbox_db_url: str | None = Field(
        default=None,
        description="The durable inboxes' store, separate from the common database; unset "
                    "means SQLite file inboxes.db in data_dir.")
    ntf_db_url: str | None = Field(
        default=None,
        description="The NTF statistics' store (counts, published months); unset means SQLite "
                    "file ntf.db in data_dir.")
    ftf_access: Path = Field(
        default=DEFAULT_ACCESS_FILE,
        description="Access modes of the services to the common database (FTF / T.E.R.).",
    )
    session_timeout_ms: int = Field(
        default=10_000, ge=2_000, le=300_000,
        description="Consumer-group session timeout; Tansu completes a join after half of it "
                    "(Apache Kafka refuses less than its group.min.session.timeout.ms, 6 s by "
                    "default).",
    )
    fetch_max_wait_ms: int = Field(
        default=500, ge=0, le=30_000,
        description="How long a broker may hold a consumer's fetch that found nothing new; "
                    "Kafka answers as soon as a record arrives, Tansu much later, so lower it "
                    "on Tansu when latency matters.",
    )
    check_process: bool = Field(
        default=True,
        description="The common-database projector checks signatures and decodes its records "
                    "in a process of its own, on another core, while it writes; false: in its "
                    "own process.",
    )
    signing_key: Path | None = Field(
        default=None,
        description="This process's Ed25519 private key file (PEM); its name is the key id.",
    )
    key_registry: Path | None = Field(
        default=None,
        description="The public key registry; unset means PLANR_DATA_DIR/keys/registry.yaml.",
    )
    jib_db_url: str | None = Field(
        default=None,
        description="The JIB's store, separate from the others; unset means SQLite file "
                    "jib.db in data_dir.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(default=None, description="CA bundle (PEM) for TLS.")
    ssl_certfile: Path | None = Field(default=None, description="Client certificate (PEM).")
    ssl_keyfile: Path | None = Field(default=None, description="Client private key (PEM).")
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    replication_factor: int = Field(
        default=1, ge=1, description="Replicas of each topic `planr topics provision` creates.")
    min_insync_replicas: int = Field(
        default=1, ge=1,
        description="min.insync.replicas of each topic created; at most replication_factor.")
    idempotence: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Idempotent producers: auto enables them when the broker grants a producer "
                    "id (Apache Kafka), not on Tansu.")
