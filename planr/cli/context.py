"""What every CLI command shares: the settings (read once, here) and helpers built on them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import typer

from planr.kafka import KafkaConnection
from planr.settings import Settings
from planr.telemetry import serve_metrics
from planr.topics import Topics

T = TypeVar("T")


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
        return KafkaConnection(
            bootstrap_servers=servers,
            security_protocol=s.security_protocol,
            sasl_mechanism=s.sasl_mechanism,
            sasl_username=s.sasl_username,
            sasl_password=s.sasl_password,
            session_timeout_ms=s.session_timeout_ms,
        )

    def serve_metrics(self) -> None:
        if self.settings.metrics_port is not None:
            serve_metrics(self.settings.metrics_port, self.settings.metrics_host)


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
