"""What a consuming service tells the monitoring team about itself while it runs.

:class:`Health` keeps two things up to date for one service (see :mod:`planr.loop`):

- **consumer lag** per topic and partition: the high watermark that the last fetch response
  carried (``consumer.highwater``) minus the consumer's position. The loop commits (or stores)
  each batch before it polls again, so between batches the position is the committed offset.
  ``end_offsets()`` is not used: the embedded broker (Tansu) answers ``ListOffsets`` short of
  the end.
- **broker reachability**: a metadata request with a short deadline, every ``interval``
  seconds, in a task of its own so that a service blocked on the broker (waiting for acks of
  a batch) still notices. A change is logged (``broker.unreachable`` / ``broker.reachable``
  with the outage's duration) and each outage is counted once.

Labels are the service's name, its consumer group and topic/partition numbers: no content.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from aiokafka.errors import IllegalStateError, KafkaError

from planr.telemetry import RuntimeMetrics

log = structlog.get_logger(__name__)


class Health:
    """Lag gauges and broker reachability of one service (``service``, consumer ``group``)."""

    def __init__(self, runtime: RuntimeMetrics, *, service: str, group: str,
                 interval: float = 2.0, probe_timeout: float = 5.0) -> None:
        self._rt = runtime
        self.service, self.group = service, group
        self.interval, self.probe_timeout = interval, probe_timeout
        self.connected: bool | None = None
        self.outages = 0
        self._down_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    def mark(self, reachable: bool, *, error: str | None = None) -> None:
        """Record whether the brokers answer; log and count a change (an outage once)."""
        self._rt.broker_connected.labels(self.service).set(1 if reachable else 0)
        if reachable:
            if self.connected is False and self._down_since is not None:
                log.info("broker.reachable", service=self.service,
                         outage_s=round(time.monotonic() - self._down_since, 1))
            self._down_since = None
        elif self.connected is not False:
            self.outages += 1
            self._down_since = time.monotonic()
            self._rt.broker_outages.labels(self.service).inc()
            log.warning("broker.unreachable", service=self.service, error=error)
        self.connected = reachable

    async def probe(self, consumer: Any) -> bool:
        """Ask the brokers for metadata within ``probe_timeout``; record the answer."""
        try:
            async with asyncio.timeout(self.probe_timeout):
                await consumer.topics()
        except (KafkaError, OSError, TimeoutError) as exc:
            self.mark(False, error=type(exc).__name__)
            return False
        self.mark(True)
        return True

    async def report_lag(self, consumer: Any) -> None:
        """Set the lag gauge of every assigned partition whose high watermark is known."""
        for tp in list(consumer.assignment()):
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = await consumer.position(tp)
            except IllegalStateError:  # unassigned meanwhile (a rebalance)
                continue
            self._rt.consumer_lag.labels(self.group, tp.topic, str(tp.partition)).set(
                max(0, high - position))

    async def _watch(self, consumer: Any) -> None:
        while True:
            await self.probe(consumer)
            await self.report_lag(consumer)
            await asyncio.sleep(self.interval)

    def watch(self, consumer: Any) -> None:
        """Start probing and reporting in the background (until :meth:`unwatch`)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(consumer))

    async def unwatch(self, consumer: Any) -> None:
        """Stop the background task, then report the lag one last time."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.report_lag(consumer)
