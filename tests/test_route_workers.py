"""``planr route --workers N``: N router processes in one consumer group route every signal
once, each entitled recipient receives each of its signals exactly once, every worker serves
its own metrics port, and SIGTERM to the parent drains them all (offsets committed)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from cli.workers import check_partitions
from consumers.reader import read_topic
from planr import territory
from planr.broker import EmbeddedBroker, free_port
from planr.domain import Agency, Classification, Recipient, RecipientClass
from planr.errors import UsageError
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from scenarios.builders import make_signal, publish_all
from scenarios.keys import KeyRing
from schemas.codec import Codec
from schemas.models import SignalIn
from schemas.names import DELIVERY
from tests.conftest import key_env

PLANR = str(Path(sys.executable).parent / "planr")
PLACES = [{"municipality": "21004"}, {"municipality": "11002"}, {"municipality": "62063"},
          {"municipality": "44021"}, {"prison": "centrale-gevangenis-leuven"}]
TFL_CEILING = Classification.SECRET  # ceiling-tfl in routing/policy.yaml


def test_too_few_partitions_for_the_workers_is_refused_naming_the_topic():
    with pytest.raises(UsageError, match=r"p\.ingress\.b has 2 partition"):
        check_partitions({"p.ingress.a": 3, "p.ingress.b": 2}, 3)
    check_partitions({"p.ingress.a": 3, "p.ingress.b": 3}, 3)  # enough: no error


def _scenario() -> list[tuple[Agency, SignalIn]]:
    agencies = [Agency.VSSE, Agency.POLFED, Agency.OCAM, Agency.DGEPI]
    return [(agencies[i % 4], make_signal(
        location=PLACES[i % len(PLACES)], classification=list(Classification)[i % 5].value,
        tlp=["clear", "green", "amber"][i % 3], handling=["H0", "H1", "H3"][i % 3],
        subject={"id": f"P-{i % 11}", "kind": "person", "statuses": []}))
        for i in range(80)]


def _expected_tfl(signals: list[tuple[Agency, SignalIn]]) -> dict[str, set[str]]:
    """Independent statement of the rule: same arrondissement, at or below the ceiling."""
    out: dict[str, set[str]] = {a: set() for a in territory.arrondissement_ids()}
    for _, s in signals:
        place = territory.resolve(municipality=s.location.municipality, prison=s.location.prison)
        assert place is not None
        if s.classification.rank <= TFL_CEILING.rank:
            out[place.arrondissement].add(str(s.event_id))
    return out


def _env(broker: EmbeddedBroker, topics: Topics, tmp_path: Path, keys: KeyRing) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PLANR_")}
    e.update({"PLANR_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
              "PLANR_TOPIC_PREFIX": topics.prefix, "PLANR_DATA_DIR": str(tmp_path / "data"),
              "PLANR_LOG_FORMAT": "json", "PLANR_SESSION_TIMEOUT_MS": "6000",
              "PLANR_ROUTER_GROUP": f"router-{uuid.uuid4().hex[:8]}", **key_env(keys, ROUTER)})
    return e


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return ""


async def _delivered(conn: KafkaConnection, topics: Topics, codec: Codec,
                     arrondissement: str) -> list[str]:
    topic = topics.delivery(Recipient(RecipientClass.TFL, arrondissement))
    return [codec.decode(r.value, DELIVERY)["event_id"] async for r in read_topic(conn, topic)]


async def _load(conn: KafkaConnection, topics: Topics, codec: Codec, metrics: Metrics,
                keys: KeyRing, signals: list[tuple[Agency, SignalIn]]) -> None:
    await provision(conn, topics)
    await publish_all(conn, topics, codec, metrics, signals, signers=keys.signers)


@pytest.mark.kafka
def test_two_workers_deliver_each_entitled_signal_once_and_drain_on_sigterm(
    broker: EmbeddedBroker, conn: KafkaConnection, topics: Topics, metrics: Metrics,
    codec: Codec, keys: KeyRing, tmp_path: Path,
):
    signals = _scenario()
    asyncio.run(_load(conn, topics, codec, metrics, keys, signals))
    env = _env(broker, topics, tmp_path, keys)
    port = free_port()
    env["PLANR_METRICS_PORT"] = str(port)
    with subprocess.Popen([PLANR, "route", "--workers", "2"], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 90
        bodies = ["", ""]
        pattern = re.compile(r"^planr_routing_latency_seconds_count (\d+)", re.M)
        while time.monotonic() < deadline:
            bodies = [_metrics(port), _metrics(port + 1)]
            routed = [int(float(m.group(1))) if (m := pattern.search(b)) else 0 for b in bodies]
            if all(bodies) and sum(routed) >= len(signals):
                break
            time.sleep(0.5)
        assert all(bodies), "each worker serves its metrics on PLANR_METRICS_PORT + i"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    per_worker = [int(n) for n in re.findall(r"routed: (\d+) signals", err)]
    assert len(per_worker) == 2, err[-2000:]  # both drained and reported
    assert sum(per_worker) == len(signals)  # every signal routed once across the group

    expected = _expected_tfl(signals)
    assert sum(bool(v) for v in expected.values()) >= 3
    for arrondissement, want in expected.items():
        got = asyncio.run(_delivered(conn, topics, codec, arrondissement))
        assert sorted(got) == sorted(want), arrondissement  # exactly once each

    # Drained: offsets were committed, so the group has nothing left to route.
    again = subprocess.run([PLANR, "route", "--until-idle", "1"], env=env, text=True,
                           capture_output=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "routed: 0 signals" in again.stderr


@pytest.mark.kafka
def test_more_workers_than_ingress_partitions_exit_2_naming_the_topic(
    broker: EmbeddedBroker, conn: KafkaConnection, topics: Topics, keys: KeyRing,
    tmp_path: Path,
):
    asyncio.run(provision(conn, topics))  # ingress topics get 3 partitions
    result = subprocess.run([PLANR, "route", "--workers", "4"],
                            env=_env(broker, topics, tmp_path, keys), text=True,
                            capture_output=True, timeout=120, check=False)
    assert result.returncode == 2
    assert re.search(rf"{topics.prefix}\.ingress\.\S+ has 3 partition", result.stderr)
