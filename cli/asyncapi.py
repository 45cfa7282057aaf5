"""``planr asyncapi``: the AsyncAPI 3 document of the bus (channels, messages, who publishes
and who subscribes), generated from the code (``schemas/asyncapi.py``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from cli.context import fail, get
from planr.topics import Topics
from schemas import AVRO_DIR
from schemas.asyncapi import render


def register(app: typer.Typer) -> None:
    app.command("asyncapi")(asyncapi)


def asyncapi(
    ctx: typer.Context,
    prefix: Annotated[
        str | None, typer.Option(help="Topic prefix (default: PLANR_TOPIC_PREFIX).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write to this file (default: standard output).")
    ] = None,
) -> None:
    """Print the AsyncAPI 3 document: every channel, its Avro message, who publishes and who
    subscribes (from the ACLs). The .avsc files are referred to relative to the output."""
    c = get(ctx)
    topics = Topics(prefix) if prefix is not None else c.topics
    if not re.fullmatch(r"[A-Za-z0-9_-]+", topics.prefix):
        fail(f"prefix {topics.prefix!r}: letters, digits, '_' and '-' only", code=2)
    where = (output.resolve().parent if output is not None else Path.cwd())
    avro_ref = Path(os.path.relpath(AVRO_DIR, where)).as_posix()
    text = render(topics, avro_ref=avro_ref)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}", code=2)
