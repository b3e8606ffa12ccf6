"""The dead letter queue's on-disk format: segment files of checksummed records.

Segment file ``<data_dir>/dlq/<16-digit number>.dlq``::

    0     magic        b"LOGCAPDQ"
    8     version      uint32 (1), then 4 reserved bytes
    16    records, back to back:

    record:
    +0    marker       uint32 0x51444C4C ("LLDQ"): lets a reader find the next record
                       after a damaged one
    +4    length       uint32 bytes of body
    +8    crc32        uint32 of body
    +12   body         msgpack of :class:`DlqRecord`

A record is appended with one ``write``; a crash can only tear the last one, which a
reader reports and skips. Damage in the middle costs only the damaged record: the reader
scans forward to the next marker whose checksum holds.

A segment is created with its header (segments.py), but a writer before that rule could
leave a file that misses all or part of it (a crash or a full disk between create and
header write) and then append records to it. A reader still reads those records when
what precedes the first one is a part of the header; a file that begins with anything
else is not a segment and is not read.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

MAGIC = b"LOGCAPDQ"
VERSION = 1
FILE_HEADER = struct.Struct("<8sII")
RECORD_HEADER = struct.Struct("<III")
MARKER = 0x51444C4C
MAX_RECORD = 1 << 30
_MARKER_BYTES = RECORD_HEADER.pack(MARKER, 0, 0)[:4]
TORN = "torn record at the end (crash while writing)"
DAMAGED = "damaged record skipped"
BAD_HEADER = "not a logcap DLQ segment (bad header)"
UNSUPPORTED = "a DLQ segment of an unsupported version; not read"
HEADERLESS = "segment without its header (created during a crash or on a full disk); read anyway"
UNFINISHED = "segment without its header and without records (created during a crash)"
#: problems about a whole file: a writer must not append to it
HEADER_PROBLEMS = frozenset({BAD_HEADER, UNSUPPORTED, HEADERLESS, UNFINISHED})
_CHUNK = 1 << 20


class DlqRecord(msgspec.Struct, kw_only=True):
    """One batch (or the part of one bound for one sink) that could not be delivered."""

    sink: str
    kind: str  # permanent | exhausted | overflow
    reason: str
    attempts: int
    first_failure_ns: int
    written_ns: int
    batch_seq: int
    entries: int
    batch: bytes  # the batch slot bytes as the dispatcher wrote them (meta + NDJSON)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(DlqRecord).decode


def encode_record(record: DlqRecord) -> bytes:
    """Header + body, ready for a single append."""
    body = _encode(record)
    return RECORD_HEADER.pack(MARKER, len(body), zlib.crc32(body)) + body


def file_header() -> bytes:
    """The 16 bytes every segment starts with."""
    return FILE_HEADER.pack(MAGIC, VERSION, 0)


@dataclass
class Problem:
    """Something a reader skipped, to be reported by the caller."""

    path: Path
    offset: int
    what: str


def read_segment(
    path: Path,
    problems: list[Problem] | None = None,
    start: int | None = None,
) -> Iterator[tuple[int, DlqRecord]]:
    """Yield ``(offset, record)`` for every intact record; note what was skipped.

    ``start``: the offset of a record to begin at (one this function yielded before).
    The file is read one record at a time, never whole; what is appended while reading
    is not seen.
    """
    found = problems if problems is not None else []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        at = _first_record(fd, size, path, found)
        if at is None:
            return
        if start is not None:
            at = max(at, start)
        while at < size:
            record, end, torn = _record_at(fd, at, size)
            if record is not None:
                yield at, record
                at = end
                continue
            # Not an intact record. A length that runs past the end is a torn last record
            # only if no record follows: damage to the length field of a record in the
            # middle looks the same, and must not hide every record after it.
            next_at = _find_marker(fd, at + 1, size)
            if next_at < 0:
                found.append(Problem(path, at, TORN if torn else DAMAGED))
                return
            found.append(Problem(path, at, DAMAGED))
            at = next_at
    finally:
        os.close(fd)


def read_record_at(path: Path, offset: int) -> DlqRecord | None:
    """The intact record at ``offset`` of segment ``path``; None if there is none."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _record_at(fd, offset, os.fstat(fd).st_size)[0]
    finally:
        os.close(fd)


def _first_record(fd: int, size: int, path: Path, found: list[Problem]) -> int | None:
    """Where records begin; None (with the problem noted) if the file is not read."""
    head = os.pread(fd, FILE_HEADER.size, 0)
    if len(head) == FILE_HEADER.size and head[:8] == MAGIC:
        if FILE_HEADER.unpack(head)[1] != VERSION:
            found.append(Problem(path, 0, UNSUPPORTED))
            return None
        return FILE_HEADER.size
    first = _find_marker(fd, 0, min(size, FILE_HEADER.size + len(_MARKER_BYTES)))
    prefix = head if first < 0 else head[:first]
    if len(prefix) < FILE_HEADER.size and file_header().startswith(prefix):
        if first < 0:  # nothing but (a part of) the header
            found.append(Problem(path, 0, UNFINISHED))
            return None
        found.append(Problem(path, 0, HEADERLESS))
        return first
    found.append(Problem(path, 0, BAD_HEADER))
    return None


def _record_at(fd: int, at: int, size: int) -> tuple[DlqRecord | None, int, bool]:
    """(record or None, its end, whether a failure looks like a torn last record)."""
    if size - at < RECORD_HEADER.size:
        return None, at, True
    marker, length, crc = RECORD_HEADER.unpack(os.pread(fd, RECORD_HEADER.size, at))
    end = at + RECORD_HEADER.size + length
    if marker != MARKER or length > MAX_RECORD:
        return None, at, False
    if end > size:
        return None, at, True
    body = os.pread(fd, length, at + RECORD_HEADER.size)
    if len(body) != length or zlib.crc32(body) != crc:
        return None, at, False
    try:
        return _decode(body), end, False
    except msgspec.DecodeError:
        return None, at, False


def _find_marker(fd: int, start: int, size: int) -> int:
    """Offset of the first record marker at or after ``start`` (before ``size``), or -1."""
    keep = len(_MARKER_BYTES) - 1  # a marker may straddle two chunks
    at = start
    while at < size:
        chunk = os.pread(fd, min(_CHUNK, size - at), at)
        if not chunk:
            return -1
        hit = chunk.find(_MARKER_BYTES)
        if hit >= 0:
            return at + hit
        if at + len(chunk) >= size:
            return -1
        at += max(len(chunk) - keep, 1)
    return -1
