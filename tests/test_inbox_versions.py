"""Durable inboxes keep the latest version of each delivery, or a retraction marker with no
content, whatever order the records arrive in (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from consumers.inbox_rows import Action, Kept, merge, read_stored
from consumers.inboxes import InboxService
from consumers.metrics import StoreMetrics
from consumers.store import Database
from consumers.store.tables import inbox_deliveries
from planr.domain import Agency, Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.topics import Topics
from scenarios.builders import numbered_signal as signal
from scenarios.ftf import retraction_record, tfl_delivery
from schemas.names import DELIVERY
from tests.test_event_identity import Stream
from tests.test_store_helpers import BACKENDS, store_url

TOPICS = Topics("versions")
TFL = Recipient(RecipientClass.TFL, "brussel")
AT = datetime(2026, 11, 29, tzinfo=UTC)


@pytest.mark.parametrize(("kept", "version", "retraction", "action"), [
    (None, 1, False, Action.STORE),
    (None, 2, True, Action.STORE),
    (Kept(1, "a", False), 2, False, Action.STORE),
    (Kept(2, "a", False), 1, False, Action.STALE),
    (Kept(2, "a", False), 2, False, Action.DUPLICATE),
    (Kept(2, "a", False), 2, True, Action.STORE),
    (Kept(2, None, True), 2, False, Action.STALE),
    (Kept(2, None, True), 2, True, Action.DUPLICATE),
    (Kept(2, None, True), 3, False, Action.STORE),
    (Kept(3, "a", False), 2, True, Action.STALE),
])
def test_merge_rules(kept, version, retraction, action):
    assert merge(kept, version=version, content_hash="a", retraction=retraction) is action


def test_the_same_version_with_other_content_is_a_conflict():
    assert merge(Kept(1, "a", False), version=1, content_hash="b",
                 retraction=False) is Action.CONFLICT


@pytest.fixture(params=BACKENDS)
async def db(request, tmp_path):
    async with store_url(request.param, tmp_path) as url, Database(url) as database:
        yield database


@pytest.fixture
def feed(db, codec, keys):
    service = InboxService(conn=KafkaConnection("127.0.0.1:1"), db=db, topics=TOPICS,
                           codec=codec, metrics=StoreMetrics(CollectorRegistry()),
                           registry=keys.registry, recipients=[TFL])
    return Stream(service, TOPICS.delivery(TFL), keys.signer(ROUTER))


def _versions(setup, *versions: int) -> dict[int, bytes]:
    return {v: tfl_delivery(setup, signal(0, agency=Agency.POLLOC, subject=f"P-{v}").model_copy(
        update={"version": v})) for v in versions}


async def test_the_latest_version_is_kept_whatever_the_order(db, codec, feed, routing_setup):
    v = _versions(routing_setup, 1, 2, 3)
    await feed(v[3], v[1], v[2])
    [(_, item)] = await read_stored(db, codec, TFL)
    assert (item["version"], item["payload"]["subject"]["id"]) == (3, "P-3")


async def test_a_retraction_removes_the_payload_and_leaves_a_marker(
    db, codec, feed, routing_setup
):
    v = _versions(routing_setup, 1, 2)
    env = codec.decode(v[1], DELIVERY)
    gone = retraction_record(codec, delivery_id=env["delivery_id"], event_id=env["event_id"],
                             recipient=TFL, version=1, reason="withdrawn", at=AT)
    await feed(v[1], gone, v[1])  # the delivery replayed after its retraction stays gone
    [(_, item)] = await read_stored(db, codec, TFL)
    assert item == {"delivery_id": env["delivery_id"], "event_id": env["event_id"],
                    "recipient": str(TFL), "version": 1, "retracted": True,
                    "retracted_at": "2026-11-29T00:00:00Z", "reason": "withdrawn"}
    async with db.engine.connect() as conn:
        payloads = [r[0] for r in await conn.execute(inbox_deliveries.select().with_only_columns(
            inbox_deliveries.c.payload))]
    assert payloads == [None]
    await feed(v[2])  # entitled again with a later version
    [(_, item)] = await read_stored(db, codec, TFL)
    assert (item["version"], item.get("retracted")) == (2, None)
