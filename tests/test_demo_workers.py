"""Router workers report their statistics to the parent, which adds them up: the sum itself
(pure, every field of RouterStats), ``planr route --workers 2 --until-idle S --json`` (each
worker stops once idle, the parent prints the total), and ``planr run --demo`` routing with two
worker processes whose shares add up to the summary's total."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest

from cli.workers import WorkerRun, stats_from_json, stats_to_json, sum_stats
from planr.broker import EmbeddedBroker
from planr.errors import PlanrError
from planr.kafka import KafkaConnection
from planr.telemetry import Metrics
from planr.topics import Topics
from routing.router import RouterStats
from scenarios.keys import KeyRing
from schemas.codec import Codec
from tests.conftest import SESSION_TIMEOUT_MS
from tests.test_route_workers import _env, _expected_tfl, _load, _scenario

PLANR = str(Path(sys.executable).parent / "planr")


def _two_of_each_kind() -> tuple[RouterStats, RouterStats]:
    """Two statistics with a value in every field: counters {x: 1, y: 2} and {y: 3, z: 4},
    numbers 2 and 5."""
    a, b = RouterStats(), RouterStats()
    for f in fields(RouterStats):
        if isinstance(getattr(a, f.name), Counter):
            setattr(a, f.name, Counter({"x": 1, "y": 2}))
            setattr(b, f.name, Counter({"y": 3, "z": 4}))
        else:
            setattr(a, f.name, 2)
            setattr(b, f.name, 5)
    return a, b


def test_sum_adds_every_field_counters_key_by_key_and_leaves_the_parts_alone():
    a, b = _two_of_each_kind()
    total = sum_stats([a, b])
    for f in fields(RouterStats):
        got = getattr(total, f.name)
        if isinstance(got, Counter):
            assert got == Counter({"x": 1, "y": 5, "z": 4}), f.name
            assert getattr(a, f.name) == Counter({"x": 1, "y": 2}), f.name  # not mutated
        else:
            assert got == 7, f.name
    assert sum_stats([]) == RouterStats()


def test_sum_of_two_routers_gives_the_counts_of_one_that_routed_both_shares():
    one = RouterStats(signals=2, deliveries=Counter({"tfl:brussel": 2, "wg:ftf": 1}),
                      dead_letters=Counter({"bad_header": 1}))
    two = RouterStats(signals=3, deliveries=Counter({"tfl:brussel": 1, "ftf-db": 3}),
                      dead_letters=Counter({"unknown_schema": 1}))
    total = sum_stats([one, two])
    assert total.signals == 5
    assert total.deliveries == {"tfl:brussel": 3, "wg:ftf": 1, "ftf-db": 3}
    assert total.dead_letters == {"bad_header": 1, "unknown_schema": 1}
    both = WorkerRun(status=0, stats=[one, None, two])  # a worker that reported nothing
    assert both.total == total


def test_statistics_survive_the_json_line_a_worker_writes():
    a, _ = _two_of_each_kind()
    line = stats_to_json(a)
    assert "\n" not in line
    assert stats_from_json(line) == a


@pytest.mark.parametrize(("change", "named"), [
    ({"signals": "many"}, "field signals"),
    ({"deliveries": {"tfl:brussel": "x"}}, "field deliveries"),
    ({"unheard_of": 1}, "field unheard_of"),
])
def test_unreadable_statistics_are_refused_naming_the_field(change: dict[str, object],
                                                            named: str):
    valid = json.loads(stats_to_json(RouterStats(signals=1)))
    with pytest.raises(PlanrError, match=named):
        stats_from_json(json.dumps({**valid, **change}))
    missing = {k: v for k, v in valid.items() if k != "signals"}
    with pytest.raises(PlanrError, match="field signals is missing"):
        stats_from_json(json.dumps(missing))
    with pytest.raises(PlanrError, match="not a JSON line"):
        stats_from_json("routed: 1 signals")


@pytest.mark.kafka
def test_workers_until_idle_each_stop_and_the_parent_prints_their_sum(
    broker: EmbeddedBroker, conn: KafkaConnection, topics: Topics, metrics: Metrics,
    codec: Codec, keys: KeyRing, tmp_path: Path,
):
    signals = _scenario()
    asyncio.run(_load(conn, topics, codec, metrics, keys, signals))
    result = subprocess.run(
        [PLANR, "route", "--workers", "2", "--until-idle", "2", "--json"],
        env=_env(broker, topics, tmp_path, keys), text=True, capture_output=True, timeout=180,
        check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    per_worker = [int(n) for n in re.findall(r"routed: (\d+) signals", result.stderr)]
    assert len(per_worker) == 2, result.stderr[-2000:]  # each stopped once idle, and reported
    assert re.search(rf"routed by 2 workers together: {len(signals)} signals", result.stderr)
    total = json.loads(result.stdout.strip().splitlines()[-1])
    assert total["signals"] == len(signals) == sum(per_worker)
    for arrondissement, want in _expected_tfl(signals).items():
        assert total["deliveries"].get(f"tfl:{arrondissement}", 0) == len(want), arrondissement


@pytest.mark.kafka
def test_run_demo_routes_with_two_worker_processes_whose_shares_add_up(tmp_path: Path):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PLANR_")}
    e.update({"PLANR_DEMO_SIGNALS": "300", "PLANR_DATA_DIR": str(tmp_path / "data"),
              "PLANR_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS)})
    result = subprocess.run([PLANR, "run", "--demo"], env=e, text=True, capture_output=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert re.search(r"signals routed\s+300\b", out)
    assert re.search(r"router workers\s+2\b", out)
    shares = [int(n) for n in re.findall(r"signals routed by worker \d+\s+(\d+)", out)]
    pids = re.search(r"router: 2 workers in group \S+ \(pids (\d+) (\d+)\)", result.stderr)
    assert pids is not None, result.stderr[-2000:]
    assert pids.group(1) != pids.group(2)  # two processes
    reported = [int(n) for n in re.findall(r"routed: (\d+) signals", result.stderr)]
    assert len(shares) == 2
    assert sum(shares) == 300  # the two shares make the total
    assert sorted(shares) == sorted(reported)  # each as its worker process reported it
