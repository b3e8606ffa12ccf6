"""A real Prometheus scraping a real agent answers every query of the cockpit, and the
circuit alert fires when a sink's destination fails and clears when it recovers.

The agent reads a file being appended to (through a pipeline) into a file sink, an HTTP
sink whose collector the test controls, and a blackhole. Prometheus scrapes it every
second as job ``logcap`` and evaluates alerts.yml with every ``for:`` cut to 2 s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._prometheus import (
    PROMETHEUS,
    Appender,
    Collector,
    Prometheus,
    alert_rules,
    cockpit_agent_body,
    dashboard_targets,
    running_prometheus,
    selectors,
    shortened_rules,
    substitute,
)
from tests._waiting import wait_for
from tests.conftest import Agent, free_port, write_config

WAIT = 90  # seconds, for anything that depends on scrapes and rule evaluations
SINK = "collector"  # the http sink's name in cockpit_agent_body


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


@pytest.fixture
def prometheus(
    tmp_path: Path, start_agent: Callable[..., Agent], collector: Collector
) -> Iterator[Prometheus]:
    """Prometheus scraping an agent that is reading lines being appended, target up."""
    assert PROMETHEUS.exists(), f"{PROMETHEUS} missing: run bash scripts/setup.sh --test"
    logs = tmp_path / "logs"
    logs.mkdir()
    address = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path, cockpit_agent_body(logs, collector.url), address)
    (tmp_path / "prometheus").mkdir()
    rules = shortened_rules(tmp_path / "prometheus")
    with Appender(logs / "app.log"):
        agent = start_agent(config, address)
        agent.wait_ready(60)
        with running_prometheus(tmp_path / "prometheus", address, rules, free_port()) as prom:
            prom.wait_target_up(WAIT)
            yield prom
        agent.stop()


def circuit_alert(prometheus: Prometheus) -> str | None:
    """State (pending, firing) of LogcapSinkCircuitOpen for the http sink, or None."""
    for alert in prometheus.alerts():
        labels = alert["labels"]
        if labels["alertname"] == "LogcapSinkCircuitOpen" and labels.get("component") == SINK:
            return str(alert["state"])
    return None


def test_every_dashboard_query_and_alert_selector_has_data_and_the_circuit_alert_works(
    prometheus: Prometheus, collector: Collector
) -> None:
    queries = {f"{title}: {expr}": substitute(expr) for title, expr in dashboard_targets()}
    empty = set(queries)

    def all_answered() -> bool:
        empty.difference_update({q for q in empty if prometheus.query(queries[q])})
        return not empty

    try:
        wait_for(all_answered, WAIT, "every dashboard query to return series")
    except pytest.fail.Exception:
        pytest.fail(f"dashboard queries without data: {sorted(empty)}")

    unselected = [
        f"{rule['alert']}: {selector}"
        for rule in alert_rules()
        for _, selector in selectors(rule["expr"])
        if not prometheus.series(selector)
    ]
    assert not unselected, f"alert selectors matching no series: {unselected}"

    assert circuit_alert(prometheus) is None
    collector.status = 503
    wait_for(lambda: circuit_alert(prometheus) == "firing", WAIT, "LogcapSinkCircuitOpen firing")
    collector.status = 200
    wait_for(lambda: circuit_alert(prometheus) is None, WAIT, "LogcapSinkCircuitOpen to clear")
