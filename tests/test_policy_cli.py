"""``planr policy check|explain|diff``: the tooling for the people who write policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner, Result

from cli import app
from planr.domain import Agency, Classification
from routing.engine import Facts
from routing.policy import Policy
from routing.setup import RoutingSetup
from scenarios.builders import SECRET_SUMMARY, signal_json
from scenarios.signals import generate
from schemas.models import SignalIn

PLANR = str(Path(sys.executable).parent / "planr")
TIGHTER_WG = ("when: {classification_above: confidentiel}",
              "when: {classification_above: restreint}")


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """The CLI configures structlog for its process; give the next tests theirs back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    clean = {k: None for k in os.environ if k.startswith("PLANR_")}
    return CliRunner().invoke(app, list(args), env={**clean, **(env or {})})


@pytest.fixture
def event(tmp_path: Path) -> Path:
    path = tmp_path / "signal.json"
    subject = {"id": "O-7", "kind": "organisation", "statuses": ["FTF"]}
    data = signal_json(agency="vsse", local_sharing=True, subject=subject)
    path.write_text(json.dumps(data), "utf-8")
    return path


@pytest.fixture
def tighter(tmp_path: Path, default_policy_path: Path) -> Path:
    """The default policy with the working-group ceiling lowered to restreint."""
    text = default_policy_path.read_text("utf-8")
    assert TIGHTER_WG[0] in text
    path = tmp_path / "tighter.yaml"
    path.write_text(text.replace(*TIGHTER_WG), "utf-8")
    return path


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    rows = []
    for agency, s in generate(400, seed=11):
        row = s.model_dump(mode="json", exclude_none=True)
        row.update(agency=agency.value, summary=SECRET_SUMMARY)
        rows.append(row)
    path = tmp_path / "signals.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path, rows


def test_check_prints_rule_count_and_version_of_the_shipped_policy(default_policy_path: Path):
    r = run("policy", "check", str(default_policy_path))
    assert r.exit_code == 0, r.stderr
    policy = Policy.load(default_policy_path)
    assert f"rules: {len(policy.rules)} " in r.stdout
    assert f"version: {policy.version}" in r.stdout


def test_check_reads_the_policy_from_planr_policy(default_policy_path: Path):
    r = run("policy", "check", env={"PLANR_POLICY": str(default_policy_path)})
    assert r.exit_code == 0, r.stderr
    assert f"ok: {default_policy_path}" in r.stdout


