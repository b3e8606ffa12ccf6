"""The files logcap ships for operators, by name: the configs, the systemd unit, the
supervisord program, the Grafana dashboard and the Prometheus alerts.

They are package data of ``logcap.configs`` (pyproject.toml) and are read through
:mod:`importlib.resources`, so ``logcap config example NAME`` prints them from an installed
wheel, with no source tree: an operator installs them from there (``> /etc/...``)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

PACKAGE = "logcap.configs"


@dataclass(frozen=True)
class Example:
    """One shipped file: its name on the command line, its path under ``configs/``, and
    what it is for (where it is installed)."""

    name: str
    path: str
    about: str


EXAMPLES = (
    Example("default", "default.yaml", "the embedded default config (logcap run without --config)"),
    Example("service", "service.yaml", "the service config: /etc/logcap/logcap.yaml"),
    Example("agent", "agent.yaml", "the agent tier: files and Docker -> Kafka (docs/SCALING.md)"),
    Example(
        "aggregator",
        "aggregator.yaml",
        "the aggregator tier: Kafka -> Loki and a file archive (docs/SCALING.md)",
    ),
    Example("systemd", "logcap.service", "the systemd unit: /etc/systemd/system/logcap.service"),
    Example(
        "supervisord",
        "supervisord/logcap.conf",
        "the supervisord program: /etc/supervisor/conf.d/logcap.conf",
    ),
    Example("grafana", "grafana/logcap-overview.json", "the Grafana dashboard (import it)"),
    Example("alerts", "prometheus/alerts.yml", "the Prometheus alerting rules (rule_files:)"),
    Example(
        "alerts-test",
        "prometheus/alerts_test.yml",
        "promtool's tests of the alerts (beside alerts.yml: promtool test rules)",
    ),
)
BY_NAME = {example.name: example for example in EXAMPLES}


def read(name: str) -> str:
    """The text of the shipped file called ``name`` (a key of :data:`BY_NAME`)."""
    entry = resources.files(PACKAGE)
    for part in BY_NAME[name].path.split("/"):  # a zip-safe walk, one folder at a time
        entry = entry.joinpath(part)
    return entry.read_text("utf-8")
