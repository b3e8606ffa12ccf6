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
"""

from __future__ import annotations

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
) -> Iterator[tuple[int, DlqRecord]]:
    """Yield ``(offset, record)`` for every intact record; note what was skipped."""
    data = path.read_bytes()
    found = problems if problems is not None else []
    if len(data) < FILE_HEADER.size or FILE_HEADER.unpack_from(data)[0] != MAGIC:
        found.append(Problem(path, 0, "not a logcap DLQ segment (bad header)"))
        return
    at = FILE_HEADER.size
    while at < len(data):
        torn = len(data) - at < RECORD_HEADER.size
        if not torn:
            marker, length, crc = RECORD_HEADER.unpack_from(data, at)
            end = at + RECORD_HEADER.size + length
            torn = marker == MARKER and length <= MAX_RECORD and end > len(data)
            body = data[at + RECORD_HEADER.size : end]
            if marker == MARKER and not torn and zlib.crc32(body) == crc:
                try:
                    yield at, _decode(body)
                    at = end
                    continue
                except msgspec.DecodeError:
                    pass
        # Not an intact record. A length that runs past the end is a torn last record
        # only if no record follows: damage to the length field of a record in the
        # middle looks the same, and must not hide every record after it.
        next_at = data.find(_MARKER_BYTES, at + 1)
        if next_at < 0:
            found.append(Problem(path, at, TORN if torn else DAMAGED))
            return
        found.append(Problem(path, at, DAMAGED))
        at = next_at
