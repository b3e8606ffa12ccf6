"""A strict fake of Loki's push API, in process, for the loki sink tests.

``POST /loki/api/v1/push`` is answered the way Loki answers it, and checked more strictly
than Loki does: the Content-Type must be ``application/x-protobuf`` (body: one raw snappy
block of a ``logproto.PushRequest``) or ``application/json`` (optionally gzip), the
protobuf is read with this module's own wire-format reader (unknown fields and wrong
wire types are errors), label sets are parsed with Go string-literal escapes and their
names checked, and entries are refused per stream like an ordered Loki does: older than
the newest accepted entry → 400 "entry out of order"; the same time and line as the newest
→ silently dropped as a duplicate. With ``unordered=True`` it behaves like a Loki with
``unordered_writes`` (the default since 2.4): anything newer than ``newest - window`` is
accepted, an identical (time, line) is dropped, older is "entry too far behind". Entries
a request has that are refused do not stop the others from being stored (as in Loki).

Tests can script the next answers (status, body, headers, a delay), require a tenant and
an Authorization header, and read back what was stored. Bound to 127.0.0.1 on a free
port; ``close()`` stops it and every connection.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cramjam

PUSH = "/loki/api/v1/push"
NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FRAMED_SNAPPY = b"\xff\x06\x00\x00sNaPpY"
Labels = tuple[tuple[str, str], ...]


class Malformed(ValueError):
    """The request body or its label sets cannot be what a Loki client sends."""


# -- protobuf wire format, read independently of the sink's encoder --------------------


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise Malformed("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise Malformed("varint longer than 10 bytes")


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of every field of one message."""
    out = []
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise Malformed("field number 0")
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 2:
            size, pos = read_varint(data, pos)
            if pos + size > len(data):
                raise Malformed("length-delimited field runs past its message")
            value, pos = data[pos : pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(data):
                raise Malformed("truncated fixed-width field")
            value, pos = data[pos : pos + width], pos + width
        else:
            raise Malformed(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _expect(message: str, fields: list[tuple[int, int, Any]], kinds: dict[int, int]) -> None:
    for number, wire, _ in fields:
        if number not in kinds:
            raise Malformed(f"{message}: unexpected field {number}")
        if kinds[number] != wire:
            raise Malformed(f"{message}: field {number} has wire type {wire}")


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(f"{what} is not UTF-8") from exc


def signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_push_request(data: bytes) -> list[tuple[str, list[tuple[int, str]]]]:
    """A PushRequest as (labels text, [(unix ns, line)]) per stream."""
    request = _fields(data)
    _expect("PushRequest", request, {1: 2, 2: 2})
    streams = []
    for number, _, value in request:
        if number != 1:
            continue
        stream = _fields(value)
        _expect("StreamAdapter", stream, {1: 2, 2: 2, 3: 0})
        labels = [_text(v, "labels") for n, _, v in stream if n == 1]
        if len(labels) > 1:
            raise Malformed("StreamAdapter: labels given twice")
        entries = []
        for number2, _, value2 in stream:
            if number2 != 2:
                continue
            entry = _fields(value2)
            _expect("EntryAdapter", entry, {1: 2, 2: 2})
            seconds = nanos = 0
            line = ""
            for n, _, v in entry:
                if n == 1:
                    stamp = _fields(v)
                    _expect("Timestamp", stamp, {1: 0, 2: 0})
                    for tn, _, tv in stamp:
                        if tn == 1:
                            seconds = signed64(tv)
                        else:
                            nanos = signed64(tv)
                    if not 0 <= nanos < 1_000_000_000:
                        raise Malformed(f"Timestamp: nanos {nanos} out of range")
                else:
                    line = _text(v, "line")
            entries.append((seconds * 1_000_000_000 + nanos, line))
        streams.append((labels[0] if labels else "", entries))
    return streams


def decode_json_request(data: bytes) -> list[tuple[str, list[tuple[int, str]]]]:
    """The JSON push body as (labels text, [(unix ns, line)]) per stream."""
    try:
        document = json.loads(data)
        streams = []
        for stream in document["streams"]:
            labels = stream["stream"]
            if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                raise Malformed("stream must map label names to strings")
            text = "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()) + "}"
            entries = []
            for value in stream["values"]:
                stamp, line = value  # Loki also allows structured metadata as a third item
                if not isinstance(stamp, str) or not stamp.isdigit() or not isinstance(line, str):
                    raise Malformed(f"bad value {value!r}")
                entries.append((int(stamp), line))
            streams.append((text, entries))
    except (KeyError, TypeError, ValueError) as exc:
        raise Malformed(f"bad JSON push body: {exc}") from exc
    return streams


# -- label sets: {name="Go string literal", ...} ----------------------------------------

_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
}


