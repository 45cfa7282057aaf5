"""``planr ledger``: who received what, for the oversight bodies; every use is logged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from cli.context import fail, get
from consumers.ledger import StoreLedger
from consumers.store import Database


def register(app: typer.Typer) -> None:
    app.command("ledger")(ledger)


def ledger(
    ctx: typer.Context,
    *,
    event: Annotated[str | None, typer.Option(help="One event id.")] = None,
    subject: Annotated[str | None, typer.Option(help="Every event about one subject id.")] = None,
    operator: Annotated[str, typer.Option("--as", help="Who consults (logged).")],
    purpose: Annotated[str, typer.Option(help="Why (logged).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Who received which version of an event, or of every event about a subject (ids only).
    The consultation is logged before the answer is printed."""
    if (event is None) == (subject is None):
        fail("give exactly one of --event or --subject", code=2)
    if not purpose.strip():
        fail("--purpose: must say why the ledger is consulted", code=2)
    c = get(ctx)
    query, query_id = ("event", event) if event is not None else ("subject", subject)
    assert query_id is not None

    async def work(db: Database) -> list[dict[str, Any]]:
        return await StoreLedger(db).consult(operator=operator, purpose=purpose, query=query,
                                             query_id=query_id, at=datetime.now(UTC))

    rows = c.with_db("ledger", work)
    for r in rows:
        if as_json:
            typer.echo(json.dumps(r))
        else:
            state = "holds" if r["holds"] else "retracted"
            typer.echo(f"{r['event_id']}  v{r['event_version']}  {r['agency']:<7} "
                       f"{r['recipient']:<28} v{r['version']:<3} {state:<9} {r['delivery_id']}")
    typer.echo(f"{len(rows)} holding(s)", err=True)
