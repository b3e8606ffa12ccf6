"""The supervisor's HTTP API (``api.address``).

GET (and HEAD: the same headers, no body)::

    /metrics     Prometheus text (metrics/export.py)
    /health      200 while the supervisor runs, with its uptime
    /ready       200 when every child runs and no sink's circuit is open, else 503
    /config      the effective config as JSON, secrets replaced by "<redacted>"
    /positions   the checkpoint (data_dir/checkpoints.json) per source
    /dlq         the dead letter queue summed per sink and reason (read-only)
    /stats       per component: role, kind, process, counters; rings; checkpoint lag
    /tap         a live view of entries (logcap/tap.py); 501 while that is not built

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
import os
import re
import threading
import time
import urllib.parse
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from logcap.dispatch.checkpoint import CheckpointStore
from logcap.dlq.reader import scan
from logcap.dlq.record import Problem
from logcap.dlq.segments import dlq_directory, segment_paths
from logcap.errors import ConfigError
from logcap.metrics import Counter
from logcap.metrics.catalog import ROLES, counter_values
from logcap.metrics.export import PipelineCollector
from logcap.plan import DISPATCHER

if TYPE_CHECKING:
    from logcap.config import Config
    from logcap.supervisor import Supervisor

log = logging.getLogger(__name__)
REDACTED = "<redacted>"
MAX_POST_BODY = 64 * 1024  # no POST takes a body yet: read at most this much, then close
_SECRET_KEY = re.compile(
    r"token|passw|secret|credential|authorization|cookie|api[-_]?key", re.IGNORECASE
)
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")  # as config/_load.py


# -- /config ---------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Config units (ByteSize, Duration) are int and float subclasses: plain numbers."""
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _from_environment(text: str, env: Mapping[str, str]) -> set[tuple[Any, ...]]:
    """Paths of the values in config ``text`` that took text from a set environment
    variable (a ``${VAR:-default}`` that fell back to its default holds nothing secret)."""
    found: set[tuple[Any, ...]] = set()

    def walk(value: Any, path: tuple[Any, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i))
        elif isinstance(value, str):
            names = (m.group(1) for m in _VARIABLE.finditer(value))
            if any(name is not None and env.get(name) for name in names):
                found.add(path)

    walk(yaml.safe_load(text), ())
    return found


def _scrub(value: Any, secret: bool = False) -> Any:
    """``value`` with what every secret-named key holds redacted (URLs cannot carry a
    password: their pattern refuses user info)."""
    if isinstance(value, dict):
        return {
            key: _scrub(item, secret or bool(_SECRET_KEY.search(str(key))))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item, secret) for item in value]
    if value is None:
        return None
    return REDACTED if secret else value


def redacted_config(config: Config, text: str, env: Mapping[str, str]) -> Any:
    """The effective ``config`` as JSON-able builtins without its secrets: values of keys
    named like a secret (``*token*``, ``*password*``, ``*secret*``, an Authorization
    header, …) and every value taken from the environment (``text`` is the
    config as written, to tell those apart)."""
    data = msgspec.to_builtins(config, enc_hook=_plain)
    for path in _from_environment(text, env):
        data = _redact_at(data, path)
    return _scrub(data)


def _redact_at(value: Any, path: tuple[Any, ...]) -> Any:
    """``value`` with what is at ``path`` (if anything) redacted."""
    if not path:
        return REDACTED
    key, rest = path[0], path[1:]
    if isinstance(value, list):
        present = isinstance(key, int) and 0 <= key < len(value)
    else:
        present = isinstance(value, dict) and key in value
    if present:
        value[key] = _redact_at(value[key], rest)
    return value


def _config_text(origin: str) -> str | None:
    """The text the running config was loaded from (``Supervisor.origin``)."""
    if origin.startswith("<embedded "):
        name = origin.removeprefix("<embedded ").removesuffix(">")
        return resources.files("logcap.configs").joinpath(name).read_text("utf-8")
    if origin.startswith("<"):
        return None
    try:
        return Path(origin).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s again for /config: %s", origin, exc)
        return None


def _config_view(sup: Supervisor) -> tuple[int, Any]:
    """The answer to every GET /config of the run: the config is fixed for the run, so it
    is redacted once, at start, while its file still holds the text it was loaded from."""
    text = _config_text(sup.origin)
    unknown = (503, {"error": "the config's text is unknown: its secrets cannot be told"})
    if text is None:
        return unknown
    try:
        return 200, redacted_config(sup.config, text, os.environ)
    except yaml.YAMLError:  # the file was rewritten since: which values are secret is unknown
        return unknown


