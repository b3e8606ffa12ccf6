"""The supervisor's HTTP endpoint: ``/metrics``, ``/health`` and ``/ready``."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from logcap.errors import ConfigError
from logcap.metrics.export import PipelineCollector

if TYPE_CHECKING:
    from logcap.supervisor import Supervisor


class ApiServer(ThreadingHTTPServer):
    """The server plus the state it reports on."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], supervisor: Supervisor) -> None:
        super().__init__(address, _Handler)
        self.supervisor = supervisor
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(supervisor))


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    _head_only = False  # answering HEAD: headers as for GET, no body

    def do_HEAD(self) -> None:
        """What GET would answer, without the body (load balancers and probes use it)."""
        self._head_only = True
        self.do_GET()

    def do_GET(self) -> None:
        sup = self.server.supervisor
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path == "/health":
            body = {"status": "ok", "uptime_seconds": round(time.monotonic() - sup.started, 3)}
            self._json(200, body)
        elif path == "/ready":
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
        else:
            self._json(404, {"error": f"no such path {path}"})

    def _json(self, status: int, body: object) -> None:
        self._reply(status, "application/json", json.dumps(body).encode())

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self._head_only:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would flood the log; stay quiet."""


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