def test_check_of_an_invalid_policy_exits_2_naming_the_line(
    tmp_path: Path, default_policy_path: Path
):
    text = default_policy_path.read_text("utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("tlp: [red]", "tlp: [crimson]"), "utf-8")
    line = text[: text.index("tlp: [red]")].count("\n") + 1
    r = run("policy", "check", str(bad))
    assert r.exit_code == 2
    assert f"{bad}: line {line}: rules." in r.stderr
    assert "version" not in r.stdout


def test_installed_planr_runs_policy_check(default_policy_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANR_")}
    done = subprocess.run([PLANR, "policy", "check", str(default_policy_path)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "version: sha256:" in done.stdout


def test_explain_json_lists_every_candidate_with_outcome_rules_and_view(
    event: Path, default_policy_path: Path, routing_setup: RoutingSetup
):
    r = run("policy", "explain", str(default_policy_path), "--event", str(event), "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["policy"]["version"] == routing_setup.policy.version
    data = json.loads(event.read_text("utf-8"))
    assert out["event_id"] == data["event_id"]
    by = {d["recipient"]: d for d in out["decisions"]}
    facts = Facts.of(SignalIn.model_validate(data).to_avro(Agency.VSSE))
    assert list(by) == [str(r) for r in routing_setup.engine.candidates(facts)]
    assert (by["tfl:brussel"]["outcome"], by["tfl:brussel"]["rule"]) == ("allow", "tfl-territory")
    assert by["csilr:21004"]["outcome"] == "allow"
    assert "summary" not in by["csilr:21004"]["fields"]
    assert (by["ftf-db"]["outcome"], by["ftf-db"]["rules"]) == ("deny", ["default-deny"])
    assert by["ntf"]["fields"] == "aggregate"
    assert all(d["description"] for d in out["decisions"])


def test_explain_table_names_deciding_forbids_and_never_prints_the_summary(
    tmp_path: Path, default_policy_path: Path
):
    path = tmp_path / "classified.json"
    path.write_text(json.dumps(signal_json(classification="restreint", local_sharing=True)))
    r = run("policy", "explain", str(default_policy_path), "--event", str(path),
            "--agency", "ocam")
    assert r.exit_code == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()
            if line.startswith(("tfl:", "csilr:", "ftf-db", "ntf"))}
    assert rows["ftf-db"][1:] == ["deny", "-", "ceiling-ftf-db"]
    assert rows["csilr:21004"][:2] == ["csilr:21004", "deny"]
    assert "ceiling-csilr" in rows["csilr:21004"][-1]
    assert rows["tfl:brussel"][1:] == ["allow", "tfl", "tfl-territory"]
    assert "ceiling-ftf-db: The common database" in r.stdout
    assert SECRET_SUMMARY not in r.stdout + r.stderr


def test_explain_takes_the_agency_from_planr_agency(tmp_path: Path, default_policy_path: Path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(signal_json()))
    r = run("policy", "explain", str(default_policy_path), "--event", str(path), "--json",
            env={"PLANR_AGENCY": "polfed"})
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["agency"] == "polfed"


@pytest.mark.parametrize(("data", "says"), [
    (signal_json(), "agency: missing"),
    (signal_json(agency="vsse", classification="top"), "classification:"),
    (signal_json(agency="vsse", location={"municipality": "99999"}), "location:"),
])
def test_explain_rejects_an_invalid_signal_naming_the_field(
    tmp_path: Path, default_policy_path: Path, data: dict[str, Any], says: str
):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    r = run("policy", "explain", str(default_policy_path), "--event", str(path))
    assert r.exit_code == 2
    assert says in r.stderr
    assert SECRET_SUMMARY not in r.stderr


def test_diff_json_reports_exactly_the_deliveries_a_tighter_policy_removes(
    default_policy_path: Path, tighter: Path, history: tuple[Path, list[dict[str, Any]]],
    routing_setup: RoutingSetup,
):
    path, rows = history
    r = run("policy", "diff", str(default_policy_path), str(tighter), "--events", str(path),
            "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["signals"] == len(rows)
    assert out["rules"]["changed"] == ["ceiling-wg"]
    # Independently: the wg deliveries of confidentiel signals are the ones that go.
    expected = set()
    for row in rows:
        if row["classification"] != Classification.CONFIDENTIEL.value:
            continue
        facts = Facts.of(SignalIn.model_validate(row).to_avro(Agency(row["agency"])))
        expected |= {(facts.event_id, str(d.recipient)) for d in routing_setup.engine.decide(facts)
                     if d.allowed and d.recipient.cls.value == "wg"}
    wg = out["classes"]["wg"]
    assert expected
    assert {(d["event_id"], d["recipient"]) for d in wg["removed_deliveries"]} == expected
    assert (wg["removed"], wg["added"], wg["old"] - wg["new"]) == (len(expected), 0,
                                                                  len(expected))
    for cls in ("tfl", "csilr", "ftf-db", "ntf"):
        c = out["classes"][cls]
        assert (c["added"], c["removed"], c["old"]) == (0, 0, c["new"])
    assert out["classes"]["tfl"]["old"] > 0


def test_diff_table_counts_per_class_and_verbose_lists_each_delivery(
    default_policy_path: Path, tighter: Path, history: tuple[Path, list[dict[str, Any]]],
):
    path, _ = history
    plain = run("policy", "diff", str(default_policy_path), str(tighter), "--events", str(path))
    assert plain.exit_code == 0, plain.stderr
    wg = next(line.split() for line in plain.stdout.splitlines() if line.startswith("wg "))
    removed = int(wg[4])
    assert removed > 0
    assert int(wg[1]) - int(wg[2]) == removed
    assert not [line for line in plain.stdout.splitlines() if line.startswith("- ")]
    verbose = run("policy", "diff", str(default_policy_path), str(tighter), "--events",
                  str(path), "--verbose")
    listed = [line for line in verbose.stdout.splitlines() if line.startswith("- wg ")]
    assert len(listed) == removed
    assert SECRET_SUMMARY not in verbose.stdout


def test_diff_of_a_policy_with_itself_changes_nothing(
    default_policy_path: Path, history: tuple[Path, list[dict[str, Any]]]
):
    path, _ = history
    r = run("policy", "diff", str(default_policy_path), str(default_policy_path), "--events",
            str(path), "--json")
    out = json.loads(r.stdout)
    assert out["old"]["version"] == out["new"]["version"]
    assert all(c["added"] == c["removed"] == 0 for c in out["classes"].values())
    assert sum(c["new"] for c in out["classes"].values()) > 0


def test_diff_reports_invalid_event_lines_by_number_and_field(
    tmp_path: Path, default_policy_path: Path, tighter: Path
):
    lines = [json.dumps(signal_json(agency="vsse")),
             json.dumps(signal_json(agency="vsse", tlp="purple")),
             "",
             json.dumps(signal_json()),
             "{not json"]
    path = tmp_path / "signals.jsonl"
    path.write_text("\n".join(lines) + "\n")
    r = run("policy", "diff", str(default_policy_path), str(tighter), "--events", str(path))
    assert r.exit_code == 2
    assert f"{path}: line 2: tlp:" in r.stderr
    assert f"{path}: line 4: agency: missing" in r.stderr
    assert f"{path}: line 5: " in r.stderr
    assert f"{path}: line 1:" not in r.stderr
    assert "3 invalid signal line(s)" in r.stderr
    assert SECRET_SUMMARY not in r.stderr
    assert r.stdout == ""
