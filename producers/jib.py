"""Submitting to the JIB: proposals, votes and clock ticks, each signed by its author, to the
one input topic ``<p>.jib.submissions`` (keyed by proposal id), ``acks=all``.

A record is checked (:mod:`schemas.jib`) before it is signed, and the signing key must be
its author's: the proposer's for a proposal, the voting service's for a vote, the consensus
process's (owner ``jib``) for a tick. The consensus process checks all of it again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from planr.errors import UsageError
from planr.kafka import KafkaConnection, make_producer
from planr.lifecycle import Service
from planr.parties import JIB_OWNER
from planr.signing import Signer, sign_headers
from planr.topics import Topics
from schemas.codec import Codec
from schemas.jib import check_proposal, check_tick, check_vote
from schemas.names import JIB_PROPOSAL, JIB_TICK, JIB_VOTE

#: For each record kind: its check, and the field that names its author (None: the clock).
_KINDS: dict[str, tuple[Callable[[Mapping[str, Any]], None], str | None]] = {
    JIB_PROPOSAL: (check_proposal, "proposer"),
    JIB_VOTE: (check_vote, "service"),
    JIB_TICK: (check_tick, None),
}


def author_of(name: str, record: Mapping[str, Any]) -> str:
    """Who must have signed a record of schema ``name``."""
    field = _KINDS[name][1]
    return JIB_OWNER if field is None else str(record[field])


def encode_submission(codec: Codec, signer: Signer, name: str, record: Mapping[str, Any]
                      ) -> bytes:
    """Check a record and its author against the signer; return its Avro bytes."""
    if name not in _KINDS:
        raise UsageError(f"{name} is not a JIB submission")
    _KINDS[name][0](record)
    if author_of(name, record) != signer.owner:
        raise UsageError(f"key {signer.key_id} belongs to {signer.owner}, "
                         f"not to the author of this {name.rsplit('.', 1)[-1]}")
    return codec.encode(name, record)


class JibSubmitter(Service):
    """Sends signed JIB records. ``start()``/``stop()`` or ``async with``."""

    def __init__(self, *, conn: KafkaConnection, topics: Topics, codec: Codec) -> None:
        self._conn = conn
        self._topic = topics.jib_submissions
        self._codec = codec
        self._producer: AIOKafkaProducer  # created in start()

    async def _open(self) -> None:
        self._producer = make_producer(self._conn)
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            raise

    async def _close(self) -> None:
        await self._producer.stop()

    async def _enqueue(self, signer: Signer, name: str, record: Mapping[str, Any],
                       partition: int | None = None) -> asyncio.Future[Any]:
        value = encode_submission(self._codec, signer, name, record)
        key = str(record.get("proposal_id") or record.get("tick_id")).encode()
        fut: asyncio.Future[Any] = await self._producer.send(
            self._topic, value=value, key=key, partition=partition,
            headers=sign_headers(signer, self._topic, value))
        return fut

    async def submit(self, signer: Signer, name: str, record: Mapping[str, Any]) -> None:
        """Send one record and wait for its acknowledgement."""
        await (await self._enqueue(signer, name, record))

    async def submit_many(self, items: Iterable[tuple[Signer, str, Mapping[str, Any]]]) -> int:
        """Send many records in this order, pipelined; return once all are acknowledged."""
        futures = [await self._enqueue(signer, name, record) for signer, name, record in items]
        await asyncio.gather(*futures)
        return len(futures)

    async def tick(self, signer: Signer, at: datetime) -> None:
        """Tell every partition of the input that the time is ``at``."""
        partitions = sorted(await self._producer.partitions_for(self._topic))
        futures = [await self._enqueue(signer, JIB_TICK,
                                       {"tick_id": str(uuid.uuid4()), "at": at}, p)
                   for p in partitions]
        await asyncio.gather(*futures)
