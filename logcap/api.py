"""The supervisor's HTTP API (``api.address``).

GET (and HEAD: the same headers, no body)::

    /metrics     Prometheus text (metrics/export.py)
    /health      200 while the supervisor runs, with its uptime
    /ready       200 when every child runs and no sink's circuit is open, else 503
    /config      the effective config as JSON, secrets replaced by "<redacted>"
    /positions   the checkpoint (data_dir/checkpoints.json) per source
    /dlq         the dead letter queue summed per sink and reason (read-only)
    /stats       per component: role, kind, process, counters; rings; checkpoint lag
    /tap         a live view of entries (logcap/tap.py); with an ``api.token``, only with it

POST needs ``Authorization: Bearer <api.token>`` (401 without it or with a wrong one,
403 when no ``api.token`` is configured: a browser on this host must not be able to make
the agent act), compared in constant time::

    /dlq/replay  runs ``logcap dlq replay`` for this config (``?sink=``, ``?reason=``):
                 200 with its summary, 500 with its warnings, 409 while one runs
    /config/reload  reads the config file again and applies it (logcap/reload.py): 200
                 with what changed, 422 with every problem (the running config stays),
                 503 while the agent stops, 504 if it took longer than RELOAD_TIMEOUT

Every answer except /metrics is JSON; errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from logcap.api_config import config_view
from logcap.api_views import STATS, dlq_summary, positions
from logcap.errors import ConfigError
from logcap.metrics.export import PipelineCollector

if TYPE_CHECKING:
    from logcap.supervisor import Supervisor

log = logging.getLogger(__name__)
REPLAY_TIMEOUT = 600.0  # seconds a POST /dlq/replay may take
RELOAD_TIMEOUT = 300.0  # seconds a POST /config/reload waits for the reload's outcome
REPLAY_REASONS = ("permanent", "exhausted", "overflow")
MAX_POST_BODY = 64 * 1024  # no POST takes a body yet: read at most this much, then close


# -- the server ------------------------------------------------------------------------
class ApiServer(ThreadingHTTPServer):
    """The server plus the state it reports on."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], supervisor: Supervisor) -> None:
        super().__init__(address, _Handler)
        self.supervisor = supervisor
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(supervisor))
        self.replaying = threading.Lock()  # one POST /dlq/replay at a time


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    _head_only = False  # answering HEAD: headers as for GET, no body

    def do_HEAD(self) -> None:
        """What GET would answer, without the body (load balancers and probes use it)."""
        self._head_only = True
        self.do_GET()

    def do_GET(self) -> None:
        sup = self.server.supervisor
        path, _, query = self.path.partition("?")
        if path == "/metrics":
            self._reply(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path == "/health":
            body = {"status": "ok", "uptime_seconds": round(time.monotonic() - sup.started, 3)}
            self._json(200, body)
        elif path == "/ready":
            self._ready(sup)
        elif path == "/config":
            self._json(*config_view(sup))  # the running config: a reload may change it
        elif path == "/positions":
            self._json(200, positions(sup))
        elif path == "/dlq":
            self._json(200, dlq_summary(sup))
        elif path == "/stats":
            self._json(200, {name: view(sup) for name, view in STATS.items()})
        elif path == "/tap":
            # the entries themselves: with an api.token, only for whoever has it
            if sup.config.api.token is not None and not self._authorised("GET /tap"):
                return
            try:
                from logcap import tap
            except ImportError as exc:
                self._json(501, {"error": f"/tap is not available in this build ({exc})"})
                return
            tap.serve(self, sup, urllib.parse.parse_qs(query))
        else:
            self._json(404, {"error": f"no such path {path}"})

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        self._discard_body()
        if not self._authorised():
            return
        if path == "/dlq/replay":
            self._replay(urllib.parse.parse_qs(self.path.partition("?")[2]))
        elif path == "/config/reload":
            self._config_reload()
        else:
            self._json(404, {"error": f"nothing to POST to at {path}"})

    def _ready(self, sup: Supervisor) -> None:
        now = time.monotonic()
        children: dict[str, dict[str, object]] = {
            c.name: {
                "kind": c.kind,
                "running": c.running,
                "restarts": c.restarts,
                "crash_loop": c.crash_loop(now),
            }
            for c in sup.children
        }
        circuits = sup.circuits()
        for sink, state in circuits.items():
            children[sink]["circuit"] = state
        # an open circuit: this agent delivers nothing to that destination now
        ready = sup.ready() and "open" not in circuits.values()
        self._json(200 if ready else 503, {"ready": ready, "components": children})

    def _authorised(self, what: str = "POST") -> bool:
        """The request carries ``api.token``; else answered 401 (403: none configured)."""
        token = self.server.supervisor.config.api.token
        if token is None:
            self._json(403, {"error": f"{what} is refused: no api.token is configured"})
            return False
        given = self.headers.get("Authorization", "").encode("latin-1", "replace")
        if hmac.compare_digest(given, f"Bearer {token}".encode()):
            return True
        self._json(
            401,
            {"error": f"{what} needs 'Authorization: Bearer <api.token>'"},
            {"WWW-Authenticate": 'Bearer realm="logcap"'},
        )
        return False

    def _config_reload(self) -> None:
        sup = self.server.supervisor
        outcome = sup.request_reload("POST /config/reload", timeout=RELOAD_TIMEOUT)
        if outcome is None or (not outcome.applied and sup.stop_requested):
            if sup.stop_requested:
                self._json(503, {"error": "the agent is stopping"})
            else:
                self._json(504, {"error": f"the reload took longer than {RELOAD_TIMEOUT:.0f}s"})
            return
        body = {
            "applied": outcome.applied,
            "summary": outcome.summary,
            "problems": outcome.problems,
            "seconds": round(outcome.seconds, 3),
            "generation": sup.plan.generation,
        }
        self._json(200 if outcome.applied else 422, body)

    def _replay(self, params: dict[str, list[str]]) -> None:
        """Replay the DLQ (one replay at a time): 200 with the CLI's summary when every
        record was delivered, 500 with it and its warnings otherwise."""
        try:
            command = replay_command(self.server.supervisor, params)
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        if not self.server.replaying.acquire(blocking=False):
            self._json(409, {"error": "a replay is already running"})
            return
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=REPLAY_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            self._json(504, {"error": f"the replay took longer than {REPLAY_TIMEOUT:.0f}s"})
            return
        finally:
            self.server.replaying.release()
        answer = {
            "exit_code": done.returncode,
            "summary": done.stdout.strip(),
            "warnings": [line for line in done.stderr.splitlines() if line.strip()],
        }
        self._json(200 if done.returncode == 0 else 500, answer)

    def _discard_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        self.rfile.read(min(max(length, 0), MAX_POST_BODY))
        self.close_connection = True  # whatever was not read must not pass for a request

    def _json(self, status: int, body: object, headers: Mapping[str, str] | None = None) -> None:
        self._reply(status, "application/json", json.dumps(body).encode(), headers)

    def _reply(
        self,
        status: int,
        content_type: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not self._head_only:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would flood the log; stay quiet."""


def replay_command(sup: Supervisor, params: dict[str, list[str]]) -> list[str]:
    """``logcap dlq replay`` for this agent's config, with the ``sink`` / ``reason`` of
    the query; ValueError naming a parameter the replay cannot take.

    The replay runs as its own process, as the CLI does: sink clients (librdkafka
    threads, TLS connections) and a long loop of deliveries stay out of the supervisor,
    which must keep restarting children and answering probes. Running beside the agent
    is what the CLI is built for (the file sink locks its files; marks are per record)."""
    command = [sys.executable, "-m", "logcap", "dlq", "replay"]
    if not sup.origin.startswith("<"):  # "<embedded>": the CLI's default config too
        command += ["--config", sup.origin]
    for name, values in params.items():
        if name not in ("sink", "reason") or len(values) != 1:
            raise ValueError(f"replay takes one 'sink' and one 'reason' at most, not {name!r}")
    sink, reason = params.get("sink", [None])[0], params.get("reason", [None])[0]
    if sink is not None:
        if sink not in sup.plan.sinks:
            raise ValueError(f"no sink named {sink!r} (sinks: {', '.join(sup.plan.sinks)})")
        command += ["--sink", sink]
    if reason is not None:
        if reason not in REPLAY_REASONS:
            raise ValueError(f"reason {reason!r} is not one of {', '.join(REPLAY_REASONS)}")
        command += ["--reason", reason]
    return command


def start_api(supervisor: Supervisor) -> ApiServer:
    """Bind ``api.address`` and serve from a daemon thread; ConfigError (one line) if it
    cannot be bound (``logcap run`` checks this before starting, but the port may have
    been taken since)."""
    address = supervisor.config.api.address
    host, port = address.rsplit(":", 1)
    try:
        server = ApiServer((host, int(port)), supervisor)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [f"cannot listen on {address} for the API (api.address): {reason}"]
        ) from exc
    threading.Thread(target=server.serve_forever, name="api", daemon=True).start()
    return server
