"""The monitoring files (monitoring/): alert rules that Prometheus accepts and that pass their
unit tests on synthetic series, a scrape configuration, and a Grafana dashboard whose every
query names metrics the code exports.

promtool comes with Debian's ``prometheus`` package; the tests that need it are skipped
without it (a developer's machine), and CI installs it and refuses such skips (.ci/run)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from consumers.metrics import StoreMetrics
from planr.telemetry import Metrics

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "dashboard.json"
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

#: Series Prometheus makes itself for every target (not exported by the code).
PROMETHEUS_SERIES = {"up"}

# ---- which metric names a PromQL expression reads ------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{[^}]*\}")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: its identifiers that are not functions (a name
    followed by ``(``), keywords, label names or durations."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("", text)
    text = _BRACKETS.sub("", text)
    text = _MATCHERS.sub("{}", text)
    text = _LABEL_LIST.sub("", text)
    return {m for m in _IDENTIFIER.findall(text) if m not in _KEYWORDS}


def test_metric_names_finds_selectors_and_skips_functions_labels_and_variables():
    assert metric_names(
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{job=~"x.+"}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert metric_names("sum by (group, topic) (lag) > 0 and sum(deriv(lag[10m])) > 0") == {
        "lag"}
    assert metric_names('x unless on(reason) y offset 10m or absent(up{job="r"})') == {
        "x", "y", "up"}
    assert metric_names("time() - process_start_time_seconds") == {"process_start_time_seconds"}
    assert metric_names('a / ignoring(le) group_left b == bool 1') == {"a", "b"}


# ---- what the code exports ------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def bus_metric_families() -> dict[str, str]:
    """Name -> type of every metric of Metrics and StoreMetrics."""
    out: dict[str, str] = {}
    for make in (Metrics, StoreMetrics):
        registry = CollectorRegistry()
        make(registry)
        out |= {family.name: family.type for family in registry.collect()}
    return out


def exported_names() -> set[str]:
    """Every series name a planr-bus process serves on /metrics (the bus's and the store's
    metrics with their suffixes, prometheus_client's process, platform and GC collectors),
    plus the series Prometheus adds for each target."""
    names = {f"{name}{suffix}" for name, kind in bus_metric_families().items()
             for suffix in _SUFFIXES[kind]}
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    for family in registry.collect():
        names |= {sample.name for sample in family.samples}
    return names | PROMETHEUS_SERIES


def test_exported_names_include_suffixes_and_the_process_collector():
    names = exported_names()
    assert {"planr_dead_letters_total", "planr_routing_latency_seconds_bucket",
            "planr_routing_latency_seconds_count", "planr_ftf_overdue_reviews",
            "process_start_time_seconds"} <= names
    assert "planr_dead_letters" not in names  # a counter is served with _total


# ---- the files -------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
            if p["type"] != "row"]


def dashboard_queries() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard_panels()
            for target in panel["targets"]]


def test_every_dashboard_query_names_only_metrics_the_code_exports():
    exported = exported_names()
    queries = dashboard_queries()
    assert queries
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        assert names <= exported, f"panel {title!r}: {sorted(names - exported)} not exported"


def test_every_alert_names_only_metrics_the_code_exports():
    exported = exported_names()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']}: {sorted(names - exported)} not exported"


def test_the_dashboard_shows_every_metric_of_the_bus():
    shown = {name for _, expr in dashboard_queries() for name in metric_names(expr)}
    for name, kind in bus_metric_families().items():
        served = {f"{name}{suffix}" for suffix in _SUFFIXES[kind]}
        assert served & shown, f"{name} is on no dashboard panel"


def test_the_dashboard_has_the_views_the_monitoring_team_asked_for():
    queries = [(title.lower(), expr) for title, expr in dashboard_queries()]

    def panel(words: str) -> str:
        found = [expr for title, expr in queries if words in title]
        assert found, f"no panel titled with {words!r}"
        return " ".join(found)

    assert "by (agency)" in panel("published, per agency")
    assert "by (recipient_class)" in panel("deliveries, per recipient class")
    assert "planr_routing_denials_total" in panel("denials, per rule")
    assert "by (reason)" in panel("dead letters, per reason")
    assert "planr_consumer_lag_records" in panel("consumer lag")
    latency = panel("latency percentiles")
    assert {"0.5", "0.95", "0.99"} <= set(re.findall(r"histogram_quantile\(([\d.]+)", latency))
    assert "planr_ftf_overdue_reviews" in panel("overdue reviews")
    assert "planr_jib_proposals_expiring" in panel("jib proposals")


def test_dashboard_panels_use_the_provisioned_data_source():
    provisioned = {d["uid"] for d in load_yaml(DATASOURCES)["datasources"]}
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] in provisioned, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in provisioned, panel["title"]


def test_the_alerts_the_issue_asks_for_exist():
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    wanted = {
        "PlanrConsumerLagGrowing": "planr_consumer_lag_records",
        "PlanrDeadLettersRising": "planr_dead_letters_total",
        "PlanrUnauthenticatedRecords": 'reason="unauthenticated"',
        "PlanrConsumerDown": "up{",
        "PlanrFtfReviewsOverdue": "planr_ftf_overdue_reviews",
        "PlanrJibProposalsExpiring": "planr_jib_proposals_expiring",
    }
    for alert, needle in wanted.items():
        assert needle in exprs.get(alert, ""), alert


def test_every_alert_has_a_unit_test_in_which_it_fires():
    fired = {case["alertname"]
             for test in load_yaml(ALERT_TESTS)["tests"]
             for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert {rule["alert"] for rule in alert_rules()} <= fired


def test_scrape_jobs_cover_every_job_the_alerts_expect():
    jobs = {job["job_name"] for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    expected = {m for rule in alert_rules()
                for m in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert expected
    assert expected <= jobs


# ---- promtool ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (Debian package prometheus); CI installs it")
    return found


def run_promtool(promtool: str, *args: str, cwd: Path = MONITORING) -> str:
    done = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_accepts_the_alert_rules(promtool):
    output = run_promtool(promtool, "check", "rules", ALERTS.name)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_the_alert_rules_pass_their_unit_tests(promtool):
    assert "SUCCESS" in run_promtool(promtool, "test", "rules", ALERT_TESTS.name)


def test_promtool_rejects_a_broken_unit_test(promtool, tmp_path):
    """The unit tests can fail: the same file with one expectation changed does."""
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    text = ALERT_TESTS.read_text(encoding="utf-8").replace("instance: \"10.0.0.5:9400\"",
                                                           "instance: \"10.0.0.6:9400\"")
    (tmp_path / ALERT_TESTS.name).write_text(text, encoding="utf-8")
    done = subprocess.run([promtool, "test", "rules", ALERT_TESTS.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "PlanrConsumerDown" in done.stdout + done.stderr


def test_promtool_accepts_the_scrape_configuration(promtool):
    run_promtool(promtool, "check", "config", PROMETHEUS_CONFIG.name)


def test_every_dashboard_query_is_valid_promql(promtool, tmp_path):
    """Each query, with Grafana's variables given values, as a recording rule."""
    rules = [{"record": f"dashboard:query_{i}",
              "expr": expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")}
             for i, (_, expr) in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}),
                    encoding="utf-8")
    output = run_promtool(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in output
