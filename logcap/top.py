"""The model behind ``logcap top``: one scrape of the agent's API, and what two scrapes say.

A :class:`Scrape` is the parsed ``/metrics`` text (plus ``/health``'s uptime) with the
monotonic time it was taken; rates are differences between two scrapes divided by the
time between them. Parsing and role derivation are pure, so the rendering can be tested
from canned exposition text. :class:`Poller` is the one stateful part: a thread that
scrapes on its own clock, so a slow or dead agent never holds up the screen or a key press.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]

# The families ``top`` reads, by sample name (counters carry ``_total`` on the wire).
RECEIVED = "logcap_component_received_events_total"
SENT = "logcap_component_sent_events_total"
ERRORS = "logcap_component_errors_total"
CIRCUIT = "logcap_sink_circuit_state"
WATCHED = "logcap_source_files_watched"
UP = "logcap_child_up"
RESTARTS = "logcap_child_restarts_total"
CRASH_LOOP = "logcap_child_crash_loop"
CPU = "logcap_process_cpu_seconds_total"
RSS = "logcap_process_resident_memory_bytes"
RING_USED = "logcap_ring_used_slots"
RING_CAPACITY = "logcap_ring_capacity_slots"

CIRCUIT_NAMES = {0: "closed", 1: "open", 2: "half-open"}
# pipeline order: the order rows are shown in
ROLES = ("source", "dispatcher", "sink", "retry")
SUPERVISOR = "supervisor"
_ROLE_ALIASES = {"collector": "source"}  # the supervisor's own word for a source's process


@dataclass(frozen=True)
class Component:
    """One child of the supervisor as the metrics name it."""

    name: str
    kind: str
    role: str


@dataclass(frozen=True)
class Scrape:
    """The samples of one ``/metrics`` answer, keyed by sample name then label set."""

    at: float  # time.monotonic() when the answer arrived
    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)
    uptime: float | None = None  # seconds, from /health; None if it did not answer

    @classmethod
    def parse(cls, text: str, at: float, uptime: float | None = None) -> Scrape:
        """Parse Prometheus text exposition (raises ValueError on text it cannot read)."""
        samples: dict[str, dict[Labels, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = float(
                    sample.value
                )
        return cls(at=at, samples=samples, uptime=uptime)

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of ``name``'s samples whose labels include ``labels``; None if none."""
        wanted = set(labels.items())
        found = [v for key, v in self.samples.get(name, {}).items() if wanted <= key]
        return sum(found) if found else None

    def by_component(self, name: str) -> dict[str, float]:
        """``name``'s samples summed per ``component`` label."""
        out: dict[str, float] = {}
        for key, v in self.samples.get(name, {}).items():
            component = dict(key).get("component")
            if component is not None:
                out[component] = out.get(component, 0.0) + v
        return out

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """``name``'s samples keyed by one label, in exposition order."""
        return {
            dict(key)[label]: v
            for key, v in self.samples.get(name, {}).items()
            if label in dict(key)
        }

    def components(self) -> list[Component]:
        """Every component the per-component families name, sources first, then the
        dispatcher, sinks and the retry process (exposition order within a role); the
        supervisor, which only has process families, is left out."""
        seen: dict[str, Component] = {}
        for key in self.samples.get(UP, {}) or self.samples.get(SENT, {}):
            labels = dict(key)
            name = labels.get("component")
            if name is None or name in seen:
                continue
            kind = labels.get("kind", "")
            role = _ROLE_ALIASES.get(labels.get("role", ""), labels.get("role"))
            seen[name] = Component(name, kind, role or self._derive_role(name, kind))
        rank = {role: i for i, role in enumerate(ROLES)}
        rows = [c for c in seen.values() if c.role != SUPERVISOR]
        return sorted(rows, key=lambda c: rank.get(c.role, len(ROLES)))

    def _derive_role(self, name: str, kind: str) -> str:
        """The role when the agent does not label it: the dispatcher and the retry process
        by name or kind, sinks and sources by a family only their role has."""
        for role in ("dispatcher", "retry", SUPERVISOR):
            if role in (name, kind):
                return role
        if name in self.by_component(CIRCUIT):
            return "sink"
        if name in self.by_component(WATCHED):
            return "source"
        return "?"

    def processes(self) -> list[Component]:
        """The components, then the supervisor if its process is reported."""
        rows = self.components()
        supervisor = [
            Component(name, SUPERVISOR, SUPERVISOR)
            for name in self.by_component(CPU)
            if name == SUPERVISOR
        ]
        return rows + supervisor


def rate(previous: Scrape | None, current: Scrape, name: str, component: str) -> float | None:
    """Per-second increase of a counter between two scrapes; None without two values.

    A value lower than before means the counter restarted (the agent or the child did):
    as Prometheus does, the increase is then the new value, counted from zero."""
    if previous is None:
        return None
    seconds = current.at - previous.at
    before = previous.by_component(name).get(component)
    now = current.by_component(name).get(component)
    if before is None or now is None or seconds <= 0:
        return None
    increase = now - before if now >= before else now
    return increase / seconds


class Unreachable(Exception):
    """The API did not answer with metrics; ``str()`` is the reason an operator reads."""


def fetch(base_url: str, timeout: float, clock: Callable[[], float] = time.monotonic) -> Scrape:
    """Scrape ``/metrics`` (and ``/health`` for the uptime) from ``base_url``."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout) as answer:
            text = answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise Unreachable(f"HTTP {exc.code} from /metrics") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise Unreachable(getattr(reason, "strerror", None) or str(reason)) from exc
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed URL
        raise Unreachable(str(exc) or type(exc).__name__) from exc
    at = clock()
    try:
        scrape = Scrape.parse(text, at)
    except ValueError as exc:
        raise Unreachable(f"/metrics is not Prometheus text: {exc}") from exc
    return Scrape(at=at, samples=scrape.samples, uptime=_uptime(base_url, timeout))


def _uptime(base_url: str, timeout: float) -> float | None:
    """``uptime_seconds`` from ``/health``; None when it is not there (an older agent)."""
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=timeout) as answer:
            value = json.loads(answer.read()).get("uptime_seconds")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


class Poller(threading.Thread):
    """Scrapes every ``interval`` seconds and keeps the last two answers and the last error."""

    def __init__(self, base_url: str, interval: float) -> None:
        super().__init__(name="top-scrape", daemon=True)
        self.base_url, self.interval = base_url, interval
        self.previous: Scrape | None = None
        self.current: Scrape | None = None
        self.error: str | None = None
        self.generation = 0  # bumped after every scrape, so the screen knows to redraw
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            self.scrape()
            self._stopping.wait(self.interval)

    def run_twice(self) -> None:
        """Two scrapes an interval apart, so the rates of one screen can be measured."""
        self.scrape()
        time.sleep(self.interval)
        self.scrape()

    def scrape(self) -> None:
        try:
            answer = fetch(self.base_url, timeout=max(2.0, self.interval))
        except Unreachable as exc:
            with self._lock:
                self.error = str(exc)
                self.generation += 1
        else:
            with self._lock:
                self.previous, self.current, self.error = self.current, answer, None
                self.generation += 1

    def latest(self) -> tuple[Scrape | None, Scrape | None, str | None]:
        """The answer before the last, the last answer, and the last scrape's error."""
        with self._lock:
            return self.previous, self.current, self.error

    def stop(self) -> None:
        self._stopping.set()
