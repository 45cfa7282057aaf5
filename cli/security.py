"""``planr acls``: the Kafka ACLs a production cluster needs, per principal."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from cli.context import fail, get
from planr.acls import cluster_acls, render
from planr.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("acls")(acls)


def acls(
    ctx: typer.Context,
    *,
    fmt: Annotated[
        Literal["kafka-acls", "json"],
        typer.Option("--format", help="kafka-acls.sh command lines, or JSON."),
    ] = "kafka-acls",
    bootstrap_server: Annotated[
        str | None,
        typer.Option(help="For the kafka-acls.sh lines (default: PLANR_BOOTSTRAP_SERVERS)."),
    ] = None,
    command_config: Annotated[
        str | None, typer.Option(help="The admin's client properties file (--command-config).")
    ] = None,
    router_group: Annotated[
        str, typer.Option(envvar="PLANR_ROUTER_GROUP", help="The router's consumer group.")
    ] = "planr-router",
    aggregator_group: Annotated[
        str, typer.Option(envvar="PLANR_NTF_GROUP", help="The aggregator's consumer group.")
    ] = "planr-ntf-aggregator",
) -> None:
    """Print the ACLs of every principal: each agency writes only its ingress topic, each
    recipient reads only its delivery topic, each service only its own topics."""
    c = get(ctx)
    entries = cluster_acls(c.topics, router_group=router_group,
                           aggregator_group=aggregator_group)
    try:
        text = render(entries, fmt, command_config=command_config,
                      bootstrap_server=bootstrap_server or c.settings.bootstrap_servers)
    except UsageError as exc:
        fail(str(exc), code=2)
    typer.echo(text, nl=False)
