"""Which DLQ records were replayed: a sidecar file per segment, ``<segment>.replayed``.

The sidecar is a sequence of little-endian uint64 record offsets, appended and fsynced
after each successful replay, so a second replay skips what the first delivered even if
it was interrupted. A torn final entry (fewer than 8 bytes) is ignored, and cut off
before the next one is appended.

A sidecar belongs to the one segment that ever had its name: segment numbers are never
reused (segments.py), so a sidecar that outlived its segment marks nothing, and is removed
by the next writer to open the directory.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from logcap.dlq.segments import marks_path

__all__ = ["mark_replayed", "marks_path", "replayed"]

_OFFSET = struct.Struct("<Q")


def replayed(segment: Path) -> set[int]:
    """Offsets of the records of ``segment`` already replayed."""
    try:
        data = marks_path(segment).read_bytes()
    except FileNotFoundError:
        return set()
    whole = len(data) - len(data) % _OFFSET.size
    return {offset for (offset,) in _OFFSET.iter_unpack(data[:whole])}


def mark_replayed(segment: Path, offset: int) -> bool:
    """Record durably that the record at ``offset`` was replayed. False if the segment
    was deleted meanwhile (max_age, drop_oldest, purge): then no sidecar is left."""
    path = marks_path(segment)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        torn = os.fstat(fd).st_size % _OFFSET.size
        if torn:  # a crash tore the last entry: later ones must stay aligned
            os.ftruncate(fd, os.fstat(fd).st_size - torn)
        os.write(fd, _OFFSET.pack(offset))
        os.fsync(fd)
    finally:
        os.close(fd)
    if not segment.exists():  # deleted while this record was being replayed
        path.unlink(missing_ok=True)
        return False
    return True
