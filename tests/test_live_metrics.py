"""What the monitoring team sees of a real run: the router, the projector, the inbox service
and the NTF aggregator run as ``planr`` processes over a generated scenario with a few bad
records, once; then

- every label of every series they (and the publisher) serve is from a bounded set: no subject
  id, commune or free text is ever a label;
- a real Prometheus (Debian's ``prometheus``), scraping them every second, finds the series the
  scenario implies: signals routed = signals published, dead letters = bad records sent, every
  consumer's lag back to 0, every service connected, its build and start time.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumers.ftf.projector import PROJECTOR
from consumers.inboxes import INBOXES
from consumers.ntf.aggregator import AGGREGATOR
from planr.broker import free_port
from planr.domain import Agency, RecipientClass
from planr.kafka import make_producer
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from routing.policy import Policy
from tests.live_bus import Bus, Expected, complete, held, publish, scenario, until

pytestmark = pytest.mark.kafka

N_SIGNALS = 1_500
BAD_RECORDS = 7
ROUTER_GROUP = "planr-router"
GROUPS = {ROUTER_GROUP, PROJECTOR, INBOXES, AGGREGATOR}
JOBS = {"router": "planr-router", "projector": "planr-ftf-projector",
        "inboxes": "planr-inboxes", "aggregator": "planr-ntf-aggregator"}


async def run_scenario(conn, topics, routing_setup, keys, tmp: Path, publisher: Metrics,
                       bus: Bus | None = None) -> tuple[Bus, list[Any]]:
    """Start the four services, publish the scenario and the bad records, wait until every
    store holds what it is entitled to and every consumer has caught up (lag 0)."""
    signals = scenario(N_SIGNALS, seed=1212)
    expected = Expected.of(routing_setup, signals)
    bus = bus or Bus(conn, topics, keys, tmp)
    await provision_all(conn, topics)
    for name in ("router", "projector", "inboxes", "aggregator"):
        bus.start(name)
    await publish(conn, topics, routing_setup, keys, signals, publisher)
    producer = make_producer(conn)
    await producer.start()
    try:
        ingress = topics.ingress(Agency.VSSE)
        for i in range(BAD_RECORDS):  # unsigned: the router dead-letters each
            await producer.send_and_wait(ingress, value=f"not a signal {i}".encode())
    finally:
        await producer.stop()
    await until(lambda: complete(expected, held(tmp)), 120, "the stores", bus)

    def caught_up() -> bool:
        lags = [v for name in bus.procs for (n, _), v in bus.scrape(name).items()
                if n == "planr_consumer_lag_records"]
        return bool(lags) and max(lags) == 0 and bus.sum_of(
            "router", "planr_dead_letters_total") == BAD_RECORDS

    await until(caught_up, 60, "lag 0 everywhere", bus)
    return bus, signals


async def provision_all(conn, topics) -> None:
    await provision(conn, topics)


# ---- labels ------------------------------------------------------------------------------

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def bounded_values(topics, policy: Policy) -> dict[str, set[str] | re.Pattern[str]]:
    """Per label name, the values it may take (a set) or the form of its values."""
    return {
        "agency": {a.value for a in Agency} | {"unknown"},
        "recipient_class": {c.value for c in RecipientClass},
        "rule": {r.id for r in policy.rules} | {"default-deny"},
        "group": GROUPS, "consumer": GROUPS - {ROUTER_GROUP}, "service": GROUPS | {"router"},
        "topic": set(topics.everything()),
        "partition": re.compile(r"^\d{1,3}$"),
        "version": re.compile(r"^(sha256:[0-9a-f]{16}|\d+\.\d+\.\d+\S*)$"),
        "policy_version": re.compile(r"^sha256:[0-9a-f]{16}$"),
        "schemas": re.compile(r"^[0-9a-f]{16}$"),
        "le": re.compile(r"^([0-9.]+|\+Inf)$"),
        "state": {"proposed", "included", "removed"},  # a fiche's state in the database
        **dict.fromkeys(("outcome", "reason", "status", "kind", "action", "verb",
                         "answer_class", "access_mode"), IDENTIFIER),
    }


def scenario_text(signals) -> set[str]:
    """Every subject id, commune and free text of the scenario."""
    out: set[str] = set()
    for agency, s in signals:
        record = s.to_avro(agency)
        out.add(record["subject"]["id"])
        out.add(record["summary"])
        location = record.get("location") or {}
        out.update(v for v in location.values() if isinstance(v, str))
    return {t for t in out if t}


def label_violations(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                     allowed: dict[str, Any], forbidden: set[str]) -> list[str]:
    bad = []
    for name, labels in samples:
        if not name.startswith("planr_"):
            continue  # prometheus_client's process/python collectors: fixed labels
        for label, value in labels:
            rule = allowed.get(label)
            ok = (rule is not None and value not in forbidden
                  and (value in rule if isinstance(rule, set) else rule.match(value)))
            if not ok:
                bad.append(f"{name}{{{label}={value!r}}}")
    return bad


def registry_samples(registry: CollectorRegistry):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples}


def test_the_label_check_sees_a_subject_id_or_a_commune_used_as_a_label(routing_setup):
    topics = Topics(prefix="labels")
    allowed = bounded_values(topics, routing_setup.policy)
    subject = "subject-4711"
    leaky = {("planr_dead_letters_total", (("reason", subject),)): 1.0,
             ("planr_routing_decisions_total", (("outcome", "allow"),
                                                ("recipient_class", "brussel"))): 1.0}
    assert len(label_violations(leaky, allowed, {subject})) == 2


# ---- a real Prometheus -------------------------------------------------------------------


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("prometheus binary not installed (Debian package prometheus); CI "
                    "installs it")
    return found


def prometheus_config_for_ports(ports: dict[str, int]) -> str:
    jobs = [{"job_name": JOBS[name], "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for name, port in ports.items()]
    return json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                       "scrape_configs": jobs})  # JSON is YAML


class Prometheus:
    def __init__(self, binary: str, config: str, tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "prometheus.yml").write_text(config, encoding="utf-8")
        self.port = free_port()
        self.log = tmp / "prometheus.log"
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=subprocess.DEVNULL, stderr=err, cwd=tmp)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return json.loads(r.read()) if path.startswith("/api") else r.read()

    def ready(self) -> bool:
        try:
            self.get("/-/ready")
        except OSError:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            return False
        return True

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.timeout(240)
async def test_a_real_prometheus_sees_what_the_scenario_implies_and_no_label_is_content(
        conn, topics, routing_setup, keys, tmp_path):
    """One run of the router, projector, inbox service and aggregator as processes: a real
    Prometheus scrapes them and sees the values the scenario implies; and no label value of
    any series of any process (or of the publisher) is a subject id, a commune or free text:
    every one is from its bounded set."""
    binary = prometheus_binary()
    publisher = Metrics(CollectorRegistry())
    bus = Bus(conn, topics, keys, tmp_path)
    # the metrics ports are chosen before the processes start, so Prometheus can scrape
    # them from the first second of the run
    for name in JOBS:
        bus.ports[name] = free_port()
    prom = Prometheus(binary, prometheus_config_for_ports(bus.ports), tmp_path / "prometheus")
    try:
        await until(prom.ready, 30, "prometheus to be ready")
        bus, signals = await run_scenario(conn, topics, routing_setup, keys, tmp_path,
                                          publisher, bus=bus)
        allowed = bounded_values(topics, routing_setup.policy)
        forbidden = scenario_text(signals)
        scraped = {name: bus.scrape(name) for name in bus.procs}
        scraped["publisher"] = registry_samples(publisher.registry)
        for name, samples in scraped.items():
            assert any(n.startswith("planr_") for n, _ in samples), name
            assert label_violations(samples, allowed, forbidden) == [], name
        published = sum(v for (n, _), v in registry_samples(publisher.registry).items()
                        if n == "planr_signals_published_total")
        assert published == N_SIGNALS

        ended = time.time()  # every store holds its share and every lag was 0 by now

        def settled() -> bool:  # every target was scraped after the end of the run
            scraped_after = all(
                (prom.value(f'timestamp(up{{job="{job}"}})') or 0.0) > ended
                for job in JOBS.values())
            return (scraped_after
                    and prom.value("sum(planr_signals_routed_total)") == N_SIGNALS
                    and prom.value("sum(planr_dead_letters_total)") == BAD_RECORDS
                    and prom.value("max(planr_consumer_lag_records)") == 0.0)

        await until(settled, 30, "prometheus to scrape the end of the run")
        groups = {r["metric"]["group"] for r in prom.query(
            "max by (group) (planr_consumer_lag_records)")}
        assert groups == GROUPS
        for name, job in JOBS.items():
            assert prom.value(f'up{{job="{job}"}}') == 1.0, job
            assert prom.value(f'planr_broker_connected{{job="{job}"}}') == 1.0, job
            start = prom.value(f'process_start_time_seconds{{job="{job}"}}')
            assert start is not None, name
            assert start <= time.time(), name
            build = prom.query(f'planr_build_info{{job="{job}"}}')
            assert [b["metric"]["policy_version"] for b in build] == [
                routing_setup.policy.version], job
        # the projector's and the inboxes' delivery -> applied latency was observed
        for consumer in (PROJECTOR, INBOXES):
            count = prom.value(
                f'sum(planr_store_apply_latency_seconds_count{{consumer="{consumer}"}})')
            assert count is not None, consumer
            assert count > 0, consumer
    finally:
        bus.stop()
        prom.stop()
