"""What a recipient has received: the deliveries on its topic, decoded into its view."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from consumers.reader import read_topic
from planr.domain import Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.topics import Topics
from schemas.codec import Codec
from schemas.names import DELIVERY, NTF_AGGREGATE, view_schema_name


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


async def read_inbox(
    conn: KafkaConnection, topics: Topics, codec: Codec, recipient: Recipient
) -> AsyncIterator[dict[str, Any]]:
    """Yield one JSON-ready object per delivery (or per aggregate, for the NTF)."""
    async for rec in read_topic(conn, topics.delivery(recipient)):
        if recipient.cls is RecipientClass.NTF:
            yield _jsonable(codec.decode(rec.value, NTF_AGGREGATE))
            continue
        envelope = codec.decode(rec.value, DELIVERY)
        payload = codec.decode(envelope["payload"], view_schema_name(envelope["view"]))
        envelope["payload"] = payload
        yield _jsonable(envelope)
