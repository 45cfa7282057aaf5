"""A bus of real ``planr`` processes for the operations tests: the router, the projector, the
inbox service (three inboxes) and the NTF aggregator as subprocesses of the CLI, each with its
metrics port, fed a generated scenario; what each recipient must hold, decided offline by the
default policy; what the stores hold at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from planr.broker import free_port
from planr.domain import Agency, Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.signing import AGGREGATOR, INBOXES, PROJECTOR, ROUTER
from planr.telemetry import Metrics
from planr.topics import Topics
from routing.engine import Facts
from routing.setup import RoutingSetup
from scenarios.builders import publish_all
from scenarios.keys import KeyRing
from scenarios.signals import generate
from schemas.models import SignalIn
from tests.conftest import key_env

PLANR = str(Path(sys.executable).parent / "planr")
INBOX_RECIPIENTS = [Recipient.parse(r) for r in ("tfl:brussel", "wg:salafism", "csilr:42004")]
FTF_DB = str(Recipient(RecipientClass.FTF_DB))

#: name -> (argv after ``planr``, signing owner, store)
SERVICES: dict[str, tuple[list[str], str]] = {
    "router": (["route"], ROUTER),
    "projector": (["ftf", "project"], PROJECTOR),
    "inboxes": (["inboxes", *(f"--recipient={r}" for r in INBOX_RECIPIENTS)], INBOXES),
    "aggregator": (["aggregate", "--interval", "3600"], AGGREGATOR),
}


def scenario(n: int, seed: int) -> list[tuple[Agency, SignalIn]]:
    return list(generate(n, seed=seed))


@dataclass
class Expected:
    """Offline: the event ids each watched recipient is entitled to, the signals the NTF
    counts, and its counts per (month of occurrence, arrondissement, phenomenon or "none")."""

    entitled: dict[str, set[str]]
    ntf_facts: int
    ntf_cells: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    @classmethod
    def of(cls, setup: RoutingSetup, signals: list[tuple[Agency, SignalIn]]) -> Expected:
        watched = {FTF_DB, *(str(r) for r in INBOX_RECIPIENTS)}
        entitled: dict[str, set[str]] = {r: set() for r in watched}
        ntf = 0
        cells: Counter[tuple[str, str, str]] = Counter()
        for agency, s in signals:
            facts = Facts.of(s.to_avro(agency))
            for d in setup.engine.decide(facts):
                if not d.allowed:
                    continue
                if d.recipient.cls is RecipientClass.NTF:
                    ntf += 1
                    month = s.occurred_at.astimezone(UTC).strftime("%Y-%m")
                    for ph in sorted(facts.phenomena) or ["none"]:
                        cells[(month, facts.arrondissement, ph)] += 1
                if str(d.recipient) in watched:
                    entitled[str(d.recipient)].add(facts.event_id)
        return cls(entitled, ntf, cells)


@dataclass
class Bus:
    """The processes of one test; stop them with :meth:`stop` (by PID, SIGTERM then SIGKILL)."""

    conn: KafkaConnection
    topics: Topics
    keys: KeyRing
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def env(self, owner: str, port: int) -> dict[str, str]:
        return {**os.environ, "PLANR_BOOTSTRAP_SERVERS": self.conn.bootstrap_servers,
                "PLANR_TOPIC_PREFIX": self.topics.prefix, "PLANR_DATA_DIR": str(self.tmp),
                "PLANR_LOG_LEVEL": "info", "PLANR_LOG_FORMAT": "json", "PLANR_IDEMPOTENCE": "off",
                "PLANR_METRICS_PORT": str(port), "PLANR_METRICS_HOST": "127.0.0.1",
                **key_env(self.keys, owner)}

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def start(self, name: str) -> subprocess.Popen[bytes]:
        args, owner = SERVICES[name]
        port = self.ports.setdefault(name, free_port())
        with self.log(name).open("ab") as err:
            proc = subprocess.Popen([PLANR, *args], env=self.env(owner, port),
                                    stdout=subprocess.DEVNULL, stderr=err)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited: {self.log(name).read_text()[-3000:]}"

    def scrape(self, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample the process serves on /metrics: (name, labels) -> value."""
        url = f"http://127.0.0.1:{self.ports[name]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def sum_of(self, name: str, metric: str, **labels: str) -> float:
        return sum(v for (n, ls), v in self.scrape(name).items()
                   if n == metric and set(labels.items()) <= set(ls))


async def publish(conn: KafkaConnection, topics: Topics, setup: RoutingSetup, keys: KeyRing,
                  signals: list[tuple[Agency, SignalIn]], metrics: Metrics) -> None:
    signers = {a.value: keys.signer(a.value) for a in {a for a, _ in signals}}
    await publish_all(conn, topics, setup.codec, metrics, signals, signers=signers)


@dataclass
class Held:
    """What the stores hold: event ids per recipient, as lists (a repeat would show)."""

    events: dict[str, list[str]]
    ntf_facts: int  # facts the NTF aggregator took (once per event id)
    ntf_cells: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def duplicates(self) -> dict[str, int]:
        return {r: n for r, ids in self.events.items()
                if (n := sum(c - 1 for c in Counter(ids).values()))}


def _rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    """Rows of a store the processes write (read-only; none while the file does not exist)."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return db.execute(query).fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return []


def held(tmp: Path) -> Held:
    events: dict[str, list[str]] = {
        FTF_DB: [e for (e,) in _rows(tmp / "ftf.db", "SELECT event_id FROM applied_events")]}
    rows = _rows(tmp / "inboxes.db", "SELECT recipient, event_id FROM inbox_deliveries")
    for r in INBOX_RECIPIENTS:
        events[str(r)] = [e for rec, e in rows if rec == str(r)]
    ntf = _rows(tmp / "ntf.db", "SELECT count(*) FROM ntf_events")
    cells = Counter({(p, a, ph): int(n) for p, a, ph, n in _rows(
        tmp / "ntf.db", "SELECT period, arrondissement, phenomenon, count FROM ntf_counts")})
    return Held(events, int(ntf[0][0]) if ntf else 0, cells)


async def until(done: Callable[[], bool], limit: float, what: str, bus: Bus | None = None
                ) -> None:
    """Wait until ``done()`` is true (checking that the processes are alive meanwhile)."""
    end = time.monotonic() + limit
    while not done():
        if bus is not None:
            bus.alive()
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


def complete(expected: Expected, got: Held) -> bool:
    return all(set(got.events.get(r, [])) >= ids for r, ids in expected.entitled.items())
