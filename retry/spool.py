"""The retry spool: every batch waiting for another attempt, on disk under ``data_dir/spool``.

A failed batch is appended here and forced to disk *before* the retry process releases
its failure-ring slot, so from the moment a sink's cursor passes a failed batch the only
copy of its entries is this file: the checkpoint may move on, a ``kill -9`` of the retry
process (or of the whole tree) loses nothing, and a restarted retry process rebuilds its
heap from here. The heap in memory keeps (due time, sink, spool record) and, while the
``retry.max_bytes`` budget allows, a copy of the batch; beyond it the batch is read back
from disk when it is due.

Segments are append-only files ``<first id, 20 digits>.spool`` (owner-only, 0600, in a
0700 directory). The writer never appends to a segment it did not create in this process,
so a torn tail left by a crash is only ever at the end of an old segment. A segment is
deleted once every batch put in it is done. Ids come from the wall clock (``max(last + 1,
time_ns)``), so neither an id nor a segment name is reused, even after every segment was
deleted.

Record layout (little-endian)::

    0   magic       uint32  0x5053434C ("LCSP")
    4   kind        uint8   1 PUT, 2 DONE, 3 ATTEMPT
    5   reserved    3 bytes
    8   body_len    uint32
    12  crc32       uint32  zlib.crc32 of the body
    16  body

    PUT body:      id uint64, batch_seq int64, attempts int64, first_failure_ns int64,
                   entries int64, sink_len uint16, reason_len uint16, permanent uint8,
                   3 reserved bytes, then sink (UTF-8), reason (UTF-8), batch (the batch
                   slot's bytes exactly as the dispatcher wrote them)
    DONE body:     id uint64                         (delivered, or written to the DLQ)
    ATTEMPT body:  id uint64, attempts int64, reason_len uint16, reason (UTF-8)

A record whose magic, length or checksum is wrong ends the readable part of a torn tail;
in the middle of a segment the reader skips forward to the next record that checks out,
and reports the bytes it skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from logcap.durable import fsync_directory

log = logging.getLogger(__name__)

MAGIC = 0x5053434C
PUT, DONE, ATTEMPT = 1, 2, 3
RECORD = struct.Struct("<IBxxxII")
PUT_HEAD = struct.Struct("<QqqqqHHBxxx")
DONE_BODY = struct.Struct("<Q")
ATTEMPT_HEAD = struct.Struct("<QqH")
SUFFIX = ".spool"
MAX_REASON = 4096


@dataclass
class Spooled:
    """A batch in the spool that is not done yet."""

    id: int
    sink: str
    batch_seq: int
    attempts: int
    first_failure_ns: int
    entries: int
    reason: str
    permanent: bool  # a permanent failure waiting for room in the DLQ
    segment: int  # the id in the segment's name
    offset: int  # of the batch bytes in the segment file
    size: int  # of the batch bytes


class Spool:
    """Append, force to disk, mark done, read back; bounded by ``max_bytes`` on disk."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.wall_ns = wall_ns
        self.live: dict[int, Spooled] = {}
        self._live_in: dict[int, int] = {}  # segment -> batches not done
        self._sizes: dict[int, int] = {}  # segment -> bytes on disk
        self._last_id = 0
        self._current: int | None = None  # segment this process appends to
        self._fd = -1
        self._unsynced = False
        self._new_segment = False
        self.skipped_bytes = 0

    # -- start ---------------------------------------------------------------------------
    def recover(self) -> list[Spooled]:
        """Read every segment; return the batches not done yet, oldest first."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        for segment in self._segments():
            self._sizes[segment] = (self.directory / _name(segment)).stat().st_size
            self._live_in.setdefault(segment, 0)
            self._last_id = max(self._last_id, segment)
            self._replay(segment)
        for segment in list(self._sizes):
            self._delete_if_done(segment)
        return sorted(self.live.values(), key=lambda s: s.id)

    def _segments(self) -> list[int]:
        found = []
        for path in self.directory.iterdir():
            stem = path.name.removesuffix(SUFFIX)
            if path.name.endswith(SUFFIX) and stem.isdigit() and path.is_file():
                found.append(int(stem))
            elif not path.name.endswith(".tmp"):
                log.warning("retry spool: ignoring %s (not a spool segment)", path)
        return sorted(found)

    def _replay(self, segment: int) -> None:
        """Apply every intact record of a segment, reading it in bounded chunks (a
        segment is up to 64 MiB: read whole, it would bloat the process on every start)."""
        path = self.directory / _name(segment)
        size = path.stat().st_size
        with open(path, "rb") as f:
            at = 0
            while at + RECORD.size <= size:
                f.seek(at)
                magic, kind, length, crc = RECORD.unpack(f.read(RECORD.size))
                end = at + RECORD.size + length
                intact = magic == MAGIC and end <= size
                if intact:
                    head, body_crc = _read_body(f, length)
                    intact = body_crc == crc
                if not intact:
                    nxt = _find_magic(f, at + 1, size)
                    if nxt < 0:
                        self.skipped_bytes += size - at
                        if end <= size:  # not just a torn tail
                            log.error("retry spool: %s is damaged after byte %d", segment, at)
                        break
                    log.error("retry spool: skipped %d damaged bytes in %s", nxt - at, segment)
                    self.skipped_bytes += nxt - at
                    at = nxt
                    continue
                self._apply(segment, kind, head, length, at + RECORD.size)
                at = end
        if at < size and at + RECORD.size > size:
            self.skipped_bytes += size - at  # a torn tail shorter than a header

    def _apply(self, segment: int, kind: int, body: bytes, body_len: int, body_at: int) -> None:
        """Apply one record; ``body`` holds at least its first HEAD_KEEP bytes."""
        if kind == PUT:
            ident, seq, attempts, first_ns, entries, sink_len, reason_len, permanent = (
                PUT_HEAD.unpack_from(body)
            )
            at = PUT_HEAD.size
            sink = body[at : at + sink_len].decode("utf-8", "replace")
            at += sink_len
            reason = body[at : at + reason_len].decode("utf-8", "replace")
            at += reason_len
            self._add(
                Spooled(
                    ident, sink, seq, attempts, first_ns, entries, reason, bool(permanent),
                    segment, body_at + at, body_len - at,
                )
            )  # fmt: skip
        elif kind == DONE:
            (ident,) = DONE_BODY.unpack_from(body)
            self._forget(ident)
        elif kind == ATTEMPT:
            ident, attempts, reason_len = ATTEMPT_HEAD.unpack_from(body)
            item = self.live.get(ident)
            if item is not None:
                item.attempts = attempts
                at = ATTEMPT_HEAD.size
                item.reason = body[at : at + reason_len].decode("utf-8", "replace")
        self._last_id = max(self._last_id, DONE_BODY.unpack_from(body)[0])

    # -- writing -------------------------------------------------------------------------
    def fits(self, size: int) -> bool:
        """Whether a batch of ``size`` bytes can be put without passing ``max_bytes``."""
        return self.total_bytes + size + RECORD.size + PUT_HEAD.size + 2 * MAX_REASON <= (
            self.max_bytes
        )

    def put(
        self,
        sink: str,
        batch_seq: int,
        attempts: int,
        first_failure_ns: int,
        entries: int,
        reason: str,
        batch: bytes | memoryview,
        permanent: bool = False,
    ) -> Spooled:
        """Append a batch (durable after :meth:`sync`); OSError if the disk refuses it."""
        ident = max(self._last_id + 1, self.wall_ns())
        sink_b = sink.encode()
        reason_b = reason.encode("utf-8", "replace")[:MAX_REASON]
        head = PUT_HEAD.pack(
            ident, batch_seq, attempts, first_failure_ns, entries, len(sink_b), len(reason_b),
            permanent,
        )  # fmt: skip
        segment, body_at = self._append(PUT, [head, sink_b, reason_b, batch], ident)
        self._last_id = ident
        item = Spooled(
            ident, sink, batch_seq, attempts, first_failure_ns, entries, reason, permanent,
            segment, body_at + len(head) + len(sink_b) + len(reason_b), len(batch),
        )  # fmt: skip
        self._add(item)
        return item

    def attempted(self, item: Spooled, attempts: int, reason: str) -> None:
        """Record another failed attempt of ``item``."""
        reason_b = reason.encode("utf-8", "replace")[:MAX_REASON]
        self._append(ATTEMPT, [ATTEMPT_HEAD.pack(item.id, attempts, len(reason_b)), reason_b])
        item.attempts, item.reason = attempts, reason

    def done(self, item: Spooled) -> None:
        """``item`` was delivered or is in the DLQ: it will not be read again."""
        self._append(DONE, [DONE_BODY.pack(item.id)])
        self._forget(item.id)

    def sync(self) -> None:
        """Force what was appended to disk (and a new segment's name into its directory)."""
        if self._unsynced and self._fd >= 0:
            os.fsync(self._fd)
            if self._new_segment:
                fsync_directory(self.directory)
                self._new_segment = False
            self._unsynced = False

    def read_batch(self, item: Spooled) -> bytes:
        """The batch bytes of ``item``, read back from its segment."""
        with open(self.directory / _name(item.segment), "rb") as f:
            f.seek(item.offset)
            data = f.read(item.size)
        if len(data) != item.size:
            raise OSError(f"retry spool segment {item.segment} is shorter than expected")
        return data

    @property
    def total_bytes(self) -> int:
        """Bytes of every segment on disk."""
        return sum(self._sizes.values())

    def close(self) -> None:
        """Sync and close the current segment."""
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1
            if self._current is not None:
                self._delete_if_done(self._current)

    # -- internals -----------------------------------------------------------------------
    def _append(
        self, kind: int, parts: list[bytes | memoryview], ident: int = 0
    ) -> tuple[int, int]:
        body_len = sum(len(p) for p in parts)
        crc = 0
        for p in parts:
            crc = zlib.crc32(p, crc)
        used = self._sizes.get(self._current or 0, 0)
        if self._fd < 0 or (kind == PUT and used and used + body_len > self.segment_bytes):
            self._roll(ident or max(self._last_id + 1, self.wall_ns()))
        assert self._current is not None
        segment, start = self._current, self._sizes[self._current]
        header = RECORD.pack(MAGIC, kind, body_len, crc)
        try:
            written = os.writev(self._fd, [header, *parts])
            if written != RECORD.size + body_len:
                raise OSError(f"short write to the retry spool ({written} bytes)")
        except OSError:
            os.ftruncate(self._fd, start)  # no torn record in front of the next one
            raise
        self._sizes[segment] = start + written
        self._unsynced = True
        return segment, start + RECORD.size

    def _roll(self, first_id: int) -> None:
        """Start a new segment named after the first id it will hold."""
        previous = self._current
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
        self._last_id = max(self._last_id, first_id - 1)
        path = self.directory / _name(first_id)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._current = first_id
        self._sizes[first_id] = 0
        self._live_in[first_id] = 0
        self._new_segment = True
        if previous is not None:
            self._delete_if_done(previous)

    def _add(self, item: Spooled) -> None:
        self.live[item.id] = item
        self._live_in[item.segment] = self._live_in.get(item.segment, 0) + 1

    def _forget(self, ident: int) -> None:
        item = self.live.pop(ident, None)
        if item is None:
            return
        self._live_in[item.segment] -= 1
        if item.segment == self._current and self._live_in[item.segment] == 0:
            # everything in the open segment is done: free its space now, not at the next
            # roll (a DONE it holds for an older segment's batch may be lost with it: that
            # batch is then delivered once more, never lost)
            os.close(self._fd)
            self._fd, self._current = -1, None
        self._delete_if_done(item.segment)

    def _delete_if_done(self, segment: int) -> None:
        if self._live_in.get(segment, 0) > 0 or (segment == self._current and self._fd >= 0):
            return
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _name(segment)).unlink()
        self._sizes.pop(segment, None)
        self._live_in.pop(segment, None)


def _name(segment: int) -> str:
    return f"{segment:020d}{SUFFIX}"


HEAD_KEEP = PUT_HEAD.size + 0xFFFF + MAX_REASON  # the longest sink name and reason
CHUNK = 1 << 20


def _read_body(f: BinaryIO, length: int) -> tuple[bytes, int]:
    """(the first HEAD_KEEP bytes of a record body, its CRC32), in bounded chunks."""
    head = f.read(min(length, HEAD_KEEP))
    crc = zlib.crc32(head)
    left = length - len(head)
    while left > 0:
        chunk = f.read(min(left, CHUNK))
        if not chunk:
            return head, -1  # shorter than it says: not intact
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    return head, crc


def _find_magic(f: BinaryIO, start: int, size: int) -> int:
    """Offset of the next record magic at or after ``start``, or -1."""
    marker = MAGIC.to_bytes(4, "little")
    at = start
    while at < size:
        f.seek(at)
        chunk = f.read(CHUNK + len(marker) - 1)
        found = chunk.find(marker)
        if found >= 0:
            return at + found
        at += CHUNK
    return -1
