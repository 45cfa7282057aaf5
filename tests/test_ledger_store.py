"""The router's ledger store on SQLite and PostgreSQL: states and holdings survive a round
trip; consultations by event and by subject answer with ids only and are logged."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumers.ledger import StoreLedger
from consumers.store import Database
from routing.lifecycle import Markings, after_routing, after_withdrawal
from tests.test_store_helpers import BACKENDS, store_url

AT = datetime(2026, 11, 29, 12, tzinfo=UTC)
M = Markings("restreint", "H2", "amber", False, frozenset({"tfl:brussel", "ftf-db"}))


@pytest.fixture(params=BACKENDS)
async def ledger(request, tmp_path):
    async with store_url(request.param, tmp_path) as url, Database(url) as db:
        yield StoreLedger(db)


async def test_states_and_holdings_round_trip(ledger):
    a, _ = after_routing(None, event_id="e1", agency="vsse", subject_id="P-1", version=2,
                         fingerprint="f" * 64, markings=M,
                         allowed={"tfl:brussel": "d1", "ftf-db": "d2"})
    b, _ = after_withdrawal(None, event_id="e2", agency="ocam", version=1)
    await ledger.save([a, b], AT)
    loaded = await ledger.load(["e1", "e2", "unknown"])
    assert set(loaded) == {"e1", "e2"}
    assert loaded["e1"] == a
    assert loaded["e2"].withdrawn
    assert loaded["e2"].markings is None
    # a later save replaces the holdings' state
    a2, retracted = after_routing(loaded["e1"], event_id="e1", agency="vsse", subject_id="P-1",
                                  version=3, fingerprint="g" * 64, markings=M,
                                  allowed={"tfl:brussel": "d1"})
    await ledger.save([a2], AT)
    again = (await ledger.load(["e1"]))["e1"]
    assert [h.recipient for h in retracted] == ["ftf-db"]
    assert {r: (h.version, h.active) for r, h in again.holdings.items()} == {
        "tfl:brussel": (3, True), "ftf-db": (2, False)}


async def test_consultation_by_subject_is_logged_with_ids_only(ledger):
    for n, subject in enumerate(("P-1", "P-1", "P-2")):
        s, _ = after_routing(None, event_id=f"e{n}", agency="vsse", subject_id=subject,
                             version=1, fingerprint="f", markings=M,
                             allowed={"tfl:brussel": f"d{n}"})
        await ledger.save([s], AT)
    rows = await ledger.consult(operator="comite-r", purpose="annual review", query="subject",
                                query_id="P-1", at=AT)
    assert sorted(r["event_id"] for r in rows) == ["e0", "e1"]
    assert {r["recipient"] for r in rows} == {"tfl:brussel"}
    log = await ledger.consultations()
    assert [(c["operator"], c["query"], c["query_id"], c["rows"]) for c in log] == [
        ("comite-r", "subject", "P-1", 2)]


async def test_a_load_larger_than_one_query_returns_every_state_with_its_holdings(ledger):
    states = []
    for n in range(1_201):  # three chunks of the load's query
        recipients = [f"tfl:{a}" for a in ("brussel", "antwerpen", "gent")[: n % 4]]
        if recipients:
            s, _ = after_routing(None, event_id=f"e{n:05d}", agency="vsse",
                                 subject_id=f"P-{n % 7}", version=1 + n % 3, fingerprint="f",
                                 markings=M, allowed={r: f"d{n}-{r}" for r in recipients})
        else:
            s, _ = after_withdrawal(None, event_id=f"e{n:05d}", agency="ocam", version=1)
        states.append(s)
    await ledger.save(states, AT)
    loaded = await ledger.load([s.event_id for s in states] + ["unknown"])
    assert loaded == {s.event_id: s for s in states}
