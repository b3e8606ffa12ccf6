"""Knowing a file again: by device and inode, checked against a fingerprint of its start.

A rename keeps the inode, so a renamed (rotated) file keeps its position and is not read
again under its new name. A deleted file's inode may be reused for a new file; the
fingerprint — a CRC32 of the first ``fingerprint_bytes`` bytes, recorded with the length it
covers — tells the two apart. A file shorter than that has no fingerprint yet (0) and is
known by device and inode alone, the only evidence there is.
"""

from __future__ import annotations

import os
import zlib

from logcap.dispatch.checkpoint import FilePosition

UNKNOWN = 0


def fingerprint(fd: int, length: int) -> int:
    """``(length << 32) | crc32(first length bytes)``, or UNKNOWN if the file is shorter."""
    data = os.pread(fd, length, 0)
    if len(data) < length:
        return UNKNOWN
    return (length << 32) | zlib.crc32(data)


def matches(saved: FilePosition, dev: int, ino: int, fd: int) -> bool:
    """Whether the open file ``fd`` (``dev``/``ino``) is the file ``saved`` describes."""
    if (saved.dev, saved.ino) != (dev, ino):
        return False
    if saved.fingerprint == UNKNOWN:
        return True
    length = saved.fingerprint >> 32
    data = os.pread(fd, length, 0)
    return len(data) == length and zlib.crc32(data) == saved.fingerprint & 0xFFFFFFFF
