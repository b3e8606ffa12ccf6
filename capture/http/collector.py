"""The HTTP ingest collector: ``POST /api/v1/logs`` into this source's ring.

A request is published whole or not at all: if the ring has no room for all of it, the
client gets 429 with ``Retry-After`` and sends it again later, so a line is never dropped
silently. 200 means every sink delivered the entries, or the retry spool or the DLQ holds
them on disk: it survives a ``kill -9`` of the whole tree (end-to-end acknowledgement,
capture/http/acks.py). Not acknowledged within 10 s (``ACK_TIMEOUT``): 503 + ``Retry-After``
(the entries may still arrive, so a retry may duplicate them; nothing is lost).

Accepted bodies: a JSON object, a JSON array of objects, or NDJSON. An entry::

    {"message": "...", "level": "error", "timestamp": "2026-11-22T08:00:00Z" or epoch
     seconds/ms/ns, "labels": {"k": "v"}, "source_type": "...", "source_id": "..."}

``message`` is required; ``level``, ``source_type`` and ``source_id`` become labels, as do
``client_ip`` and ``ingested_via: http``; ``timestamp`` (the event time) is kept.

No client can send an entry the pipeline cannot carry: at most :data:`MAX_LABELS` labels
with names of at most :data:`MAX_LABEL_NAME_BYTES` (else 400), labels of at most
:data:`MAX_LABELS_BYTES` as JSON, and message plus labels (as JSON) within one collector
ring slot (else 413), and all of a request's entries within the whole ring (else 413,
not a 429 that would come back forever). The whole request is refused; nothing of it is
taken.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import re
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec

from logcap.capture._entries import (
    Entry,
    Position,
    pack_records,
    pack_rich,
    record_capacity,
    write_entries,
)
from logcap.capture.http.acks import SETTLE_TIMEOUT, AckWaiter, Positions
from logcap.capture.http.config import HttpSourceConfig
from logcap.capture.pipeline.engine import Processor
from logcap.capture.ratelimit import TokenBucket
from logcap.errors import BadRequest, EntryTooLarge, TooLarge
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Producer

log = logging.getLogger(__name__)
PATH = "/api/v1/logs"
_FRACTION = re.compile(r"\.(\d+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class IncomingEntry(msgspec.Struct, forbid_unknown_fields=True):
    """One entry as clients send it."""

    message: str
    level: str | None = None
    timestamp: str | int | float | None = None
    labels: dict[str, str] = {}
    source_type: str | None = None
    source_id: str | None = None


# Bounds on what one entry may carry, so that no client can make an entry that a batch,
# the retry heap or the DLQ could not hold (dispatch/bounds.py counts on them).
MAX_LABELS = 64  # the client's own labels; level, source_type, source_id come on top
MAX_LABEL_NAME_BYTES = 128
MAX_LABELS_BYTES = 16 * 1024  # every label of an entry, as JSON

_entries = msgspec.json.Decoder(IncomingEntry | list[IncomingEntry])
_entry = msgspec.json.Decoder(IncomingEntry)
_json = msgspec.json.Encoder().encode


def _check_entry(number: int, item: IncomingEntry, labels: dict[str, str], limit: int) -> None:
    """Refuse an entry over the label bounds, or larger (escaped) than ``limit`` bytes."""
    if len(item.labels) > MAX_LABELS:
        raise BadRequest(f"entry {number}: {len(item.labels)} labels, at most {MAX_LABELS}")
    for name in item.labels:
        if len(name.encode("utf-8", "replace")) > MAX_LABEL_NAME_BYTES:
            raise BadRequest(
                f"entry {number}: label name {name[:32]!r}... is over {MAX_LABEL_NAME_BYTES} bytes"
            )
    labels_bytes = len(_json(labels))
    if labels_bytes > MAX_LABELS_BYTES:
        raise TooLarge(
            f"entry {number}: its labels are {labels_bytes} bytes as JSON, at most "
            f"{MAX_LABELS_BYTES}"
        )
    size = labels_bytes + len(_json(item.message))
    if size > limit:
        raise TooLarge(f"entry {number}: {size} bytes as JSON with its labels, at most {limit}")


def _timestamp_ns(value: str | int | float | None, received_ns: int) -> int:
    if value is None:
        return received_ns
    if isinstance(value, str):
        # whole seconds from datetime, the fraction from its digits: exact to the ns
        match = _FRACTION.search(value)
        digits = match.group(1) if match else ""
        try:
            stamp = datetime.fromisoformat(_FRACTION.sub("", value, count=1))
        except ValueError as exc:
            raise BadRequest(f"timestamp {value!r} is not RFC 3339") from exc
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        seconds = (stamp - _EPOCH) // timedelta(seconds=1)
        return seconds * 1_000_000_000 + int((digits + "000000000")[:9])
    magnitude = abs(value)  # epoch seconds, milliseconds, microseconds or nanoseconds
    exponent = 9 if magnitude < 1e11 else 6 if magnitude < 1e14 else 3 if magnitude < 1e17 else 0
    if isinstance(value, int):
        return int(value * 10**exponent)  # exact: integer arithmetic
    return int(value * 10**exponent)


def parse_body(
    body: bytes, client_ip: str, received_ns: int, max_entry_bytes: int | None = None
) -> list[Entry]:
    """``[(labels, timestamp_ns, message), ...]`` from a request body; an entry over the
    label bounds or ``max_entry_bytes`` (message and labels as JSON) is refused."""
    if not body.strip():
        raise BadRequest("empty body: send a JSON object, a JSON array or NDJSON")
    try:
        parsed = _entries.decode(body)
        items = parsed if isinstance(parsed, list) else [parsed]
    except msgspec.DecodeError as first_error:
        lines = [line for line in body.split(b"\n") if line.strip()]
        if len(lines) < 2:
            raise BadRequest(str(first_error)) from first_error
        try:
            items = [_entry.decode(line) for line in lines]
        except msgspec.DecodeError as exc:
            raise BadRequest(f"not JSON, a JSON array or NDJSON: {exc}") from exc
    out: list[Entry] = []
    limit = sys.maxsize if max_entry_bytes is None else max_entry_bytes
    for number, item in enumerate(items, 1):
        labels = {**item.labels, "ingested_via": "http", "client_ip": client_ip}
        for key in ("level", "source_type", "source_id"):
            value = getattr(item, key)
            if value is not None:
                labels[key] = value
        _check_entry(number, item, labels, limit)
        out.append((labels, _timestamp_ns(item.timestamp, received_ns), item.message))
    return out


def _never_fits(entries: int, chunks: int, producer: Producer) -> str:
    slots = producer.ring.slot_count
    return (
        f"these {entries} entries need {chunks} collector ring slots with their labels, "
        f"and would never fit the ring's {slots} slots: send them in smaller requests"
    )


class HttpCollector:
    """The server and the ring; handler threads publish under one lock (one producer)."""

    def __init__(
        self,
        name: str,
        config: HttpSourceConfig,
        producer: Producer,
        counters: CounterBlock,
        processor: Processor | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.processor = processor  # the source's pipelines, run under the lock
        self.limiter = None if config.rate_limit is None else TokenBucket(config.rate_limit)
        self.producer = producer
        self.counters = counters
        self.lock = threading.Lock()
        self.positions = Positions()
        self.acks = AckWaiter(counters)
        host, port = config.address.rsplit(":", 1)
        try:
            self.server = ThreadingHTTPServer((host, int(port)), _Handler)
        except OSError as exc:  # taken since `logcap run` checked it: one line, no traceback
            log.error("source %s: cannot listen on %s: %s", name, config.address, exc.strerror)
            raise SystemExit(os.EX_CONFIG) from exc
        self.server.daemon_threads = True
        self.server.collector = self  # type: ignore[attr-defined]

    def publish(self, entries: list[Entry], received_ns: int) -> int | None:
        """All entries into the ring, or nothing (None: no room now); the request's
        position to wait for (0: nothing to wait for)."""
        if self.processor is not None:
            with self.lock:  # the pipelines' state (dedup) follows the ring's order
                return self._publish_processed(self.processor, entries, received_ns)
        try:
            chunks = pack_records(entries, record_capacity(self.producer))
        except EntryTooLarge as exc:
            raise TooLarge(str(exc)) from exc
        if not chunks:
            return 0
        with self.lock:
            return self._publish_chunks(chunks, len(entries), received_ns)

    def _publish_chunks(self, chunks: list[bytes], entries: int, received_ns: int) -> int | None:
        """Publish every chunk (under the lock), or none if the ring has no room now;
        :class:`TooLarge` if it never could (429 would come back forever)."""
        if len(chunks) > self.producer.ring.slot_count:
            raise TooLarge(_never_fits(entries, len(chunks), self.producer))
        if self.producer.free_slots() < len(chunks):
            return None
        position = self.positions.next()
        for number, data in enumerate(chunks, 1):
            seq = self.producer.try_claim(1)
            # the last record carries the position: acknowledged with the last entries
            where = Position(b"", 0, position, 0) if number == len(chunks) else None
            write_entries(self.producer, seq, data, received_ns, where)
            self.producer.publish(seq)
        return position

    def _publish_processed(
        self, processor: Processor, entries: list[Entry], received_ns: int
    ) -> int | None:
        """The request's entries through the pipelines, then into the ring; a request
        that is not taken (413, 429) is rolled back, so its retry is processed anew."""
        processed = processor.run_tuples(
            entries, received_ns, dict(self.config.labels), commit=False
        )
        chunks = pack_rich(processed, record_capacity(self.producer), self.counters)
        taken = None
        try:
            taken = 0 if not chunks else self._publish_chunks(chunks, len(entries), received_ns)
        finally:
            if taken is not None:
                processor.commit()
            else:
                processor.rollback()
        return taken

    def run(self, should_stop: Any) -> None:
        """Serve until asked to stop, then close the ring cleanly."""
        thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        thread.start()
        # bound since __init__, served from now on: /ready and READY=1 wait for this
        self.counters.set(Counter.FILES_WATCHED, 1)
        log.info("source %s: listening on http://%s%s", self.name, self.config.address, PATH)
        try:
            while not should_stop():
                time.sleep(0.2)
        finally:
            self.server.shutdown()
            self.server.server_close()
            # requests already taken in get their answer while the pipeline drains
            self.acks.settle(SETTLE_TIMEOUT)
            with self.lock:
                self.producer.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: with Nagle the body waited for the client's
    # delayed ACK, 40 ms a request on a keep-alive connection
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        collector: HttpCollector = self.server.collector  # type: ignore[attr-defined]
        config = collector.config
        if self.path.split("?", 1)[0] != PATH:
            return self._reply(404, {"error": f"POST entries to {PATH}"})
        if config.bearer_token is not None:
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {config.bearer_token}".encode()):
                collector.counters.add(Counter.ERRORS)
                return self._reply(401, {"error": "missing or wrong bearer token"})
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._reply(411, {"error": "Content-Length is required"})
        if int(length) > config.max_body_bytes:
            collector.counters.add(Counter.ERRORS)
            self.close_connection = True
            return self._reply(413, {"error": f"body over {config.max_body_bytes} bytes"})
        body = self.rfile.read(int(length))
        received_ns = time.time_ns()
        try:
            entries = parse_body(
                body, self.client_address[0], received_ns, record_capacity(collector.producer)
            )
            limiter, dropped = collector.limiter, 0
            if limiter is not None:
                if limiter.drop:
                    granted = limiter.take_up_to(len(entries))
                    entries, dropped = entries[:granted], len(entries) - granted
                    collector.counters.add(Counter.RATE_LIMIT_DROPPED, dropped)
                elif not limiter.take_all(len(entries)):
                    collector.counters.add(Counter.HTTP_THROTTLED)
                    collector.counters.set(Counter.RATE_LIMITED_MS, limiter.held_ms())
                    wait = {
                        "Retry-After": str(max(1, math.ceil(limiter.retry_after(len(entries)))))
                    }
                    return self._reply(429, {"error": "over the source's rate_limit"}, wait)
                collector.counters.set(Counter.RATE_LIMITED_MS, limiter.held_ms())
            position = collector.publish(entries, received_ns)
        except BadRequest as exc:
            collector.counters.add(Counter.ERRORS)
            return self._reply(exc.status, {"error": str(exc)})
        retry = {"Retry-After": str(max(1, round(config.retry_after)))}
        if position is None:
            collector.counters.add(Counter.HTTP_THROTTLED)
            return self._reply(429, {"error": "pipeline is backpressured; retry later"}, retry)
        collector.counters.add(Counter.EVENTS_IN, len(entries))
        collector.counters.add(Counter.BYTES_IN, len(body))
        if not collector.acks.wait(position):
            collector.counters.add(Counter.ERRORS)
            error = "entries taken in but not yet delivered; they may still be: retry later"
            return self._reply(503, {"error": error}, retry)
        answer: dict[str, Any] = {"accepted": len(entries)}
        if dropped:
            answer["dropped"] = dropped  # over the rate_limit (when_exceeded: drop)
        return self._reply(200, answer)

    def _reply(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Requests are counted, not logged one by one."""
