"""A real Prometheus scraping a real agent answers every query of the cockpit with
numbers, the circuit alert fires when a sink's destination fails and clears when it
recovers, the events ledger stays balanced through that failure, and the lost-entries
alert fires when the failing sink's spooled entries are destroyed.

The agent reads a file being appended to (through a pipeline) into a file sink, an HTTP
sink whose collector the test controls, and a blackhole. Prometheus scrapes it every
second as job ``logcap`` and evaluates alerts.yml with every ``for:`` cut to 2 s.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
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
def agent(
    tmp_path: Path, start_agent: Callable[..., Agent], collector: Collector
) -> Iterator[Agent]:
    """The agent, ready, reading lines being appended (its data_dir is tmp_path/data)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    address = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path, cockpit_agent_body(logs, collector.url), address)
    with Appender(logs / "app.log"):
        running = start_agent(config, address)
        running.wait_ready(60)
        yield running
        running.stop()


@pytest.fixture
def prometheus(tmp_path: Path, agent: Agent) -> Iterator[Prometheus]:
    """Prometheus scraping the agent, target up."""
    assert PROMETHEUS.exists(), f"{PROMETHEUS} missing: run bash scripts/setup.sh --test"
    (tmp_path / "prometheus").mkdir()
    rules = shortened_rules(tmp_path / "prometheus")
    with running_prometheus(tmp_path / "prometheus", agent.address, rules, free_port()) as prom:
        prom.wait_target_up(WAIT)
        yield prom


def alert_state(prometheus: Prometheus, name: str) -> str | None:
    """State (pending, firing) of alert ``name`` for the http sink, or None."""
    for alert in prometheus.alerts():
        labels = alert["labels"]
        if labels["alertname"] == name and labels.get("component") == SINK:
            return str(alert["state"])
    return None


def numbers(result: list[dict]) -> list[float]:
    """The finite values of an instant vector: a quantile over no observations, or a
    ratio of two zero rates, is NaN, which a panel draws as nothing."""
    return [v for v in (float(s["value"][1]) for s in result) if math.isfinite(v)]


def test_every_dashboard_query_and_alert_selector_has_data_and_the_alerts_work(
    prometheus: Prometheus, agent: Agent, collector: Collector, tmp_path: Path
) -> None:
    queries = {f"{title}: {expr}": substitute(expr) for title, expr in dashboard_targets()}
    empty = set(queries)

    def all_answered() -> bool:
        empty.difference_update({q for q in empty if numbers(prometheus.query(queries[q]))})
        return not empty

    try:
        wait_for(all_answered, WAIT, "every dashboard query to return numbers")
    except pytest.fail.Exception:
        pytest.fail(f"dashboard queries without numbers: {sorted(empty)}")

    unselected = [
        f"{rule['alert']}: {selector}"
        for rule in alert_rules()
        for _, selector in selectors(rule["expr"])
        if not prometheus.series(selector)
    ]
    assert not unselected, f"alert selectors matching no series: {unselected}"

    assert alert_state(prometheus, "LogcapSinkCircuitOpen") is None
    collector.status = 503
    wait_for(
        lambda: alert_state(prometheus, "LogcapSinkCircuitOpen") == "firing",
        WAIT,
        "LogcapSinkCircuitOpen firing",
    )
    # the failed batches moved ring -> retry process and every scrape so far balanced
    wait_for(
        lambda: agent.metric("logcap_ledger_in_flight_events", component=SINK, place="retry") > 0,
        WAIT,
        "the retry process to hold the failing sink's entries",
    )
    unaccounted = prometheus.query('max_over_time(logcap_events_unaccounted{job="logcap"}[10m])')
    assert len(unaccounted) == 3 and numbers(unaccounted) == [0, 0, 0], unaccounted

    # a disk lost under the spool: the entries it held are nowhere, and that pages
    os.kill(agent.children()["retry:retry"], signal.SIGKILL)
    shutil.rmtree(tmp_path / "data" / "spool", ignore_errors=True)
    wait_for(
        lambda: alert_state(prometheus, "LogcapEventsUnaccounted") == "firing",
        WAIT,
        "LogcapEventsUnaccounted firing",
    )

    collector.status = 200
    wait_for(
        lambda: alert_state(prometheus, "LogcapSinkCircuitOpen") is None,
        WAIT,
        "LogcapSinkCircuitOpen to clear",
    )