# -- /positions, /dlq ------------------------------------------------------------------
def positions(sup: Supervisor) -> dict[str, Any]:
    """The checkpointed positions per source (every configured source, maybe none)."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in sup.config.sources}
    for p in CheckpointStore(sup.config.data_dir).load().files:
        entry = {"path": p.path, "dev": p.dev, "ino": p.ino, "offset": p.offset}
        found.setdefault(p.source, []).append(entry)
    return {"sources": found}


def dlq_summary(sup: Supervisor) -> dict[str, Any]:
    """The DLQ counted per sink and reason, as ``logcap dlq ls`` reads it: read-only, a
    record being appended meanwhile is not seen (or is reported torn)."""
    directory = dlq_directory(sup.config.data_dir)
    segments = sizes = 0
    for segment in segment_paths(directory):
        try:
            sizes += segment.stat().st_size
        except FileNotFoundError:  # deleted meanwhile (max_age, drop_oldest, purge)
            continue
        segments += 1
    problems: list[Problem] = []
    sinks: dict[str, dict[str, Any]] = {}
    reasons: Tally[str] = Tally()
    for stored in scan(directory, problems):
        record = stored.record
        sink = sinks.setdefault(
            record.sink, {"records": 0, "entries": 0, "pending": 0, "reasons": Tally()}
        )
        sink["records"] += 1
        sink["entries"] += record.entries
        sink["pending"] += not stored.replayed
        sink["reasons"][record.kind] += 1
        reasons[record.kind] += 1
    return {
        "segments": segments,
        "bytes": sizes,
        "records": sum(s["records"] for s in sinks.values()),
        "entries": sum(s["entries"] for s in sinks.values()),
        "pending": sum(s["pending"] for s in sinks.values()),
        "reasons": dict(reasons),
        "sinks": {name: {**s, "reasons": dict(s["reasons"])} for name, s in sinks.items()},
        "problems": [f"{p.path} at byte {p.offset}: {p.what}" for p in problems],
    }


# -- /stats ----------------------------------------------------------------------------
def _components(sup: Supervisor) -> dict[str, Any]:
    """Each component's process and the counters /metrics exports for it (named as there,
    without ``logcap_`` and ``_total``)."""
    now = time.monotonic()
    out: dict[str, Any] = {}
    for child in sup.children:
        role = ROLES[child.role]
        values = sup.table.read(sup.plan.counter_index(child.name))
        counters: dict[str, float] = {
            name.removeprefix("logcap_"): value for name, value in counter_values(sup, child)
        }
        if role == "source" and child.kind != "http":
            counters["source_files_watched"] = values[Counter.FILES_WATCHED]
        out[child.name] = {
            "role": role,
            "kind": child.kind,
            "running": child.running,
            "restarts": child.restarts,
            "crash_loop": child.crash_loop(now),
            "counters": counters,
        }
    for sink, state in sup.circuits().items():
        out[sink]["circuit"] = state
    return out


def _rings(sup: Supervisor) -> dict[str, Any]:
    return {
        name: {"used": ring.occupancy(), "capacity": ring.slot_count}
        for name, ring in sup.rings.items()
    }


def _checkpoint(sup: Supervisor) -> dict[str, Any]:
    dispatcher = sup.table.read(sup.plan.counter_index(DISPATCHER))
    return {
        "lag_bytes": dispatcher[Counter.CHECKPOINT_LAG_BYTES],
        "lag_seconds": dispatcher[Counter.CHECKPOINT_LAG_MS] / 1000,
    }


#: the members of /stats, each read at request time; a new one (the events ledger) is
#: one more entry here
def _ledger(sup: Supervisor) -> dict[str, dict[str, int]]:
    """Per sink, where its published entries are (metrics/ledger.py)."""
    from logcap.metrics.ledger import read_ledgers

    return {
        ledger.sink: {
            "published": ledger.published,
            "delivered": ledger.delivered,
            "dead_lettered": ledger.dead_lettered,
            "in_ring": ledger.in_ring,
            "held_by_retry": ledger.held_by_retry,
            "unaccounted": ledger.unaccounted,
        }
        for ledger in read_ledgers(sup)
    }


STATS: dict[str, Callable[[Supervisor], Any]] = {
    "components": _components,
    "rings": _rings,
    "checkpoint": _checkpoint,
    "ledger": _ledger,
}


# -- the server ------------------------------------------------------------------------
class ApiServer(ThreadingHTTPServer):
    """The server plus the state it reports on."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], supervisor: Supervisor) -> None:
        super().__init__(address, _Handler)
        self.supervisor = supervisor
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(supervisor))
        self.config_view = _config_view(supervisor)


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

    def _authorised(self) -> bool:
        """The request carries ``api.token``; else answered 401 (403: none configured)."""
        token = self.server.supervisor.config.api.token
        if token is None:
            self._json(403, {"error": "POST is refused: no api.token is configured"})
            return False
        given = self.headers.get("Authorization", "").encode("latin-1", "replace")
        if hmac.compare_digest(given, f"Bearer {token}".encode()):
            return True
        self._json(
            401,
            {"error": "POST needs 'Authorization: Bearer <api.token>'"},
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
