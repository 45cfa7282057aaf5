"""What a recipient has received: the deliveries on its topic, decoded into its view."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from consumers.ntf.suppression import TOTAL
from consumers.reader import read_topic
from planr.domain import Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.topics import Topics
from schemas.codec import Codec
from schemas.names import DELIVERY, NTF_AGGREGATE, view_schema_name

#: The schema file of the NTF's records before published month tables.
SUPERSEDED_NTF = "ntf_aggregate-v1.avsc"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _table_order(cell: dict[str, Any]) -> tuple[Any, ...]:
    """Month by month, arrondissements then their total, phenomena then the row total."""
    arr, ph = cell["arrondissement"], cell["phenomenon"]
    return cell["period"], arr == TOTAL, arr, ph == TOTAL, ph


async def read_ntf(conn: KafkaConnection, topics: Topics, codec: Codec) -> list[dict[str, Any]]:
    """The NTF's published month tables: the latest record per ``aggregate_id`` (a restart may
    send one again), in table order. Records of the superseded format (per-block increments,
    not published cells) are skipped."""
    latest: dict[str, dict[str, Any]] = {}
    async for rec in read_topic(conn, topics.delivery(Recipient(RecipientClass.NTF))):
        if codec.writer_of(rec.value).source == SUPERSEDED_NTF:
            continue
        cell = codec.decode(rec.value, NTF_AGGREGATE)
        latest[cell["aggregate_id"]] = cell
    return sorted(latest.values(), key=_table_order)


async def read_inbox(
    conn: KafkaConnection, topics: Topics, codec: Codec, recipient: Recipient
) -> AsyncIterator[dict[str, Any]]:
    """Yield one JSON-ready object per delivery (or per published cell, for the NTF)."""
    if recipient.cls is RecipientClass.NTF:
        for cell in await read_ntf(conn, topics, codec):
            yield _jsonable(cell)
        return
    async for rec in read_topic(conn, topics.delivery(recipient)):
        envelope = codec.decode(rec.value, DELIVERY)
        payload = codec.decode(envelope["payload"], view_schema_name(envelope["view"]))
        envelope["payload"] = payload
        yield _jsonable(envelope)
