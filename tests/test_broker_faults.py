"""Riding out faults, on a real embedded broker of each test's own (a Tansu process that the
test may freeze; never the session's), with the services as ``planr`` processes:

(a) the broker frozen with SIGSTOP for 10 s at a random moment of a 20,000-signal run, then
    resumed: the router, the projector and the inbox service notice, log and count the outage;
(b) the services started before the broker exists (its port answers nothing; it is started,
    and the bus provisioned, once every service has found it missing): they retry, then work;
(c) the router and the NTF aggregator killed with SIGKILL at five random moments (random
    delays, not aligned to batches or commits) and restarted each time.

Each time the run completes with every entitled delivery present in the common database and
the inboxes, none unentitled, none twice, and (c) the NTF counts equal to the offline count.
The oracle is the policy decided offline (:class:`tests.live_bus.Expected`: the engine's
decisions per signal, independently of the router's emitter, batches and ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumers.inboxes import InboxService
from consumers.metrics import StoreMetrics
from consumers.store import Database, sqlite_url
from planr.broker import EmbeddedBroker, free_port
from planr.domain import Recipient
from planr.errors import TopicsMissingError
from planr.kafka import KafkaConnection
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from tests.live_bus import Bus, Expected, Held, complete, held, publish, scenario, until

pytestmark = pytest.mark.kafka

FREEZE_S = 10.0
STORE_SERVICES = ("projector", "inboxes")


def routed(bus: Bus) -> float:
    """Signals the router counted (0 while its metrics port does not answer yet)."""
    try:
        return bus.sum_of("router", "planr_signals_routed_total")
    except OSError:
        return 0.0


def serving(bus: Bus, name: str) -> bool:
    try:
        bus.scrape(name)
    except OSError:
        return False
    return True


def logged_events(bus: Bus, name: str) -> list[str]:
    """The ``event`` of every JSON log line of a service (its stderr)."""
    path = bus.log(name)
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            events.append(json.loads(line)["event"])
    return events


@contextlib.contextmanager
def own_broker(tmp: Path, port: int | None = None) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=port, log_file=tmp / "tansu.log") as broker:
        yield broker


def assert_exactly_entitled(expected: Expected, got: Held) -> None:
    assert got.duplicates() == {}
    for recipient, ids in expected.entitled.items():
        assert set(got.events[recipient]) == ids, recipient


def assert_outage_seen(bus: Bus, names: tuple[str, ...]) -> None:
    """Each service counted an outage, logged it and its end, and is connected now."""
    for name in names:
        assert bus.sum_of(name, "planr_broker_outages_total") >= 1, name
        assert bus.sum_of(name, "planr_broker_connected") == 1, name
        events = logged_events(bus, name)
        assert "broker.unreachable" in events, name
        assert "broker.reachable" in events, name


async def settled(expected: Expected, bus: Bus, tmp: Path, limit: float,
                  ntf: bool = False) -> Held:
    """Wait until every store holds what it is entitled to (and the NTF counts, with
    ``ntf``); then give anything extra or repeated a moment to arrive, and read them."""
    def done() -> bool:
        got = held(tmp)
        return complete(expected, got) and (not ntf or got.ntf_facts >= expected.ntf_facts)

    await until(done, limit, "the stores", bus)
    await asyncio.sleep(3)
    return held(tmp)


@pytest.mark.timeout(1200)
async def test_a_broker_frozen_for_ten_seconds_mid_run_loses_and_repeats_nothing(
        routing_setup, keys, tmp_path):
    n = 20_000
    rng = random.Random(1010)
    signals = scenario(n, seed=3131)
    expected = Expected.of(routing_setup, signals)
    names = ("router", *STORE_SERVICES)
    with own_broker(tmp_path) as broker:
        pid = broker.pid
        assert pid is not None
        conn = KafkaConnection(bootstrap_servers=broker.bootstrap_servers)
        topics = Topics(prefix="frozen")
        await provision(conn, topics)
        bus = Bus(conn, topics, keys, tmp_path)
        for name in names:
            bus.start(name)
        publishing = asyncio.create_task(
            publish(conn, topics, routing_setup, keys, signals, Metrics(CollectorRegistry())))
        try:
            # a random moment in the middle of the run: once the router has routed a random
            # share of the signals (its metrics port answers whatever the broker does)
            target = rng.randrange(n // 10, n // 2)
            await until(lambda: routed(bus) >= target, 600, "the router to get going", bus)
            os.kill(pid, signal.SIGSTOP)
            try:
                frozen_at = routed(bus)
                await asyncio.sleep(FREEZE_S)
            finally:
                os.kill(pid, signal.SIGCONT)
            await publishing
            got = await settled(expected, bus, tmp_path, 600)
            assert_outage_seen(bus, names)
        finally:
            bus.stop()
            if not publishing.done():
                publishing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publishing
    assert frozen_at < n  # the freeze fell in the middle of the run
    assert_exactly_entitled(expected, got)


@pytest.mark.timeout(300)
async def test_b_services_started_before_the_broker_wait_for_it_then_miss_nothing(
        routing_setup, keys, tmp_path):
    signals = scenario(1_500, seed=4242)
    expected = Expected.of(routing_setup, signals)
    names = ("router", *STORE_SERVICES)
    port = free_port()  # nothing answers there until the broker starts
    conn = KafkaConnection(bootstrap_servers=f"127.0.0.1:{port}")
    topics = Topics(prefix="early")
    bus = Bus(conn, topics, keys, tmp_path)
    try:
        for name in names:
            bus.start(name)
        await until(lambda: all("service.start_retry" in logged_events(bus, name)
                                for name in names), 120, "every service to miss the broker", bus)
        with own_broker(tmp_path, port):
            try:
                await provision(conn, topics)
                await publish(conn, topics, routing_setup, keys, signals,
                              Metrics(CollectorRegistry()))
                got = await settled(expected, bus, tmp_path, 180)
                assert_outage_seen(bus, names)
            finally:
                bus.stop()
    finally:
        bus.stop()
    assert_exactly_entitled(expected, got)


@pytest.mark.timeout(900)
async def test_c_router_and_aggregator_killed_five_times_at_random_moments_count_all_once(
        routing_setup, keys, tmp_path):
    rng = random.Random(5151)
    signals = scenario(3_000, seed=6262)
    expected = Expected.of(routing_setup, signals)
    killed = ("router", "aggregator")
    with own_broker(tmp_path) as broker:
        conn = KafkaConnection(bootstrap_servers=broker.bootstrap_servers)
        topics = Topics(prefix="killed")
        await provision(conn, topics)
        bus = Bus(conn, topics, keys, tmp_path)
        for name in (*killed, *STORE_SERVICES):
            bus.start(name)
        try:
            # the scenario is published in slices over ~30 s, so that the run lasts while
            # the five kills fall (each: a restart, then a random delay), however fast the
            # machine routes
            async def publish_paced() -> None:
                for start in range(0, len(signals), 100):
                    await publish(conn, topics, routing_setup, keys, signals[start:start + 100],
                                  Metrics(CollectorRegistry()))
                    await asyncio.sleep(1.0)

            publishing = asyncio.create_task(publish_paced())
            mid_run = 0
            for _ in range(5):
                await until(lambda: all(serving(bus, name) for name in killed) and (
                    routed(bus) > 0 or complete(expected, held(tmp_path))), 180,
                    "the restarted router to work", bus)
                # random in time: a delay once the router works, whatever it is doing then
                # (routing, waiting for acknowledgements, saving its ledger, committing)
                await asyncio.sleep(rng.uniform(0.0, 2.5))
                working = routed(bus) > 0 and not complete(expected, held(tmp_path))
                for name in killed:
                    bus.kill(name)
                mid_run += working
                for name in killed:
                    bus.start(name)
            await publishing
            got = await settled(expected, bus, tmp_path, 300, ntf=True)
        finally:
            bus.stop()
    assert mid_run >= 3  # the kills fell in the middle of the run, not after it
    assert_exactly_entitled(expected, got)
    assert got.ntf_facts == expected.ntf_facts
    assert got.ntf_cells == expected.ntf_cells


async def test_one_shot_catch_up_waits_a_bounded_time_for_topics_then_names_the_fix(
        conn, topics, routing_setup, keys, tmp_path):
    """``planr inbox`` (a catch-up) on a bus never provisioned: it retries for its start
    timeout, then fails with an error that says what to run (a service would wait on)."""
    loop = asyncio.get_running_loop()
    async with Database(sqlite_url(tmp_path)) as db:
        service = InboxService(conn=conn, db=db, topics=topics, codec=routing_setup.codec,
                               metrics=StoreMetrics(CollectorRegistry()),
                               registry=keys.registry, recipients=[Recipient.parse("tfl:brussel")])
        began = loop.time()
        with pytest.raises(TopicsMissingError, match="planr topics provision"):
            await service.catch_up(start_timeout=3.0)
        waited = loop.time() - began
        await service.stop()
    assert 1.5 <= waited < 15  # retried (0.5 s, then 1 s of backoff), then gave up
    assert not service.started