def _go_string(text: str, pos: int) -> tuple[str, int]:
    """Read a double-quoted Go string literal starting at ``pos`` (the quote)."""
    if text[pos : pos + 1] != '"':
        raise Malformed(f"expected '\"' at {pos} in {text!r}")
    pos += 1
    out = bytearray()
    while True:
        if pos >= len(text):
            raise Malformed(f"unterminated string in {text!r}")
        char = text[pos]
        if char == '"':
            return _text(bytes(out), "label value"), pos + 1
        if char == "\n":
            raise Malformed(f"raw newline in a label value in {text!r}")
        if char != "\\":
            out += char.encode("utf-8")
            pos += 1
            continue
        kind = text[pos + 1 : pos + 2]
        if kind in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[kind].encode()
            pos += 2
        elif kind in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits = text[pos + 2 : pos + 2 + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise Malformed(f"bad \\{kind} escape in {text!r}")
            value = int(digits, 16)
            if kind == "x":
                out.append(value)
            else:
                if 0xD800 <= value < 0xE000 or value > 0x10FFFF:
                    raise Malformed(f"escape \\{kind}{digits} is not a character")
                out += chr(value).encode("utf-8")
            pos += 2 + width
        elif kind in "01234567" and kind:
            digits = text[pos + 1 : pos + 4]
            if not re.fullmatch(r"[0-7]{3}", digits) or int(digits, 8) > 255:
                raise Malformed(f"bad octal escape in {text!r}")
            out.append(int(digits, 8))
            pos += 4
        else:
            raise Malformed(f"unknown escape \\{kind} in {text!r}")


def parse_labels(text: str) -> Labels:
    """A label set in Loki's syntax, as pairs sorted by name; Malformed if it is not one."""
    pos = 0

    def spaces() -> None:
        nonlocal pos
        while pos < len(text) and text[pos] in " \t":
            pos += 1

    spaces()
    if text[pos : pos + 1] != "{":
        raise Malformed(f"label set must start with '{{': {text!r}")
    pos += 1
    pairs: dict[str, str] = {}
    spaces()
    if text[pos : pos + 1] == "}":
        raise Malformed("error at least one label pair is required per stream")
    while True:
        spaces()
        match = NAME.match(text, pos)
        if match is None:
            raise Malformed(f"bad label name at {pos} in {text!r}")
        name = match.group(0)
        pos = match.end()
        spaces()
        if text[pos : pos + 1] != "=":
            raise Malformed(f"expected '=' at {pos} in {text!r}")
        pos += 1
        spaces()
        value, pos = _go_string(text, pos)
        if name in pairs:
            raise Malformed(f"stream '{text}' has duplicate label name: '{name}'")
        if name.startswith("__"):
            raise Malformed(f"reserved label name {name!r}")
        pairs[name] = value
        spaces()
        if text[pos : pos + 1] == ",":
            pos += 1
            continue
        if text[pos : pos + 1] == "}":
            pos += 1
            break
        raise Malformed(f"expected ',' or '}}' at {pos} in {text!r}")
    spaces()
    if pos != len(text):
        raise Malformed(f"text after the label set: {text!r}")
    return tuple(sorted(pairs.items()))


# -- the server --------------------------------------------------------------------------


@dataclass
class Answer:
    """A scripted answer: ``status`` None means "answer normally" (after ``delay``)."""

    status: int | None = None
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Request:
    """One push as received: headers (lower-case names), status answered, entries."""

    headers: dict[str, str]
    status: int
    streams: int = 0
    entries: int = 0


@dataclass
class _Stream:
    entries: list[tuple[int, str]] = field(default_factory=list)
    newest: int = -(1 << 63)
    last_line: str | None = None
    seen: set[tuple[int, str]] = field(default_factory=set)


class LokiFake:
    """The fake server; use as a context manager or call ``close()``."""

    def __init__(
        self,
        *,
        tenant: str | None = None,
        authorization: str | None = None,
        unordered: bool = False,
        window_ns: int = 3600 * 10**9,
        tls: ssl.SSLContext | None = None,
        prefix: str = "",
    ) -> None:
        self.push_path = prefix + PUSH  # Loki behind a gateway that routes by a prefix
        self.tenant = tenant
        self.authorization = authorization
        self.unordered = unordered
        self.window_ns = window_ns
        self.requests: list[Request] = []
        self.connections = 0
        self.duplicates = 0
        self._streams: dict[Labels, _Stream] = {}
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        host, port = self._server.server_address[:2]
        self.url = f"{'https' if tls else 'http'}://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- test side --------------------------------------------------------------------
    def script(
        self,
        status: int | None = None,
        body: str = "",
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` pushes this way instead of (or, status None: after
        ``delay``, before) processing them."""
        with self._lock:
            for _ in range(times):
                self._script.append(Answer(status, body, headers or {}, delay))

    def streams(self) -> dict[Labels, list[tuple[int, str]]]:
        """Every stored stream's entries in time order (as Loki returns them)."""
        with self._lock:
            return {
                key: sorted(stream.entries, key=lambda e: e[0])
                for key, stream in self._streams.items()
            }

    def lines(self) -> list[str]:
        """Every stored line, stream by stream."""
        return [line for entries in self.streams().values() for _, line in entries]

    def entry_count(self) -> int:
        with self._lock:
            return sum(len(s.entries) for s in self._streams.values())

    def pushes(self, status: int | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if status is None or r.status == status]

    def drop_connections(self, timeout: float = 10.0) -> None:
        """End every open connection from the server side, as Loki (or a proxy in front
        of it) does to idle keep-alive connections; return once their handlers are done."""
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._open:
                    return
            time.sleep(0.01)

    def close(self) -> None:
        """Stop serving, end every connection, wait for the handler threads."""
        self._server.shutdown()
        self.drop_connections()
        self._server.server_close()  # joins the handler threads
        self._thread.join(timeout=10)

    def __enter__(self) -> LokiFake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- server side --------------------------------------------------------------------
    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.add(conn)
            self.connections += 1

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.discard(conn)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, dict]:
        """Answer one POST: (status, body, extra headers)."""
        with self._lock:
            answer = self._script.popleft() if self._script else None
        if answer is not None and answer.delay:
            time.sleep(answer.delay)
        request = Request(headers, 0)
        if answer is not None and answer.status is not None:
            status, text, extra = answer.status, answer.body, answer.headers
        else:
            status, text = self._push(path, headers, body, request)
            extra = {}
        request.status = status
        with self._lock:
            self.requests.append(request)
        return status, text, extra

    def _push(
        self, path: str, headers: dict[str, str], body: bytes, request: Request
    ) -> tuple[int, str]:
        if path != self.push_path:
            return 404, "404 page not found"
        if self.tenant is not None and headers.get("x-scope-orgid") != self.tenant:
            return 401, "no org id"
        if self.authorization is not None and headers.get("authorization") != self.authorization:
            return 401, "unauthorized"
        content_type = headers.get("content-type", "").split(";")[0].strip()
        encoding = headers.get("content-encoding", "")
        try:
            if content_type == "application/json":
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding:
                    return 415, f"unsupported Content-Encoding {encoding}"
                streams = decode_json_request(body)
            elif content_type == "application/x-protobuf":
                if encoding not in ("", "snappy"):
                    return 415, f"unsupported Content-Encoding {encoding} for protobuf"
                if body.startswith(FRAMED_SNAPPY):
                    raise Malformed("framed snappy; Loki reads one raw block")
                try:
                    raw = bytes(cramjam.snappy.decompress_raw(body))
                except Exception as exc:  # cramjam raises its own DecompressionError
                    raise Malformed(f"not a snappy block: {exc}") from exc
                streams = decode_push_request(raw)
            else:
                return 415, f"unsupported Content-Type {content_type!r}"
            parsed = [(parse_labels(text), entries) for text, entries in streams]
        except (Malformed, OSError, EOFError) as exc:
            return 400, str(exc)
        if not parsed:
            return 400, "error at least one valid stream is required for ingestion"
        request.streams = len(parsed)
        request.entries = sum(len(entries) for _, entries in parsed)
        refused = []
        with self._lock:
            for key, entries in parsed:
                stream = self._streams.setdefault(key, _Stream())
                for stamp, line in entries:
                    problem = self._append(stream, stamp, line)
                    if problem:
                        refused.append(
                            f"entry with timestamp {stamp} ignored, reason: '{problem}' "
                            f"for stream: {_text_of(key)},"
                        )
        if refused:
            total = request.entries
            return 400, "\n".join([*refused[:10], f"total ignored: {len(refused)} out of {total}"])
        return 204, ""

    def _append(self, stream: _Stream, stamp: int, line: str) -> str:
        """Store one entry; return why it was refused, or "" (also for a duplicate)."""
        if self.unordered:
            if stamp < stream.newest - self.window_ns:
                return "entry too far behind"
            if (stamp, line) in stream.seen:
                self.duplicates += 1
                return ""
        else:
            if stamp < stream.newest:
                return "entry out of order"
            if stamp == stream.newest and line == stream.last_line:
                self.duplicates += 1
                return ""
        stream.entries.append((stamp, line))
        stream.seen.add((stamp, line))
        if stamp >= stream.newest:
            stream.newest, stream.last_line = stamp, line
        return ""


def _text_of(key: Labels) -> str:
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in key) + "}"


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close joins them: nothing outlives the test
    block_on_close = True
    fake: LokiFake

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left: nothing to report


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Loki
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/ready" else 404, "ready", {})

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._answer(411, "Content-Length required", {})
            return
        body = self.rfile.read(int(length))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, text, extra = self.server.fake.handle(self.path, headers, body)
        self._answer(status, text, extra)

    def _answer(self, status: int, text: str, extra: dict[str, str]) -> None:
        data = text.encode()
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204:
            self.wfile.write(data)
