"""The benchmark suite runs: ``python -m benchmarks --quick routers`` (500 signals, one
round, on its own embedded broker) writes a JSON with every implementation at a positive
throughput, and the raw fan-out floor replays exactly as many output records as the planr
router wrote. Figures themselves are not checked (they are not tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.kafka  # starts an embedded broker


@pytest.mark.timeout(900)
def test_quick_suite_measures_every_implementation_with_the_planr_outputs(tmp_path: Path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out), "routers"],
        cwd=ROOT, capture_output=True, text=True, timeout=840, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text(encoding="utf-8"))
    expected = {"floor", "naive", "planr1", "planr2"}
    if "quix_unavailable" not in data:
        expected.add("quix")
    assert set(data["routers"]) == expected
    assert all(s["median"] > 0 for s in data["routers"].values())
    runs = {r["name"]: r for r in data["router_runs"]}
    assert runs["planr1"]["outputs"] > data["conditions"]["signals"]  # fan-out happened
    assert runs["floor"]["outputs"] == runs["planr1"]["outputs"] == runs["planr2"]["outputs"]
    assert data["latency"]["signals"] > 0
    assert data["latency_curve"] == [data["latency"]]  # --quick: the target rate only
