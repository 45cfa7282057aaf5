"""The planr command line, run as a user runs it, against the real embedded broker."""

from __future__ import annotations

import json
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

from planr.broker import EmbeddedBroker, free_port
from planr.signing import ROUTER, KeyRegistry
from planr.topics import Topics
from scenarios.builders import SECRET_SUMMARY, signal_json
from scenarios.keys import KeyRing
from tests.conftest import SESSION_TIMEOUT_MS, key_env

pytestmark = pytest.mark.kafka  # every test here starts or uses a broker

PLANR = str(Path(sys.executable).parent / "planr")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def env(broker: EmbeddedBroker, topics: Topics, tmp_path: Path,
        keys: KeyRing) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PLANR_")}
    e.update({
        "PLANR_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "PLANR_TOPIC_PREFIX": topics.prefix,
        "PLANR_DATA_DIR": str(tmp_path / "data"),
        "PLANR_LOG_FORMAT": "json",
        "PLANR_ROUTER_GROUP": f"router-{uuid.uuid4().hex[:8]}",
        "PLANR_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        **key_env(keys, ROUTER),
    })  # fmt: skip
    return e


def agency_key(env: dict[str, str], agency: str) -> str:
    """The agency's private key file: the one of the registry's key directory it owns."""
    registry = Path(env["PLANR_KEY_REGISTRY"])
    entry = next(e for e in KeyRegistry.load(registry).entries if e.owner == agency)
    return str(registry.parent / f"{entry.id}.pem")


def planr(env: dict[str, str], *args: str, stdin: str | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``planr``; ``publish --agency X`` signs with X's key, like the agency would."""
    if args[:2] == ("publish", "--agency") and "PLANR_KEY_REGISTRY" in env:
        env = {**env, "PLANR_SIGNING_KEY": agency_key(env, args[2])}
    return subprocess.run([PLANR, *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_topics_provision_is_idempotent(env: dict[str, str]):
    first = planr(env, "topics", "provision")
    assert first.returncode == 0, first.stderr
    assert re.search(r"\b(\d+) wanted, \1 created", first.stdout)
    second = planr(env, "topics", "provision")
    assert second.returncode == 0
    assert " 0 created" in second.stdout


def test_publish_reports_bad_lines_by_number_and_field_and_publishes_the_rest(
    env: dict[str, str], tmp_path: Path
):
    assert planr(env, "topics", "provision").returncode == 0
    lines = [
        json.dumps(signal_json()),
        json.dumps(signal_json(location={"municipality": "99999"})),
        "",
        "{not json",
        json.dumps(signal_json(agency="ocam")),
        json.dumps(signal_json(agency="vsse", location={"prison": "centrale-gevangenis-leuven"})),
    ]
    f = tmp_path / "signals.jsonl"
    f.write_text("\n".join(lines) + "\n")
    result = planr(env, "publish", "--agency", "vsse", str(f))
    assert result.returncode == 1
    ids = result.stdout.split()
    assert len(ids) == 2
    assert all(UUID_RE.match(i) for i in ids)
    assert "line 2: location: unknown municipality" in result.stderr
    assert "line 4: " in result.stderr
    assert "line 5: agency: does not match --agency vsse" in result.stderr
    assert "line 1:" not in result.stderr
    assert "line 6:" not in result.stderr
    assert SECRET_SUMMARY not in result.stderr + result.stdout


def test_publish_reads_stdin_and_succeeds_on_valid_input(env: dict[str, str]):
    assert planr(env, "topics", "provision").returncode == 0
    event_id = str(uuid.uuid4())
    result = planr(env, "publish", "--agency", "polfed", "-",
                   stdin=json.dumps(signal_json(event_id=event_id)) + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [event_id]


def test_commands_without_a_broker_say_how_to_get_one(env: dict[str, str]):
    del env["PLANR_BOOTSTRAP_SERVERS"]
    result = planr(env, "publish", "--agency", "vsse", "-", stdin="")
    assert result.returncode == 2
    assert "PLANR_BOOTSTRAP_SERVERS is not set" in result.stderr


def test_inbox_rejects_an_unknown_recipient(env: dict[str, str]):
    result = planr(env, "inbox", "tfl:atlantis")
    assert result.returncode == 2
    assert "unknown tfl id" in result.stderr


def test_route_until_idle_then_inbox_json_shows_the_delivery(env: dict[str, str]):
    assert planr(env, "topics", "provision").returncode == 0
    event_id = str(uuid.uuid4())
    published = planr(env, "publish", "--agency", "vsse", "-",
                      stdin=json.dumps(signal_json(event_id=event_id)) + "\n")
    assert published.returncode == 0, published.stderr
    routed = planr(env, "route", "--until-idle", "2")
    assert routed.returncode == 0, routed.stderr
    assert SECRET_SUMMARY not in routed.stderr
    inbox = planr(env, "inbox", "tfl:brussel", "--json")
    assert inbox.returncode == 0, inbox.stderr
    items = [json.loads(line) for line in inbox.stdout.splitlines()]
    assert [i["event_id"] for i in items] == [event_id]
    item = items[0]
    for key in ("delivery_id", "event_id", "recipient", "rule", "policy_version", "payload"):
        assert key in item
    assert item["recipient"] == "tfl:brussel"
    assert item["rule"] == "tfl-territory"
    assert item["payload"]["location"]["municipality"] == "21004"
    # The Liège taskforce is not entitled to a Brussels signal.
    liege = planr(env, "inbox", "tfl:liege", "--json")
    assert liege.returncode == 0
    assert liege.stdout == ""


def test_route_serves_metrics_and_drains_on_sigterm(env: dict[str, str]):
    assert planr(env, "topics", "provision").returncode == 0
    port = free_port()
    env["PLANR_METRICS_PORT"] = str(port)
    with subprocess.Popen([PLANR, "route"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        published = planr(env, "publish", "--agency", "ocam", "-",
                          stdin=json.dumps(signal_json()) + "\n")
        assert published.returncode == 0
        body = ""
        deadline = time.monotonic() + 60
        pattern = 'planr_routing_decisions_total{outcome="allow",recipient_class="tfl"} 1.0'
        while pattern not in body and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
                    body = r.read().decode()
            except OSError:
                continue
        assert pattern in body
        assert "planr_routing_latency_seconds_count 1.0" in body
        assert SECRET_SUMMARY not in body
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "1 signals" in err
    # Offsets were committed before exit: a new run of the same group routes nothing again.
    again = planr(env, "route", "--until-idle", "1")
    assert again.returncode == 0
    assert "routed: 0 signals" in again.stderr


def test_run_demo_prints_the_summary(tmp_path: Path):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PLANR_")}
    e.update({"PLANR_DEMO_SIGNALS": "300", "PLANR_DATA_DIR": str(tmp_path / "data"),
              "PLANR_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS)})
    result = planr(e, "run", "--demo", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "planr-bus demo summary" in out
    assert re.search(r"signals in\s+300\b", out)
    assert re.search(r"signals routed\s+300\b", out)
    assert re.search(r"dead letters\s+2\b", out)
    assert "tfl:brussel" in out
    # the NTF aggregator waited for the facts the router wrote (it used to stop at once)
    counted = re.search(r"ntf-aggregator: (\d+) facts counted", result.stderr)
    assert counted is not None, result.stderr[-2000:]
    assert int(counted.group(1)) > 0
    assert "synthetic demo signal" not in result.stdout + result.stderr
