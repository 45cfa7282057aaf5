"""The JIB's part of ``planr run --demo``: a few proposals, adopted, rejected and expired.

The JIB's parties (the services of the panels, the proposing local taskforces) and its
consensus process get throw-away signing keys, in a temporary directory (mode 0700) with its
own registry, deleted at the end. The consensus process runs on the demo's JIB store and ticks
every second, so the proposal whose deadline is a few seconds away expires during the demo.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import typer

from consumers.jib.consensus import JibConsensus
from consumers.jib.panels import Panels
from consumers.jib.store import jib_counts
from consumers.metrics import StoreMetrics
from consumers.outbox import Outbox
from consumers.store import Database
from planr.errors import PlanrError
from planr.kafka import KafkaConnection
from planr.parties import JIB_OWNER
from planr.topics import Topics
from producers.jib import JibSubmitter
from routing.jib import JibRouting
from routing.policy import Policy
from scenarios.jib import demo_owners, demo_steps, jib_keys
from schemas.codec import Codec
from schemas.names import JIB_PROPOSAL

Figures = dict[str, dict[str, int]]


class JibDemo:
    """Started by :func:`start_jib_demo`; :meth:`finish` waits for the decisions."""

    def __init__(self, consensus: JibConsensus, db: Database, expected: int) -> None:
        self.consensus = consensus
        self.task = asyncio.create_task(consensus.run())
        self._db = db
        self._expected = expected

    async def finish(self, limit: float = 30.0) -> Figures:
        """Wait until every demo proposal is decided (or ``limit`` s), stop, return figures."""
        deadline = time.monotonic() + limit
        while self.consensus.decisions < self._expected and time.monotonic() < deadline:
            if self.task.done():
                break
            await asyncio.sleep(0.2)
        self.consensus.request_stop()
        await self.task
        return await jib_counts(self._db)


async def start_jib_demo(stack: AsyncExitStack, *, conn: KafkaConnection, topics: Topics,
                         db: Database, policy: Policy, panels_file: Path, codec: Codec,
                         metrics: StoreMetrics) -> JibDemo:
    """Start the consensus process and submit the demo's proposals and votes."""
    panels = Panels.load(panels_file)
    tmp = tempfile.mkdtemp(prefix="planr-jib-keys-")  # mode 0700
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    keys = jib_keys(Path(tmp) / "keys", demo_owners(panels.of("brussel")))
    signer = keys.signers[JIB_OWNER]
    outbox = await stack.enter_async_context(
        Outbox(conn=conn, topics=topics, metrics=metrics, signer=signer))
    consensus = await stack.enter_async_context(JibConsensus(
        conn=conn, db=db, topics=topics, codec=codec, metrics=metrics, registry=keys.registry,
        panels=panels, routing=JibRouting(policy.document.jib, policy.version), outbox=outbox,
        signer=signer, tick_interval=1.0))
    steps = demo_steps(datetime.now(UTC), panels.panels)
    async with JibSubmitter(conn=conn, topics=topics, codec=codec) as submitter:
        await submitter.submit_many((keys.signers[o], n, r) for o, n, r in steps)
    typer.echo(f"jib: submitted {len(steps)} proposals and votes", err=True)
    return JibDemo(consensus, db, sum(1 for _, n, _ in steps if n == JIB_PROPOSAL))


def print_jib_summary(figures: Figures) -> None:
    proposals, votes = figures["proposals"], figures["votes"]
    typer.echo("JIB (Joint Information Box)")
    typer.echo(f"  {'proposals':<34}{sum(proposals.values()):>16}")
    for state in ("adopted", "rejected", "expired", "open"):
        typer.echo(f"    {state:<32}{proposals.get(state, 0):>16}")
    typer.echo(f"  {'votes counted':<34}{votes.get('counted', 0):>16}")
    refused = {k: v for k, v in votes.items() if k != "counted"}
    typer.echo(f"  {'votes refused':<34}{sum(refused.values()):>16}")
    for reason, count in sorted(refused.items()):
        typer.echo(f"    {reason:<32}{count:>16}")
    typer.echo(f"  {'members now':<34}{figures['members']['current']:>16}")
    if proposals.get("open", 0):
        raise PlanrError("some JIB proposals of the demo were not decided")
