"""The cockpit's files are well formed and speak the agent's language: the alert rules
pass promtool and their unit tests cover every alert both ways, the Grafana dashboard is
importable with its variables on every query, every metric either names is one a
running agent exports, and every runbook link lands on a section of docs/OPERATIONS.md.
The dashboard shows the events ledger and the delivery histograms, its quantiles are
taken per sink over bucket rates, and lost entries show red and page.

Whether Prometheus answers each query with data is tests/test_prometheus_proof.py.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests._prometheus import (
    ALERTS,
    ALERTS_TEST,
    OPERATIONS,
    PROMTOOL,
    Appender,
    Collector,
    alert_rules,
    cockpit_agent_body,
    dashboard,
    dashboard_targets,
    exported_names,
    query_panels,
    selectors,
)
from tests._waiting import wait_for
from tests.conftest import Agent, free_port, write_config

FILTERS = ('job=~"$job"', 'instance=~"$instance"')

# what a sink did with its entries, as the events ledger (metrics/ledger.py) and the
# histograms (metrics/histogram.py) tell it: the dashboard shows every one
DELIVERY_FAMILIES = {
    "logcap_ledger_published_events_total",
    "logcap_ledger_in_flight_events",
    "logcap_ledger_dead_lettered_events",
    "logcap_events_unaccounted",
    "logcap_delivery_latency_seconds_bucket",
    "logcap_sink_send_duration_seconds_bucket",
    "logcap_sink_batch_size_events_sum",
    "logcap_sink_batch_size_events_count",
    "logcap_batch_ring_consumer_lag_slots",
}

# histogram_quantile(q, sum by (labels) (rate(family_bucket{...}[window]))), matchers optional
_QUANTILE = re.compile(
    r"histogram_quantile\(\s*0\.\d+,\s*sum by \(([^)]*)\) \(rate\((logcap_\w+)_bucket[{\[]"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.exists(), f"{PROMTOOL} missing: run bash scripts/setup.sh --test"
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """Each alert is evaluated at least once expecting alerts and once expecting none."""
    cases: dict[str, set[bool]] = {}
    for group in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for rule in alert_rules():
        assert cases.get(rule["alert"]) == {True, False}, rule["alert"]


def test_every_alert_is_labelled_annotated_and_has_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"(?m)^#{1,6} (.+)$", OPERATIONS.read_text())
    }
    for rule in alert_rules():
        name, annotations = rule["alert"], rule["annotations"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        if "component" in rule["expr"] or "logcap_sink_" in rule["expr"]:
            assert "$labels.component" in annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/OPERATIONS.md" and anchor == name.lower(), name
        assert anchor in anchors, f"{name}: no section '{anchor}' in docs/OPERATIONS.md"


def test_dashboard_queries_use_the_datasource_and_the_job_and_instance_variables() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    panels = query_panels()
    assert panels and len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    for title, expr in dashboard_targets():
        for _, selector in selectors(expr):
            assert all(f in selector for f in FILTERS), f"{title}: {selector}"
        if "rate(" in expr or "increase(" in expr:
            assert "[$__rate_interval]" in expr, f"{title}: {expr}"


def test_selectors_are_found_and_label_values_are_not() -> None:
    """The check above is only as good as the selector scan; show what it finds."""
    expr = 'sum by (component) (rate(logcap_x_total{job=~"$job"}[5m])) / up{job=~".*logcap.*"}'
    assert selectors(expr) == [
        ("logcap_x_total", 'logcap_x_total{job=~"$job"}'),
        ("up", 'up{job=~".*logcap.*"}'),
    ]


def test_the_dashboard_shows_the_events_ledger_and_the_delivery_histograms() -> None:
    read = {name for _, expr in dashboard_targets() for name, _ in selectors(expr)}
    assert not DELIVERY_FAMILIES - read, f"not on the dashboard: {sorted(DELIVERY_FAMILIES - read)}"


def test_quantiles_are_taken_per_sink_over_the_rate_of_the_buckets() -> None:
    """A quantile summed over sinks (no ``component``) or over buckets (no ``le``) would
    be a number, and a wrong one; so would one taken of the buckets' totals (no rate)."""
    quantiles = [
        (title, expr)
        for title, expr in [
            *dashboard_targets(),
            *((rule["alert"], rule["expr"]) for rule in alert_rules()),
        ]
        if "histogram_quantile" in expr
    ]
    assert {name for _, expr in quantiles for name in _QUANTILE.findall(expr)}
    for title, expr in quantiles:
        match = _QUANTILE.search(expr)
        assert match and expr.count("histogram_quantile") == 1, f"{title}: {expr}"
        labels = {label.strip() for label in match.group(1).split(",")}
        assert {"le", "component", "instance"} <= labels, f"{title}: {expr}"


def test_entries_unaccounted_show_red_at_one_and_page() -> None:
    (panel,) = [
        panel
        for panel in query_panels()
        if any("logcap_events_unaccounted" in target["expr"] for target in panel["targets"])
    ]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [{"color": "green", "value": None}, {"color": "red", "value": 1}]
    (rule,) = [rule for rule in alert_rules() if "logcap_events_unaccounted" in rule["expr"]]
    assert rule["expr"] == "logcap_events_unaccounted > 0"
    assert rule["labels"]["severity"] == "critical"


@pytest.fixture
def exported(tmp_path: Path, start_agent: Callable[..., Agent]) -> set[str]:
    """Sample names a running agent with every role exports."""
    logs = tmp_path / "logs"
    logs.mkdir()
    address = f"127.0.0.1:{free_port()}"
    with Collector() as collector, Appender(logs / "app.log", max_lines=400):
        config = write_config(tmp_path, cockpit_agent_body(logs, collector.url), address)
        agent = start_agent(config, address)
        agent.wait_ready(60)
        wait_for(lambda: collector.received > 0, 60, "the http sink's first delivery")
        names = exported_names(agent.get("/metrics")[1].decode())
        agent.stop()
    return names


def test_every_metric_the_cockpit_reads_is_exported_by_the_agent(exported: set[str]) -> None:
    used = {
        f"{where}: {name}"
        for where, exprs in [
            ("dashboard", [expr for _, expr in dashboard_targets()]),
            ("alerts", [rule["expr"] for rule in alert_rules()]),
        ]
        for expr in exprs
        for name, _ in selectors(expr)
        if name != "up"  # Prometheus's own, per target
    }
    missing = sorted(u for u in used if u.split(": ")[1] not in exported)
    assert not missing, f"not exported by the agent: {missing}"
