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

Subclasses keep their connection in ``self._conn``, their Kafka consumer in ``self._consumer``
and their metrics in ``self._metrics`` (whose ``runtime`` holds
:class:`planr.telemetry.RuntimeMetrics`): the loop reports the consumer's lag and the
broker's reachability from them (:mod:`planr.health`).

Riding out the broker: :meth:`ConsumeLoop.start` retries, with exponential backoff, while the
brokers cannot be reached or the service's topics do not exist yet (each failed attempt
logged, an unreachable broker counted as an outage), until :meth:`ConsumeLoop.request_stop`
or, when ``start_timeout`` is set (one-shot commands), until that many seconds have passed.
Once running, the Kafka clients retry by themselves, and a commit refused because the group
rebalanced meanwhile (a broker that stalled past the session timeout) is logged and skipped:
the batch's records come again, and every output downstream is deduplicated by its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from typing import Any

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError, KafkaError
from prometheus_client import REGISTRY

from planr.errors import TopicsMissingError
from planr.health import Health
from planr.kafka import KafkaConnection
from planr.lifecycle import Service
from planr.telemetry import RuntimeMetrics, runtime_metrics

log = structlog.get_logger(__name__)

log = structlog.get_logger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord]]


#: The collector's thresholds once a service runs (CPython's default: 700, 10, 10). A batch
#: allocates hundreds of thousands of objects that live only as long as the batch, so at 700 a
#: young collection ran every few records (~900 collections per 20,000 projected events, ~5%
#: of the projector's CPU; docs/benchmarks.md). Cycles still die in the young generations,
#: after 50,000 allocations instead of 700.
GC_THRESHOLDS = (50_000, 10, 10)


def settle_heap() -> None:
    """Once a service has started: what start-up built (schemas, policy, registry, clients)
    lives as long as the process, so it leaves the collector's generations (``gc.freeze``:
    full collections stay cheap), and young collections run per :data:`GC_THRESHOLDS`."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class ConsumeLoop(Service):
    """Base of every consuming service; see the module documentation."""

    poll_timeout_ms: int = 200
    #: seconds between lag reports and broker probes (:mod:`planr.health`)
    health_interval: float = 2.0
    #: first and longest wait between attempts to reach the brokers at start
    retry_backoff: tuple[float, float] = (0.5, 10.0)
    #: seconds :meth:`start` keeps retrying (``None``: until :meth:`request_stop`)
    start_timeout: float | None = None
    _consumer: Any
    _conn: KafkaConnection

    def __init__(self) -> None:
        self._stop_requested = asyncio.Event()
        self._health: Health | None = None

    @property
    def service_label(self) -> str:
        """The service's name in metrics and logs (a store consumer's name, else its class)."""
        return str(getattr(self, "name", None) or type(self).__name__.lower())

    @property
    def health(self) -> Health:
        """Lag and broker reachability of this service (created on first use)."""
        if self._health is None:
            runtime = getattr(getattr(self, "_metrics", None), "runtime", None)
            rt = runtime if isinstance(runtime, RuntimeMetrics) else runtime_metrics(REGISTRY)
            group = getattr(self, "_group_id", None) or self.service_label
            self._health = Health(rt, service=self.service_label, group=str(group),
                                  interval=self.health_interval)
        return self._health

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

    async def start(self) -> None:
        """Start; while the brokers cannot be reached or the topics do not exist yet, log and
        retry with backoff (an unreachable broker counted as an outage), until
        :meth:`request_stop` or ``start_timeout`` seconds."""
        delay, longest = self.retry_backoff
        give_up = None if self.start_timeout is None else time.monotonic() + self.start_timeout
        while True:
            try:
                await super().start()
            except (KafkaError, TopicsMissingError) as exc:
                if not exc.retriable or self._stop_requested.is_set() or (
                        give_up is not None and time.monotonic() + delay > give_up):
                    raise
                if isinstance(exc, KafkaConnectionError):
                    self.health.mark(False, error=type(exc).__name__)
                log.warning("service.start_retry", service=self.service_label,
                            error=type(exc).__name__, retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), delay)
                delay = min(delay * 2, longest)
                continue
            self.health.mark(True)
            return

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
            log.warning("service.commit_refused", service=self.service_label,
                        records=sum(len(r) for r in batch.values()))

    async def run(self, *, until_idle: float | None = None) -> Any:
        """Consume until :meth:`request_stop`, or until ``until_idle`` seconds pass with no
        input once ready. Returns the service's statistics."""
        await self.start()
        await self._begin()
        settle_heap()
        conn: KafkaConnection | None = getattr(self, "_conn", None)
        if conn is not None:  # a loop without a broker connection has nothing to probe
            self.health.watch(conn)
        try:
            await self._loop(until_idle)
        finally:
            await self.health.unwatch()
        await self._report_lag(force=True)
        await self._end()
        return self._result()

    async def _loop(self, until_idle: float | None) -> None:
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
            await self._report_lag()
            await self._tick()

    async def _report_lag(self, *, force: bool = False) -> None:
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:  # a loop without a Kafka consumer has no lag
            await self.health.report_lag(consumer, force=force)

    def _result(self) -> Any:
        return None


def drain_on_signals(service: ConsumeLoop, *signals_: int) -> None:
    """Let SIGTERM and SIGINT (or the given signals) drain ``service`` instead of killing it."""
    loop = asyncio.get_running_loop()
    for sig in signals_ or (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, service.request_stop)
