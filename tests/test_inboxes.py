"""Durable inboxes on the real embedded broker: the service, and ``planr inbox`` catching up."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumers.inbox_rows import read_stored
from consumers.inboxes import InboxService
from consumers.metrics import StoreMetrics
from consumers.store import Database, sqlite_url
from planr.domain import Agency, Recipient, RecipientClass
from planr.signing import ROUTER
from planr.topics import provision
from routing.outputs import delivery_id
from scenarios.builders import numbered_signal as signal
from scenarios.keys import KeyRing
from schemas.names import DELIVERY
from tests.conftest import key_env
from tests.test_projector_kill import produce

pytestmark = pytest.mark.kafka
PLANR = str(Path(sys.executable).parent / "planr")
TFL = Recipient(RecipientClass.TFL, "brussel")
CSILR = Recipient(RecipientClass.CSILR, "21004")


def delivery(setup, n: int, recipient: Recipient, view: str) -> bytes:
    s = signal(n, agency=Agency.POLLOC)
    rec = s.to_avro(Agency.POLLOC, s.occurred_at)
    value: bytes = setup.codec.encode(DELIVERY, {
        "delivery_id": delivery_id(rec["event_id"], recipient),
        "event_id": rec["event_id"], "recipient": str(recipient), "rule": "r",
        "rules": ["r"], "policy_version": setup.engine.version,
        "routed_at": rec["published_at"], "view": view,
        "payload": setup.views.render(view, rec),
    })
    return value


async def test_inboxes_store_each_delivery_once(conn, topics, routing_setup, tmp_path,
                                                keys: KeyRing):
    names = [topics.delivery(TFL), topics.delivery(CSILR), topics.dead_letter]
    await provision(conn, topics, names)
    tfl = [delivery(routing_setup, n, TFL, "tfl") for n in range(50)]
    csilr = [delivery(routing_setup, n, CSILR, "csilr") for n in range(10)]
    router = keys.signer(ROUTER)
    # replays and a bad record
    await produce(conn, names[0], [*tfl, *tfl[:5], b"junk"], router)
    await produce(conn, names[1], csilr, router)
    url = sqlite_url(tmp_path)
    env = {**os.environ, "PLANR_BOOTSTRAP_SERVERS": conn.bootstrap_servers,
           "PLANR_TOPIC_PREFIX": topics.prefix, "PLANR_INBOX_DB_URL": url,
           "PLANR_LOG_LEVEL": "warning", **key_env(keys, ROUTER)}

    def inbox(recipient: Recipient) -> list[dict[str, Any]]:
        out = subprocess.run([PLANR, "inbox", str(recipient), "--json"], env=env,
                             capture_output=True, check=True, timeout=60)
        return [json.loads(line) for line in out.stdout.splitlines()]

    first = await asyncio.to_thread(inbox, TFL)
    assert len(first) == 50
    assert {"delivery_id", "event_id", "recipient", "rule", "policy_version",
            "payload"} <= set(first[0])
    assert first[0]["recipient"] == "tfl:brussel"
    assert first[0]["payload"]["subject"]["id"] == "P-1"
    assert "summary" in first[0]["payload"]  # the tfl view, decoded from the store
    await produce(conn, names[0], [delivery(routing_setup, 50, TFL, "tfl")], router)
    second = await asyncio.to_thread(inbox, TFL)
    assert second[:50] == first
    assert len(second) == 51

    metrics = StoreMetrics(CollectorRegistry())
    async with Database(url) as db:
        async with InboxService(conn=conn, db=db, topics=topics, codec=routing_setup.codec,
                                metrics=metrics, registry=keys.registry,
                                recipients=[TFL, CSILR]) as service:
            stats = await service.run(until_idle=1.0)
        assert service.stored == 10  # TFL was already caught up by 'planr inbox'
        assert stats.records == 10
        stored = await read_stored(db, routing_setup.codec, CSILR)
        assert len(stored) == 10
        assert "summary" not in stored[0][1]["payload"]  # CSIL R view: no intelligence text
        assert await db.load_offsets("inboxes") == {(names[0], 0): 57, (names[1], 0): 10}
