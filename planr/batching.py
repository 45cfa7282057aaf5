"""Batched produce: fill one aiokafka record batch per topic-partition, send it whole, and
wait for every acknowledgement at once.

Per-message ``send()`` costs a future, a partitioner call and accumulator work per record;
filling :meth:`AIOKafkaProducer.create_batch` builders amortises that over a whole batch.
Partitions are chosen like the Java client's default partitioner (murmur2 of the key), so
keyed records land where any other producer would put them; the hash is memoised because one
signal yields many records with the same key.

With a :class:`~planr.signing.Signer`, records wait in a chunk of their topic until
:data:`CHUNK_RECORDS` are there (or :meth:`BatchSender.flush`); the chunk is then signed with
one signature (:func:`~planr.signing.sign_chunk`: each record carries the root's signature and
its proof) and its records are appended to their batches in the order they were added. A
chunk holds the records of one topic only: a reader of a topic (a recipient, the projector)
sees whole chunks, so it checks one signature per chunk, and the sibling hashes in a proof are
of records the same reader receives.

:class:`SharedSender` serves concurrent callers of one producer (an agency's publisher): each
call's records join the open :class:`BatchSender`, and one flush at a time sends a group and
waits for its acknowledgements while the next group fills (group commit).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from planr.errors import DeliveryError, UsageError
from planr.signing import Signer, sign_chunk

#: Records signed together: 64 leaves make a 6-step proof (198 bytes per record) for one
#: Ed25519 signature per 64 records (see benchmarks/signing.py and docs/trust.md).
CHUNK_RECORDS: Final = 64

_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF
_WORDS: Final = struct.Struct("<I")


@lru_cache(maxsize=65_536)
def partition_hash(key: bytes) -> int:
    """The Java client's ``toPositive(Utils.murmur2(key))``: murmur2, seed 0x9747b28c, 32-bit
    arithmetic, little-endian words, the sign bit cleared."""
    length = len(key)
    h = 0x9747B28C ^ length
    end = length & ~3
    for (word,) in _WORDS.iter_unpack(key[:end]):
        k = (word * _M) & _MASK
        h = ((h * _M) & _MASK) ^ (((k ^ (k >> 24)) * _M) & _MASK)
    tail = length & 3
    if tail:
        if tail == 3:
            h ^= key[end + 2] << 16
        if tail >= 2:
            h ^= key[end + 1] << 8
        h = ((h ^ key[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h & 0x7FFFFFFF


_Pending = tuple[str, int, bytes | None, bytes, list[tuple[str, bytes]] | None, int | None]


class BatchSender:
    """Collects records for one unit of work; :meth:`flush` sends and awaits them all."""

    def __init__(self, producer: AIOKafkaProducer, *, signer: Signer | None = None,
                 chunk: int = CHUNK_RECORDS) -> None:
        if chunk < 1:
            raise UsageError("chunk: at least one record")
        self._producer = producer
        self._signer = signer
        self._chunk = chunk
        self._pending: dict[str, list[_Pending]] = {}  # per topic
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], Any] = {}
        self._sent: list[asyncio.Future[Any]] = []
        self._round_robin = 0
        self.records = 0

    async def _partition(self, topic: str, key: bytes | None) -> int:
        parts = self._partitions.get(topic)
        if parts is None:
            found = await self._producer.partitions_for(topic)
            parts = self._partitions[topic] = sorted(found)
        if key is None:
            self._round_robin += 1
            return parts[self._round_robin % len(parts)]
        return parts[partition_hash(key) % len(parts)]

    async def add(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Add one record; with a signer, its signature headers will follow ``headers``. Its
        timestamp (``CreateTime``) is ``timestamp_ms``, else the time it joins its batch."""
        partition = await self._partition(topic, key)
        self.records += 1
        if self._signer is None:
            await self._append((topic, partition, key, value, headers, timestamp_ms))
            return
        pending = self._pending.get(topic)
        if pending is None:
            pending = self._pending[topic] = []
        pending.append((topic, partition, key, value, headers, timestamp_ms))
        if len(pending) >= self._chunk:
            del self._pending[topic]
            await self._sign(self._signer, pending)

    async def _sign(self, signer: Signer, pending: list[_Pending]) -> None:
        signed = sign_chunk(signer, [(p[0], p[3]) for p in pending])
        for (topic, partition, key, value, headers, at), signature in zip(pending, signed,
                                                                          strict=True):
            await self._append((topic, partition, key, value, [*(headers or ()), *signature],
                                at))

    async def _append(self, record: _Pending) -> None:
        topic, partition, key, value, headers, at = record
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=at, headers=headers) is None:
            self._sent.append(await self._producer.send_batch(batch, topic, partition=partition))
            batch = self._open[slot] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=at, headers=headers) is None:
                raise DeliveryError(f"a record for {topic} is larger than a whole batch")

    async def flush(self) -> int:
        """Sign what waits, send every open batch and wait until the broker acknowledged all
        records added since the last flush; returns their number. Raises DeliveryError
        otherwise."""
        count, self.records = self.records, 0
        try:
            if self._signer is not None:
                pending, self._pending = self._pending, {}
                for chunk in pending.values():
                    await self._sign(self._signer, chunk)
            for (topic, partition), batch in self._open.items():
                if batch.record_count():
                    self._sent.append(await self._producer.send_batch(batch, topic,
                                                                      partition=partition))
        finally:
            self._pending.clear()
            self._open.clear()
            sent, self._sent = self._sent, []
        try:
            await asyncio.gather(*sent)
        except Exception as exc:
            raise DeliveryError(f"{count} records were not acknowledged by the broker") from exc
        return count


