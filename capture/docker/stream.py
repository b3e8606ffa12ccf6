"""Docker's log stream → lines: frames, timestamps, and Docker's 16 KiB partial lines.

``GET /containers/{id}/logs?timestamps=1`` sends every log message as
``<RFC 3339 time with 9 fraction digits> <content>``. Without a TTY the body is
multiplexed: each message is one frame, an 8-byte header (byte 0 the stream: 1 stdout,
2 stderr, 3 an error from the daemon; bytes 4-7 the payload size, big-endian) and the
payload. With a TTY the body is the messages one after another (all of it stdout; the pty
ends lines in ``\\r\\n``).

Docker cuts a line longer than 16 KiB into *partial* messages of exactly 16 KiB content,
each stamped with the first piece's time; only the last piece ends in ``\\n``. Without a
TTY a piece is a frame whose content does not end in ``\\n`` and pieces are joined per
stream (the other stream's lines may come between them). With a TTY the frame
boundaries are gone, so a piece shows up as a timestamp exactly 16 KiB into a line's
content, which is cut out. A joined line longer than ``max_line_bytes`` is truncated or
skipped, and the pieces beyond it are dropped as they arrive: memory stays bounded
whatever a container prints. Joined, truncated and skipped lines are flagged, not
counted here: a skipped line still comes out (empty, flagged ``SKIPPED``) so that the
collector counts each line once even when a resume reads it again, and its position
passes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

PARTIAL_BYTES = 16 * 1024
STDOUT, STDERR, DAEMON_ERROR = 1, 2, 3
_TIMESTAMP = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z ")
_TIMESTAMP_MAX = 31  # "2026-11-22T10:15:08.665032374Z "
_seconds: dict[bytes, int] = {}


def parse_timestamp(whole: bytes, fraction: bytes | None) -> int:
    """Nanoseconds since the epoch of Docker's ``YYYY-MM-DDTHH:MM:SS`` and fraction."""
    seconds = _seconds.get(whole)
    if seconds is None:
        if len(_seconds) > 4096:
            _seconds.clear()
        stamp = datetime.fromisoformat(whole.decode()).replace(tzinfo=UTC)
        seconds = _seconds[whole] = int(stamp.timestamp())
    nanos = int((fraction + b"000000000")[:9]) if fraction else 0
    return seconds * 1_000_000_000 + nanos


def parse_rfc3339(text: str) -> int:
    """Nanoseconds of a time the Docker API reports (``State.FinishedAt``); 0 for Go's
    zero time or anything unreadable."""
    match = _TIMESTAMP.match(text.encode() + b" ")
    if match is None or text.startswith("0001-"):
        return 0
    return parse_timestamp(match.group(1), match.group(2))


