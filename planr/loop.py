"""The one consume-process-commit loop of every consuming service.

The router, the NTF aggregator and the store-backed consumers differ only in what they do with
a batch and in when they may commit; the loop around them is the same: start, poll, handle a
batch, commit it, detect idleness (``until_idle``), drain on request (SIGTERM: the batch in
flight is finished and committed), stop. A subclass supplies:

- :meth:`ConsumeLoop._poll`: the next batch (``{TopicPartition: [ConsumerRecord]}``);
- :meth:`ConsumeLoop._handle`: the batch's work; its outputs must be acknowledged (or its
  transaction committed) when it returns;
- :meth:`ConsumeLoop._commit`: the commit rule, called only after ``_handle`` returned;
- optionally :meth:`ConsumeLoop._ready` (may idleness be measured yet, e.g. partitions
  assigned), :meth:`ConsumeLoop._tick` (after every poll), :meth:`ConsumeLoop._begin` and
  :meth:`ConsumeLoop._end` (once, around the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError

from planr.lifecycle import Service

log = structlog.get_logger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord]]


class ConsumeLoop(Service):
    """Base of every consuming service; see the module documentation."""

    poll_timeout_ms: int = 200

    def __init__(self) -> None:
        self._stop_requested = asyncio.Event()

    # ---- what subclasses supply -----------------------------------------------------------

    async def _poll(self) -> Batch:
        raise NotImplementedError

    async def _handle(self, batch: Batch) -> None:
        raise NotImplementedError

    async def _commit(self, batch: Batch) -> None:
        raise NotImplementedError

    def _ready(self) -> bool:
        return True

    async def _tick(self) -> None:
        return None

    async def _begin(self) -> None:
        return None

    async def _end(self) -> None:
        return None

    # ---- the loop -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in flight, commit it, then return from :meth:`run`."""
        self._stop_requested.set()

    async def process(self, batch: Batch) -> None:
        """One batch: its work, then (only once that returned) its commit.

        A commit refused because the group rebalanced meanwhile (another member of the group
        joined or left: ``planr route --workers N``, a restarted replica) loses nothing: the
        batch's outputs are acknowledged, and the partition's new owner reads the batch again,
        which the ledger and the sinks deduplicate. The loop goes on with its new assignment.
        """
        await self._handle(batch)
        try:
            await self._commit(batch)
        except CommitFailedError:
            log.warning("loop.commit_lost_to_rebalance", service=type(self).__name__,
                        partitions=len(batch))

    async def run(self, *, until_idle: float | None = None) -> Any:
        """Consume until :meth:`request_stop`, or until ``until_idle`` seconds pass with no
        input once ready. Returns the service's statistics."""
        await self.start()
        await self._begin()
        idle_since: float | None = None
        while not self._stop_requested.is_set():
            batch = await self._poll()
            if batch:
                await self.process(batch)
                idle_since = None
            elif until_idle is not None and self._ready():
                now = time.monotonic()
                if idle_since is None:
                    idle_since = now
                elif now - idle_since >= until_idle:
                    break
            await self._tick()
        await self._end()
        return self._result()

    def _result(self) -> Any:
        return None


def drain_on_signals(service: ConsumeLoop, *signals_: int) -> None:
    """Let SIGTERM and SIGINT (or the given signals) drain ``service`` instead of killing it."""
    loop = asyncio.get_running_loop()
    for sig in signals_ or (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, service.request_stop)