class _Group:
    """The records of the calls that joined one :class:`BatchSender` before its flush."""

    __slots__ = ("adding", "done", "flushing", "idle", "sender")

    def __init__(self, sender: BatchSender) -> None:
        self.sender = sender
        self.adding = 0  # calls still adding their records
        self.idle = asyncio.Event()
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # its callers get its outcome; if every one of them was cancelled, none is lost
        self.done.add_done_callback(_retrieved)
        self.flushing = False


def _retrieved(done: asyncio.Future[int]) -> None:
    if not done.cancelled():
        done.exception()


class SharedSender:
    """Records of concurrent calls, sent in groups on one producer.

    :meth:`send` adds a call's records to the open group and returns once a flush covering
    them was acknowledged (DeliveryError otherwise, for every call of the group). One flush
    runs at a time; the calls made meanwhile fill the next group, which is flushed as soon as
    the previous one is done. Each call's records keep their order per partition, and a call
    that follows another one's return is sent after it. :meth:`drain` waits for every flush begun.
    """

    def __init__(self, producer: AIOKafkaProducer, *, signer: Signer | None = None,
                 chunk: int = CHUNK_RECORDS) -> None:
        if chunk < 1:
            raise UsageError("chunk: at least one record")
        self._producer, self._signer, self._chunk = producer, signer, chunk
        self._group: _Group | None = None
        self._lock = asyncio.Lock()  # one flush at a time
        self._flushes: set[asyncio.Task[None]] = set()

    async def send(self, records: Iterable[tuple[str, bytes, bytes | None]]) -> None:
        """Send ``(topic, value, key)`` records, each timestamped with the time of this call
        (``CreateTime``: however long it waits for its group); return once all are
        acknowledged."""
        now_ms = int(time.time() * 1000)
        group = self._group
        if group is None:
            group = self._group = _Group(BatchSender(self._producer, signer=self._signer,
                                                     chunk=self._chunk))
        group.adding += 1
        group.idle.clear()
        try:
            for topic, value, key in records:
                await group.sender.add(topic, value, key=key, timestamp_ms=now_ms)
        except KafkaError as exc:  # a full batch the producer would not take
            raise DeliveryError(f"a record batch was refused ({type(exc).__name__})") from exc
        finally:
            group.adding -= 1
            if not group.adding:
                group.idle.set()
            if not group.flushing:
                group.flushing = True
                task = asyncio.create_task(self._flush(group))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)
        await asyncio.shield(group.done)

    async def _flush(self, group: _Group) -> None:
        async with self._lock:
            if self._group is group:
                self._group = None  # later calls start the next group
            try:
                await group.idle.wait()  # calls still adding to it finish first
                group.done.set_result(await group.sender.flush())
            except Exception as exc:  # noqa: BLE001 - every caller of the group gets it
                group.done.set_exception(exc)
            except asyncio.CancelledError:
                group.done.set_exception(DeliveryError("the flush was cancelled"))
                raise

    async def drain(self) -> None:
        """Wait until every flush begun has ended (its callers have their outcome)."""
        while self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
