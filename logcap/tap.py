"""``GET /tap``: the entries passing through the batch ring, live, without gating it.

A tap is for a person watching: it must never slow the pipeline, so it holds no consumer
cursor. The dispatcher gates only on the sinks' cursors and may rewrite a slot while a
tap copies it; the tap finds out afterwards and drops that copy (ringbuf/follower.py).
It runs in the API server's request thread, in the supervisor process, reading the ring
the supervisor created.

Query parameters (each optional): ``source`` (repeatable: entries of these sources),
``sink`` (what that sink receives: its ``inputs`` and its ``when``, the same narrowing its
runner does, sinks/routing.py), ``when`` (repeatable, all must match: ``FIELD=VALUE`` or
``FIELD~REGEX`` on the entry's message, level, source, labels.x or fields.x, the
conditions of pipeline steps), ``limit`` (end after this many entries), ``rate`` (entries
a second the tap looks at, at most, default :data:`DEFAULT_RATE`, 0: no cap; batches over
it are not even copied, they are skipped and reported as missed, so a tap costs the
pipeline at most that much work whatever its filters pass). A bad one is answered 400
with ``{"error": "..."}``.

The stream (``application/x-ndjson``, close-delimited) is one JSON object per line:

* an entry: the very bytes the sinks receive, so it starts with ``{"timestamp":``;
* a control line, whose first key is ``tap``:
  ``{"tap":"missed","batches":N}``: N batches went by unread since the last such line,
  because the tap fell behind or the dispatcher rewrote a slot during its copy (at most
  one a second; batches, because the entry count of an overwritten batch is gone with
  it); ``{"tap":"end","reason":"limit"|"stopping"}``: the stream ends cleanly. A stream
  that stops without an ``end`` line was cut.

It ends at the limit, when the agent stops, or when the client goes away (a failed write,
an EOF seen while idle, or a write that waits more than :data:`WRITE_TIMEOUT`).
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING

import msgspec

from logcap.capture.pipeline.config import Condition, check_when
from logcap.capture.pipeline.entry import Entry
from logcap.capture.pipeline.steps import condition
from logcap.dispatch.batch import Batch
from logcap.ringbuf import Ring, RingFollower
from logcap.sinks.routing import narrow, sink_routes

if TYPE_CHECKING:
    from logcap.config import Config
    from logcap.supervisor import Supervisor

IDLE_POLL = 0.01  # seconds between looks at the ring when nothing new was published
MISSED_EVERY = 1.0  # seconds between two "missed" lines at most
GONE_CHECK_EVERY = 0.5  # how often a busy tap whose filters pass nothing looks for EOF
WRITE_TIMEOUT = 30.0  # a client that takes nothing for this long is gone
PARAMETERS = ("source", "sink", "when", "limit", "rate")
DEFAULT_RATE = 2000  # entries a second a tap passes on by default (0: no cap)


class TapRequestError(ValueError):
    """A query the tap cannot serve (answered 400 with this message)."""


EntryTest = Callable[[Entry], bool]


class Selection:
    """Which entries of a batch the tap passes on, and how many it still may."""

    def __init__(
        self,
        sources: frozenset[str] | None,
        route: tuple[frozenset[str] | None, int],
        tests: list[EntryTest],
        limit: int | None,
        rate: int = DEFAULT_RATE,
    ) -> None:
        self.rate = rate  # entries a second at most (0: every one it can copy)
        self.sources = sources
        self.route = route  # the sink's (inputs, skip bit); (None, 0): every entry
        self.tests = tests
        self.remaining = limit

    @property
    def done(self) -> bool:
        """The limit is reached."""
        return self.remaining is not None and self.remaining <= 0

    def select(self, batch: Batch) -> bytes:
        """The NDJSON lines of ``batch`` that pass, at most the remaining limit."""
        batch = narrow(batch, *self.route)
        if self.sources is not None:
            batch = narrow(batch, self.sources)
        out = bytearray()
        for group, data in batch.groups():
            if self.done:
                break
            if self.tests:
                out += self._tested(data)
            elif self.remaining is None or group.count <= self.remaining:
                out += data  # a whole group: no per-entry work
                if self.remaining is not None:
                    self.remaining -= group.count
            else:
                out += data[: _end_of_line(data, self.remaining)]
                self.remaining = 0
        return bytes(out)

    def _tested(self, data: memoryview) -> bytes:
        out = bytearray()
        # JSON strings hold no raw newline: every b"\n" ends an entry (dispatch/batch.py)
        for line in bytes(data).split(b"\n")[:-1]:
            if self.done:
                break
            if all(test(_entry(line)) for test in self.tests):
                out += line + b"\n"
                if self.remaining is not None:
                    self.remaining -= 1
        return bytes(out)


def _end_of_line(data: memoryview, lines: int) -> int:
    """The offset just past the ``lines``-th newline of ``data``."""
    raw = bytes(data)
    at = 0
    for _ in range(lines):
        at = raw.index(b"\n", at) + 1
    return at


def _entry(line: bytes) -> Entry:
    """An entry line (dispatch/encode.py) as the conditions of pipeline steps read it."""
    value = msgspec.json.decode(line)
    return Entry(
        value.get("source", ""),
        value.get("labels") or {},
        0,
        value.get("message", ""),
        value.get("level"),
        value.get("fields"),
    )


def parse_when(text: str) -> EntryTest:
    """``FIELD=VALUE`` (equal, as text or as the JSON number/boolean it spells) or
    ``FIELD~REGEX`` (searched in the member as text) as a test of an entry."""
    found = re.search(r"[=~]", text)
    if found is None:
        raise TapRequestError(f"when {text!r}: write FIELD=VALUE or FIELD~REGEX")
    field, op, value = text[: found.start()], found.group(), text[found.end() :]
    raw: dict[str, object] = {"field": field}
    if op == "~":
        raw["matches"] = value
    else:
        candidates: list[object] = [value]
        try:  # fields.status=500 is meant to match the number 500 too
            decoded = msgspec.json.decode(value)
        except msgspec.DecodeError:
            decoded = None
        if isinstance(decoded, int | float | bool):
            candidates.append(decoded)
        raw["in"] = candidates
    try:
        when = msgspec.convert(raw, Condition)
    except msgspec.ValidationError as exc:
        raise TapRequestError(f"when {text!r}: {exc}") from exc
    problems = check_when(when, ("when",))
    if problems:
        raise TapRequestError(f"when {text!r}: {problems[0][1]}")
    test: EntryTest = condition(when)
    return test


def parse_params(
    params: dict[str, list[str]],
    config: Config,
    sources: list[str],
    sinks: list[str],
    slots: dict[str, int] | None = None,
) -> Selection:
    """The :class:`Selection` a query asks for, or :class:`TapRequestError`."""
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise TapRequestError(f"unknown parameter {unknown[0]!r} (known: {', '.join(PARAMETERS)})")
    wanted = params.get("source")
    for name in wanted or ():
        if name not in sources:
            raise TapRequestError(f"no source named {name!r} (sources: {', '.join(sources)})")
    route: tuple[frozenset[str] | None, int] = (None, 0)
    if params.get("sink"):
        if len(params["sink"]) > 1:
            raise TapRequestError("give one sink")
        name = params["sink"][0]
        if name not in sinks:
            raise TapRequestError(f"no sink named {name!r} (sinks: {', '.join(sinks)})")
        route = sink_routes(config, sinks, slots)[sinks.index(name)]
    limit = None
    if params.get("limit"):
        text = params["limit"][-1]
        if not text.isdigit() or int(text) < 1:
            raise TapRequestError(f"limit {text!r}: give a whole number of entries, 1 or more")
        limit = int(text)
    rate = DEFAULT_RATE
    if params.get("rate"):
        text = params["rate"][-1]
        if not text.isdigit():
            raise TapRequestError(f"rate {text!r}: give entries a second, 0 for no cap")
        rate = int(text)
    tests = [parse_when(text) for text in params.get("when", [])]
    sources_wanted = None if wanted is None else frozenset(wanted)
    return Selection(sources_wanted, route, tests, limit, rate)


def serve(
    handler: BaseHTTPRequestHandler, supervisor: Supervisor, params: dict[str, list[str]]
) -> None:
    """Answer ``GET /tap``: stream entries as the module docstring says, until the
    limit, the agent's stop, or the client's leaving."""
    plan = supervisor.plan
    try:
        selection = parse_params(params, plan.config, plan.sources, plan.sinks, plan.slots)
    except TapRequestError as exc:
        _error(handler, 400, str(exc))
        return
    # a mapping of its own: the supervisor unmaps its rings when it stops, maybe while
    # this thread still reads (this one stays valid until closed, unlinked or not)
    try:
        if supervisor.stop_requested:
            raise FileNotFoundError(plan.batch_ring)
        ring = Ring.attach(plan.batch_ring)
    except FileNotFoundError:
        _error(handler, 503, "the agent is stopping")
        return
    try:
        _answer(handler, supervisor, ring, selection)
    finally:
        ring.close()


def _error(handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
    body = msgspec.json.encode({"error": message})
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def _answer(
    handler: BaseHTTPRequestHandler, supervisor: Supervisor, ring: Ring, selection: Selection
) -> None:
    follower = RingFollower(ring)  # before the headers: a client that has them sees all after
    handler.close_connection = True
    handler.send_response(200)
    handler.send_header("Content-Type", "application/x-ndjson")
    handler.send_header("Cache-Control", "no-store")
    handler.send_header("Connection", "close")
    handler.end_headers()
    if handler.command == "HEAD":
        return
    sock: socket.socket = handler.connection
    sock.settimeout(WRITE_TIMEOUT)
    try:
        _stream(handler, supervisor, ring, follower, selection, sock)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        return  # the client went away


def _stream(
    handler: BaseHTTPRequestHandler,
    supervisor: Supervisor,
    ring: Ring,
    follower: RingFollower,
    selection: Selection,
    sock: socket.socket,
) -> None:
    write = handler.wfile.write
    reported = 0
    next_report = next_gone_check = refilled = time.monotonic()
    tokens = float(selection.rate)
    while True:
        if supervisor.stop_requested or ring.closed:
            # draining: the last batches go to the sinks, not to a tap
            write(b'{"tap":"end","reason":"stopping"}\n')
            return
        now = time.monotonic()
        if selection.rate:
            # a person watching reads a few thousand lines a second at most; a tap kept
            # to its rate copies no batch beyond it (a core's worth of copying, socket
            # writes and printing on a 2-core host otherwise), it skips them, counted
            tokens = min(float(selection.rate), tokens + (now - refilled) * selection.rate)
            refilled = now
            if tokens <= 0:
                follower.skip()
        copied = follower.take() if not selection.rate or tokens > 0 else None
        if follower.missed > reported and now >= next_report:
            write(b'{"tap":"missed","batches":%d}\n' % (follower.missed - reported))
            reported, next_report = follower.missed, now + MISSED_EVERY
        if copied is None:
            if _client_gone(sock, IDLE_POLL):
                return
            continue
        batch = Batch.from_slot(memoryview(copied.data))
        # charged for every entry it looks at, passed or not: the work is in the looking
        # (a filter that passes nothing decodes them all); a batch may overdraw
        tokens -= batch.meta.count
        lines = selection.select(batch)
        if lines:
            write(lines)
        elif now >= next_gone_check:
            next_gone_check = now + GONE_CHECK_EVERY
            if _client_gone(sock, 0):
                return
        if selection.done:
            write(b'{"tap":"end","reason":"limit"}\n')
            return


def _client_gone(sock: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` for the client to close its end (it sends nothing more
    after its request; whatever it does send is discarded)."""
    readable, _, _ = select.select([sock], [], [], timeout)
    if not readable:
        return False
    try:
        return not sock.recv(4096)
    except (ConnectionResetError, TimeoutError):
        return True
