"""What a consuming service tells the monitoring team about itself while it runs.

:class:`Health` keeps two things up to date for one service (see :mod:`planr.loop`):

- **broker reachability**: every ``interval`` seconds, an ``ApiVersions`` request with a
  deadline of ``probe_timeout`` seconds, sent by a small Kafka client of its own, on an event
  loop in a thread of its own (so that a service blocked on the broker, waiting for the
  acknowledgements of a batch, still notices, and a service busy routing, whose event loop
  answers late, is not taken for a broker that does not answer). The probe shares nothing
  with the service's consumer: no connection (a probe never queues behind a fetch, nor a
  fetch behind a probe), no lock, no event loop, and it never reads the consumer's state, so
  it can neither block the consumer nor take an error the consumer must see. It costs the
  broker no metadata work (653 topics on the bus). A change is logged
  (``broker.unreachable`` / ``broker.reachable`` with the outage's duration, measured from the
  start of the first failed probe) and each outage is counted once.
- **consumer lag** per topic and partition: the high watermark that the last fetch response
  carried (``consumer.highwater``) minus the consumer's position. The loop itself reports it
  between batches (:meth:`Health.report_lag`, at most every ``interval`` seconds), from its
  own task: the position is then the offset after the last batch committed or stored.
  ``end_offsets()`` is not used: the embedded broker (Tansu) answers ``ListOffsets`` short of
  the end.

Labels are the service's name, its consumer group and topic/partition numbers: no content.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import structlog
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import IllegalStateError, KafkaConnectionError, KafkaError
from aiokafka.protocol.admin import ApiVersionRequest

from planr.kafka import KafkaConnection
from planr.telemetry import RuntimeMetrics

log = structlog.get_logger(__name__)

#: the probe's client refreshes no metadata by itself (it only needs one broker's address)
_PROBE_METADATA_AGE_MS = 24 * 3600 * 1000


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
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._client: AIOKafkaClient | None = None
        self._lag_at = 0.0

    def mark(self, reachable: bool, *, error: str | None = None,
             since: float | None = None) -> None:
        """Record whether the brokers answer (a failure noticed at monotonic time ``since``,
        default now); log and count a change (an outage once)."""
        self._rt.broker_connected.labels(self.service).set(1 if reachable else 0)
        if reachable:
            if self.connected is False and self._down_since is not None:
                log.info("broker.reachable", service=self.service,
                         outage_s=round(time.monotonic() - self._down_since, 1))
            self._down_since = None
        elif self.connected is not False:
            self.outages += 1
            self._down_since = time.monotonic() if since is None else since
            self._rt.broker_outages.labels(self.service).inc()
            log.warning("broker.unreachable", service=self.service, error=error)
        self.connected = reachable

    async def probe(self, conn: KafkaConnection) -> bool:
        """Ask a broker for its API versions within ``probe_timeout``; record the answer."""
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.probe_timeout):
                await self._ask(conn)
        except (KafkaError, OSError, TimeoutError) as exc:
            self.mark(False, error=type(exc).__name__, since=began)
            return False
        self.mark(True)
        return True

    async def _ask(self, conn: KafkaConnection) -> None:
        client = self._client
        if client is None:
            client = AIOKafkaClient(**conn.client_kwargs(),
                                    request_timeout_ms=int(self.probe_timeout * 1000),
                                    metadata_max_age_ms=_PROBE_METADATA_AGE_MS)
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            self._client = client
        node = client.get_random_node()
        if node is None:
            raise KafkaConnectionError("no broker in the cluster metadata")
        await client.send(node, ApiVersionRequest())

    async def report_lag(self, consumer: Any, *, force: bool = False) -> None:
        """Set the lag gauge of every assigned partition whose high watermark is known (at
        most every ``interval`` seconds unless ``force``). Called by the loop, between
        batches, from its own task."""
        now = time.monotonic()
        if not force and now - self._lag_at < self.interval:
            return
        self._lag_at = now
        for tp in list(consumer.assignment()):
            if tp not in consumer.assignment():  # unassigned meanwhile (a rebalance)
                continue
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = await consumer.position(tp)
            except IllegalStateError:  # unassigned meanwhile (a rebalance)
                continue
            self._rt.consumer_lag.labels(self.group, tp.topic, str(tp.partition)).set(
                max(0, high - position))

    async def _watch(self, conn: KafkaConnection, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                await self.probe(conn)
                await asyncio.get_running_loop().run_in_executor(None, stop.wait,
                                                                 self.interval)
        finally:
            client, self._client = self._client, None
            if client is not None:
                await client.close()

    def watch(self, conn: KafkaConnection) -> None:
        """Start probing the brokers in a thread of its own (until :meth:`unwatch`)."""
        if self._thread is None:
            stop = self._stop = threading.Event()
            self._thread = threading.Thread(
                target=asyncio.run, args=(self._watch(conn, stop),), daemon=True,
                name=f"planr-health-{self.service}")
            self._thread.start()

    async def unwatch(self) -> None:
        """Stop probing (the probe in flight ends within ``probe_timeout``)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            await asyncio.to_thread(thread.join)