def cut_utf8(data: bytes, limit: int) -> bytes:
    """``data`` cut to at most ``limit`` bytes, never inside a UTF-8 character."""
    cut = data[:limit]
    for back in range(1, min(4, len(cut)) + 1):
        byte = cut[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        if byte >= 0xC0:
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if back < needed:
                cut = cut[:-back]
        break
    return cut


JOINED, TRUNCATED, SKIPPED = 1, 2, 4  # Line.flags


class Line(NamedTuple):
    """One log line of a container, its Docker partial pieces joined."""

    stream: int  # STDOUT or STDERR
    timestamp_ns: int
    text: str
    flags: int = 0  # JOINED | TRUNCATED | SKIPPED


@dataclass
class _Joining:
    """Pieces of a partial line seen so far on one stream."""

    timestamp_ns: int
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0
    cut: bool = False


class LogDecoder:
    """Turns the bytes of one logs response into lines (one decoder per response)."""

    def __init__(self, tty: bool, max_line_bytes: int, skip_long_lines: bool) -> None:
        self.tty = tty
        self.max_line_bytes = max_line_bytes
        self.skip_long_lines = skip_long_lines
        self.buffer = bytearray()
        self.joining: dict[int, _Joining] = {}
        self.discarding = False  # TTY: inside an over-long line with no Docker pieces
        # running totals, read and reset by the collector for its counters
        self.malformed = 0
        self.daemon_errors: list[str] = []

    @property
    def holding(self) -> bool:
        """A partial line is waiting for its last piece (the position must not pass it)."""
        return bool(self.joining)

    def feed(self, data: bytes) -> list[Line]:
        """Lines completed by ``data``."""
        self.buffer += data
        out: list[Line] = []
        if self.tty:
            self._raw_messages(out)
        else:
            self._frames(out)
        return out

    def finish(self) -> list[Line]:
        """The response ended: a line still being joined is sent as it is (Docker logs a
        container's last output without a newline as a piece with no successor)."""
        out: list[Line] = []
        for stream in list(self.joining):
            self._piece(stream, self.joining[stream].timestamp_ns, b"\n", out)
        self.buffer.clear()
        return out

    # -- framing ---------------------------------------------------------------------
    def _frames(self, out: list[Line]) -> None:
        buf = self.buffer
        at = 0
        while len(buf) - at >= 8:
            size = int.from_bytes(buf[at + 4 : at + 8], "big")
            end = at + 8 + size
            if len(buf) < end:
                break
            stream = buf[at]
            payload = bytes(buf[at + 8 : end])
            at = end
            if stream == DAEMON_ERROR:
                self.daemon_errors.append(payload.decode("utf-8", "replace").strip())
                continue
            if stream not in (STDOUT, STDERR):
                continue
            match = _TIMESTAMP.match(payload)
            if match is None:  # no timestamp: keep the line, stamped by the caller
                self.malformed += 1
                self._piece(stream, -1, payload, out)
                continue
            stamp = parse_timestamp(match.group(1), match.group(2))
            self._piece(stream, stamp, payload[match.end() :], out)
        del buf[:at]

    def _raw_messages(self, out: list[Line]) -> None:
        buf = self.buffer
        at = 0
        while at < len(buf):
            if self.discarding:  # the rest of a line already cut and counted
                newline = buf.find(b"\n", at)
                if newline < 0:
                    at = len(buf)
                    break
                at = newline + 1
                self.discarding = False
                continue
            match = _TIMESTAMP.match(buf, at)
            if match is None:
                if len(buf) - at < _TIMESTAMP_MAX and b"\n" not in buf[at:]:
                    break  # the timestamp is not all here yet
                newline = buf.find(b"\n", at)
                if newline < 0:
                    break
                self.malformed += 1
                self._piece(STDOUT, -1, bytes(buf[at : newline + 1]), out)
                at = newline + 1
                continue
            start = match.end()
            newline = buf.find(b"\n", start, start + PARTIAL_BYTES + 1)
            stamp = parse_timestamp(match.group(1), match.group(2))
            if newline >= 0:
                self._piece(STDOUT, stamp, bytes(buf[start : newline + 1]), out)
                at = newline + 1
                continue
            piece_end = start + PARTIAL_BYTES
            if len(buf) < piece_end + _TIMESTAMP_MAX:
                if len(buf) - start > self.max_line_bytes + PARTIAL_BYTES:
                    self._overlong_raw(stamp, bytes(buf[start:]), out)
                    at = len(buf)
                break
            if _TIMESTAMP.match(buf, piece_end):  # a Docker piece: the next one follows
                self._piece(STDOUT, stamp, bytes(buf[start:piece_end]), out)
                at = piece_end
                continue
            # a line over 16 KiB that Docker did not cut into pieces
            newline = buf.find(b"\n", start)
            if newline >= 0:
                self._piece(STDOUT, stamp, bytes(buf[start : newline + 1]), out)
                at = newline + 1
            elif len(buf) - start > self.max_line_bytes:
                self._overlong_raw(stamp, bytes(buf[start:]), out)
                at = len(buf)
            else:
                break
        del buf[:at]

    def _overlong_raw(self, stamp: int, head: bytes, out: list[Line]) -> None:
        """A TTY line past every limit with no newline yet: send its head, drop the rest."""
        self._piece(STDOUT, stamp, head[: self.max_line_bytes + 1] + b"\n", out)
        self.discarding = True

    # -- lines -----------------------------------------------------------------------
    def _piece(self, stream: int, stamp: int, content: bytes, out: list[Line]) -> None:
        final = content.endswith(b"\n")
        body = content[:-1] if final else content
        if final and self.tty and body.endswith(b"\r"):
            body = body[:-1]
        joining = self.joining.get(stream)
        if joining is None:
            if final and len(body) <= self.max_line_bytes:  # the common case
                out.append(Line(stream, stamp, body.decode("utf-8", "replace")))
                return
            joining = self.joining[stream] = _Joining(stamp)
        if not joining.cut:
            room = self.max_line_bytes - joining.size
            if len(body) > room:
                body = body[:room]
                joining.cut = True
            joining.pieces.append(body)
            joining.size += len(body)
        if not final:
            return
        del self.joining[stream]
        flags = JOINED if len(joining.pieces) > 1 else 0
        whole = b"".join(joining.pieces)
        if joining.cut:
            if self.skip_long_lines:
                out.append(Line(stream, joining.timestamp_ns, "", flags | SKIPPED))
                return
            flags |= TRUNCATED
            whole = cut_utf8(whole, self.max_line_bytes)
        out.append(Line(stream, joining.timestamp_ns, whole.decode("utf-8", "replace"), flags))
