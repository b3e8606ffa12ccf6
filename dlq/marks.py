"""Which DLQ records were replayed: a sidecar file per segment, ``<segment>.replayed``.

The sidecar is a sequence of little-endian uint64 record offsets, appended and fsynced
after each successful replay, so a second replay skips what the first delivered even if
it was interrupted. A torn final entry (fewer than 8 bytes) is ignored.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from logcap.dlq.writer import REPLAYED_SUFFIX

_OFFSET = struct.Struct("<Q")


def marks_path(segment: Path) -> Path:
    """The sidecar of ``segment``."""
    return segment.with_name(segment.name + REPLAYED_SUFFIX)


def replayed(segment: Path) -> set[int]:
    """Offsets of the records of ``segment`` already replayed."""
    try:
        data = marks_path(segment).read_bytes()
    except FileNotFoundError:
        return set()
    whole = len(data) - len(data) % _OFFSET.size
    return {offset for (offset,) in _OFFSET.iter_unpack(data[:whole])}


def mark_replayed(segment: Path, offset: int) -> None:
    """Record durably that the record at ``offset`` was replayed."""
    fd = os.open(marks_path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, _OFFSET.pack(offset))
        os.fsync(fd)
    finally:
        os.close(fd)
