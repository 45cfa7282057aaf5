"""What a durable inbox keeps of each delivery id: the latest version's payload, or a
retraction marker (id, version, time and reason: the payload is gone).

A delivery id is the same for every version of an event sent to one recipient. Arrivals apply
in version order whatever order they come in: a higher version replaces, a lower one is stale;
the same version again is a duplicate (same content) or a conflict (other content); a
retraction at version v removes the payload of every version up to v, and only a delivery of a
higher version (the recipient is entitled again, e.g. after a policy change) brings it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, tuple_

from consumers.store import Database
from consumers.store.tables import inbox_deliveries
from planr.domain import Recipient
from schemas.codec import Codec
from schemas.names import view_schema_name


class Action(StrEnum):
    STORE = "store"  # insert or replace the row
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    STALE = "stale"


@dataclass(frozen=True)
class Kept:
    """What the inbox holds for one delivery id."""

    version: int
    content_hash: str | None
    retracted: bool


def merge(kept: Kept | None, *, version: int, content_hash: str | None,
          retraction: bool) -> Action:
    """What an arriving delivery (``retraction`` false) or retraction does to ``kept``."""
    if kept is None or kept.version < version:
        return Action.STORE
    if kept.version > version:
        return Action.STALE
    if retraction:
        return Action.DUPLICATE if kept.retracted else Action.STORE
    if kept.retracted:
        return Action.STALE
    same = kept.content_hash is None or kept.content_hash == content_hash
    return Action.DUPLICATE if same else Action.CONFLICT


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def _item(r: Any, codec: Codec) -> dict[str, Any]:
    item: dict[str, Any] = {
        "delivery_id": r["delivery_id"], "event_id": r["event_id"],
        "recipient": r["recipient"], "version": r["version"],
    }
    if r["payload"] is None:
        item.update(retracted=True, retracted_at=r["retracted_at"],
                    reason=r["retraction_reason"])
        return item
    item.update(rule=r["rule"], rules=[x for x in r["rules"].split(",") if x],
                policy_version=r["policy_version"], routed_at=r["routed_at"], view=r["view"],
                payload=codec.decode(r["payload"], view_schema_name(r["view"])))
    return item


async def read_stored(
    db: Database,
    codec: Codec,
    recipient: Recipient,
    after: tuple[int, int] | None = None,
) -> list[tuple[tuple[int, int], dict[str, Any]]]:
    """The inbox of ``recipient`` in the order of the records last applied (after a position),
    JSON-ready: each delivery with its latest payload, or its retraction marker (no content)."""
    t = inbox_deliveries
    query = select(t).where(t.c.recipient == str(recipient))
    if after is not None:
        query = query.where(tuple_(t.c.topic_partition, t.c.topic_offset) > tuple_(*after))
    query = query.order_by(t.c.topic_partition, t.c.topic_offset)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [((r["topic_partition"], r["topic_offset"]), jsonable(_item(r, codec)))
            for r in rows]
