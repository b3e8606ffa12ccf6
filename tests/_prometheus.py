"""The cockpit's test kit: the dashboard's and the alerts' PromQL, a real Prometheus
server scraping an agent, the agent that exports every family, and the HTTP collector
its http sink delivers to (healthy or failing, as a test decides).

Shared by tests/test_cockpit_rules.py (names and rules) and
tests/test_prometheus_proof.py (every query answered by a Prometheus scraping the agent).
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests._waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "configs/grafana/logcap-overview.json"
ALERTS = ROOT / "configs/prometheus/alerts.yml"
ALERTS_TEST = ROOT / "configs/prometheus/alerts_test.yml"
OPERATIONS = ROOT / "docs/OPERATIONS.md"
PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")

# Grafana's variables as the proof evaluates them: every job and instance, and a rate
# window of several 1 s scrapes
SUBSTITUTIONS = {"$__rate_interval": "15s", "$job": ".*", "$instance": ".*"}

# a metric name with its optional {matchers}; not a label value (no quote or dot before)
_SELECTOR = re.compile(r'(?<![\w".:])(logcap_[a-z0-9_]+|up)\b(\{[^}]*\})?')


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def query_panels() -> list[dict]:
    """Every panel that queries (rows only lay the others out)."""
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of the dashboard."""
    return [
        (panel["title"], target["expr"]) for panel in query_panels() for target in panel["targets"]
    ]


def alert_rules() -> list[dict]:
    """The alerting rules of alerts.yml, over all its groups."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, selector as written) of each metric selector in ``expr``."""
    return [(m.group(1), m.group(0)) for m in _SELECTOR.finditer(expr)]


def substitute(expr: str) -> str:
    """``expr`` with the dashboard's variables replaced as Prometheus needs them."""
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def exported_names(exposition: str) -> set[str]:
    """Sample names of a /metrics page (counters with their ``_total``)."""
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


def cockpit_agent_body(logs: Path, collector_url: str) -> str:
    """An agent with every role (file source with a pipeline, dispatcher, file, http and
    blackhole sinks, retry), so every family the cockpit reads is exported."""
    return f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["{logs}/*.log"], read_from: beginning, pipelines: [parse]}}
pipelines:
  parse:
    steps:
      - {{type: json_parse, when: {{field: message, matches: '^\\{{'}}}}
      - {{type: drop, when: {{field: message, matches: '^DEBUG'}}}}
sinks:
  archive: {{type: file, path: "./out/{{source}}.ndjson"}}
  collector: {{type: http, url: "{collector_url}", timeout: 2s,
               circuit_breaker: {{failure_threshold: 2, open_duration: 2s}}}}
  void: {{type: blackhole}}
dispatcher: {{batch_max_events: 200, batch_timeout: 100ms}}
retry: {{initial_backoff: 500ms, max_backoff: 2s}}
"""


class Appender:
    """Appends a mix of lines (JSON, not JSON, DEBUG) to a log file in a thread, a few
    hundred a second, until stopped or ``max_lines`` are written."""

    def __init__(self, path: Path, max_lines: int = 20_000) -> None:
        self.path = path
        self.max_lines = max_lines
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with open(self.path, "a") as log:
            while self.written < self.max_lines and not self._stop.is_set():
                for i in range(self.written, self.written + 20):
                    log.write(
                        [f'{{"n": {i}, "msg": "hello"}}\n', f"{{broken {i}\n", f"DEBUG {i}\n"][
                            i % 3
                        ]
                    )
                log.flush()
                self.written += 20
                self._stop.wait(0.05)

    def __enter__(self) -> Appender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class Collector:
    """The http sink's destination: answers every POST with ``status`` (200 healthy,
    503 failing), which a test may change at any time."""

    def __init__(self) -> None:
        self.status = 200
        self.received = 0
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # the sink keeps its connection alive

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                collector.received += 1
                self.send_response(collector.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/ingest"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


def shortened_rules(directory: Path, wait: str = "2s") -> Path:
    """A copy of alerts.yml with every ``for:`` cut to ``wait``, so a test sees alerts
    fire within seconds."""
    text = re.sub(r"(?m)^(\s+for:)\s*\S+", rf"\1 {wait}", ALERTS.read_text())
    path = directory / "alerts.yml"
    path.write_text(text)
    return path


class Prometheus:
    """A real Prometheus scraping ``target`` every second as job ``logcap`` and
    evaluating ``rules`` every second; storage and logs under ``directory``."""

    def __init__(self, directory: Path, target: str, rules: Path, port: int) -> None:
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "logcap", "static_configs": [{"targets": [target]}]}],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.address = f"127.0.0.1:{port}"
        self.log = directory / "prometheus.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address={self.address}",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> object:
        """The ``data`` of a successful /api/v1 answer."""
        url = f"http://{self.address}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector of ``expr`` now."""
        data = self.api("query", query=expr)
        assert isinstance(data, dict) and data["resultType"] == "vector", (expr, data)
        return data["result"]

    def series(self, selector: str) -> list[dict]:
        """Series matching ``selector`` over the last 5 minutes."""
        data = self.api("series", **{"match[]": selector, "start": str(time.time() - 300)})
        assert isinstance(data, list)
        return data

    def alerts(self) -> list[dict]:
        """Active alerts (pending and firing) of the loaded rules."""
        data = self.api("alerts")
        assert isinstance(data, dict)
        return data["alerts"]

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=5) as r:
                    return r.status == 200
            except (OSError, urllib.error.URLError):
                return False

        wait_for(ready, timeout, "prometheus to be ready")

    def wait_target_up(self, timeout: float = 60) -> None:
        wait_for(lambda: bool(self.query('up{job="logcap"} == 1')), timeout, "the logcap target up")

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


@contextmanager
def running_prometheus(
    directory: Path, target: str, rules: Path, port: int
) -> Iterator[Prometheus]:
    """A ready Prometheus, stopped on leaving the block (even on failure)."""
    prometheus = Prometheus(directory, target, rules, port)
    try:
        prometheus.wait_ready()
        yield prometheus
    finally:
        prometheus.stop()
