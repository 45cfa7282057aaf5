"""The ``planr`` command line (Typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError

from cli import asyncapi, bus, demo, ftf, jib, keys, ledger, policy, security, services
from cli.context import Context
from cli.settings import Settings
from planr.telemetry import configure_logging

app = typer.Typer(
    name="planr",
    help="planr-bus: need-to-know information sharing for Plan R / T.E.R.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option(envvar="PLANR_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers."),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(envvar="PLANR_POLICY", help="Need-to-know policy file.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(envvar="PLANR_METRICS_PORT", help="Serve Prometheus metrics.")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option(envvar="PLANR_LOG_FORMAT", help="json or console.")
    ] = None,
) -> None:
    """Read the settings once; every command gets them from the context."""
    overrides = {
        k: v
        for k, v in {
            "bootstrap_servers": bootstrap_servers,
            "policy": policy,
            "metrics_port": metrics_port,
            "log_format": log_format,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in err["loc"])
            typer.echo(f"error: setting PLANR_{loc.upper()}: {err['msg']}", err=True)
        raise typer.Exit(2) from None
    fmt: Literal["json", "console"] = settings.log_format
    configure_logging(fmt, settings.log_level)
    ctx.obj = Context(settings)


bus.register(app)
services.register(app)
demo.register(app)
policy.register(app)
security.register(app)
ledger.register(app)
ftf.register(app)
jib.register(app)
asyncapi.register(app)
keys.register(app)


def main() -> None:
    app()
