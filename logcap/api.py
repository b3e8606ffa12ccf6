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

    /dlq/replay  501, naming ``logcap dlq replay``: see :func:`_replay`

Every answer except /metrics is JSON; errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import hmac
import json
import logging
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
        self.config_view = config_view(supervisor)


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
            self._json(*self.server.config_view)
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
            self._json(501, {"error": _replay(self.server.supervisor)})
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


def _replay(sup: Supervisor) -> str:
    """Why POST /dlq/replay is not done here, and what to run instead.

    ``logcap dlq replay`` builds each sink's client and writes to it directly. Inside the
    supervisor that would put librdkafka threads, TLS connections and a long blocking
    loop into the process that must keep restarting children and answering probes, and
    a second writer would append to the files a running file sink rotates and counts.
    The safe way is the retry process's (dlq.reprocess moves records into its spool, to
    their own sink's redelivery ring): that needs a request channel to it first."""
    config = "FILE" if sup.origin.startswith("<") else sup.origin
    return (
        "replaying from inside the running agent is not supported: run "
        f"'logcap dlq replay --config {config}' (it delivers each pending record to its "
        "sink and marks it replayed; dlq.reprocess re-offers overflow and exhausted "
        "records by itself)"
    )


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
