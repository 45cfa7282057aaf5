"""Run the store-backed services (the common-database projector and the inbox consumers)
side by side, as ``planr run`` does, and stop them once the input has gone quiet."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

from consumers.ftf.governance import AccessConfig
from consumers.ftf.projector import Projector
from consumers.inboxes import InboxService
from consumers.metrics import StoreMetrics
from consumers.outbox import DEAD_LETTER_KIND, Outbox
from consumers.store import Database
from consumers.tracked import TrackedConsumer
from planr.kafka import KafkaConnection
from planr.signing import KeyRegistry, Signer
from planr.topics import Topics
from schemas.codec import Codec


class StoreServices:
    """Services running as tasks; :meth:`finish` drains and stops them."""

    def __init__(self, services: list[TrackedConsumer]) -> None:
        self.services = services
        self.tasks = [asyncio.create_task(s.run()) for s in services]

    async def finish(self, quiet: float = 1.5, limit: float = 120.0) -> None:
        """Wait until no service has taken a record for ``quiet`` seconds (or one has
        stopped, or ``limit`` passed), then stop them all, each after its batch in flight."""
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            if any(t.done() for t in self.tasks):
                break
            now = sum(s.stats.records for s in self.services)
            if now != last:
                last, since = now, time.monotonic()
            await asyncio.sleep(0.2)
        for s in self.services:
            s.request_stop()
        await asyncio.gather(*self.tasks)


async def start_store_services(
    stack: AsyncExitStack,
    *,
    conn: KafkaConnection,
    topics: Topics,
    ftf_db: Database,
    inbox_db: Database,
    codec: Codec,
    access: AccessConfig,
    metrics: StoreMetrics,
    registry: KeyRegistry,
    projector_signer: Signer,
    inboxes_signer: Signer,
    check_process: bool = False,
) -> StoreServices:
    """Start the projector (on the common database) and every inbox consumer (on the inboxes'
    store), each with its outbox (signing with the service's own key), on ``stack`` (which
    stops them in reverse order); ``check_process``: the projector checks its records in a
    process of its own (:mod:`consumers.checking`; the inbox service does not: on this
    project's 2-core machine it gained nothing, see docs/benchmarks.md)."""
    services: list[TrackedConsumer] = []
    outbox = await stack.enter_async_context(
        Outbox(conn=conn, topics=topics, metrics=metrics, signer=projector_signer))
    services.append(await stack.enter_async_context(
        Projector(conn=conn, db=ftf_db, topics=topics, codec=codec, access=access,
                  metrics=metrics, registry=registry, outbox=outbox,
                  check_process=check_process)))
    outbox = await stack.enter_async_context(
        Outbox(conn=conn, topics=topics, metrics=metrics, signer=inboxes_signer,
               kinds=[DEAD_LETTER_KIND]))
    services.append(await stack.enter_async_context(
        InboxService(conn=conn, db=inbox_db, topics=topics, codec=codec, metrics=metrics,
                     registry=registry, outbox=outbox)))
    return StoreServices(services)
