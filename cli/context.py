"""What every CLI command shares: the settings (read once, here) and helpers built on them."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import typer
from prometheus_client import REGISTRY

from cli.settings import Settings
from consumers.ftf.governance import AccessConfig
from consumers.store import Database, sqlite_url
from planr.errors import PlanrError, UsageError
from planr.kafka import KafkaConnection
from planr.signing import KeyRegistry, Signer
from planr.telemetry import runtime_metrics, serve_metrics, set_build_info
from planr.topics import Topics
from routing.policy import Policy
from schemas.codec import SchemaStore

T = TypeVar("T")
Store = Literal["ftf", "inboxes", "ledger", "ntf", "jib"]


@dataclass(frozen=True)
class Context:
    settings: Settings

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)

    def connection(self, bootstrap: str | None = None) -> KafkaConnection:
        servers = bootstrap or self.settings.bootstrap_servers
        if servers is None:
            fail(
                "PLANR_BOOTSTRAP_SERVERS is not set. Start a broker with 'planr broker' and "
                "export the address it prints, or use 'planr run --demo' (embedded broker).",
                code=2,
            )
        s = self.settings
        try:
            return KafkaConnection(
                bootstrap_servers=servers,
                security_protocol=s.security_protocol,
                sasl_mechanism=s.sasl_mechanism,
                sasl_username=s.sasl_username,
                sasl_password=s.sasl_password,
                session_timeout_ms=s.session_timeout_ms,
                fetch_max_wait_ms=s.fetch_max_wait_ms,
                ssl_cafile=s.ssl_cafile,
                ssl_certfile=s.ssl_certfile,
                ssl_keyfile=s.ssl_keyfile,
                ssl_key_password=s.ssl_key_password,
                ssl_check_hostname=s.ssl_check_hostname,
                idempotence=s.idempotence,
            )
        except UsageError as exc:  # inconsistent security settings: names the field
            fail(str(exc), code=2)

    @property
    def key_registry_path(self) -> Path:
        return self.settings.key_registry or self.settings.data_dir / "keys" / "registry.yaml"

    def key_registry(self) -> KeyRegistry:
        """The public key registry (``PLANR_KEY_REGISTRY``); exit 2 if it cannot be read."""
        try:
            return KeyRegistry.load(self.key_registry_path)
        except UsageError as exc:
            fail(f"PLANR_KEY_REGISTRY: {exc}", code=2)

    def load_signer(self, owner: str, registry: KeyRegistry | None) -> Signer:
        """This process's key (``PLANR_SIGNING_KEY``) as ``owner``'s, checked against
        ``registry`` when given; UsageError if it is unset, unreadable or not registered."""
        path = self.settings.signing_key
        if path is None:
            raise UsageError(f"PLANR_SIGNING_KEY is not set: this command signs what it "
                             f"produces with a key of {owner}; see 'planr keys generate'")
        signer = Signer.from_file(path, owner=owner)
        if registry is not None:
            registry.check_signer(signer, at=datetime.now(UTC))
        return signer

    def signer(self, owner: str, registry: KeyRegistry | None) -> Signer:
        """:meth:`load_signer`, or exit 2 with the reason."""
        try:
            return self.load_signer(owner, registry)
        except UsageError as exc:
            fail(str(exc) if self.settings.signing_key is None else f"PLANR_SIGNING_KEY: {exc}",
                 code=2)

    def serve_metrics(self) -> None:
        """Serve /metrics (when PLANR_METRICS_PORT is set), with ``planr_build_info``."""
        if self.settings.metrics_port is None:
            return
        try:
            policy_version = Policy.load(self.settings.policy).version
        except UsageError:  # the command that needs the policy says why
            policy_version = "invalid"
        set_build_info(runtime_metrics(REGISTRY), policy_version=policy_version,
                       schemas=SchemaStore.default().digest())
        serve_metrics(self.settings.metrics_port, self.settings.metrics_host)

    def database(self, store: Store) -> Database:
        """The common database (``ftf``), the inboxes' store (``inboxes``), the router's
        ledger (``ledger``), the NTF statistics (``ntf``) or the JIB's (``jib``): separate
        databases, so that access to one grants nothing of the others."""
        s = self.settings
        url = {"ftf": s.ftf_db_url, "inboxes": s.inbox_db_url, "ledger": s.ledger_db_url,
               "ntf": s.ntf_db_url, "jib": s.jib_db_url}[store]
        return Database(url or sqlite_url(s.data_dir, f"{store}.db"))

    def access_config(self) -> AccessConfig:
        try:
            return AccessConfig.load(self.settings.ftf_access)
        except UsageError as exc:
            fail(str(exc), code=2)

    def with_db(self, store: Store, work: Callable[[Database], Awaitable[T]]) -> T:
        """Run ``work`` on the opened store; a store error ends the command in one line."""

        async def go() -> T:
            async with self.database(store) as db:
                return await work(db)

        try:
            return asyncio.run(go())
        except PlanrError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"database unreachable ({type(exc).__name__})")


def get(ctx: typer.Context) -> Context:
    obj = ctx.find_root().obj
    if not isinstance(obj, Context):  # pragma: no cover - the root callback always sets it
        raise TypeError("CLI context not initialised")
    return obj


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def read_text(source: str) -> str:
    """A file's text, or standard input for ``-``; a clear error (exit 2) otherwise."""
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}", code=2)
    except UnicodeDecodeError:
        fail(f"{source} is not UTF-8 text", code=2)
