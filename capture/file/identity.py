"""Knowing a file again: by device and inode, checked against a fingerprint of its start.

A rename keeps the inode, so a renamed (rotated) file keeps its position and is not read
again under its new name. A deleted file's inode may be reused for a new file; the
fingerprint — a CRC32 of the file's first bytes, recorded with how many it covers — tells
the two apart. It covers up to ``fingerprint_bytes`` and is extended while a young file
grows: the start of a log file never changes, so even a short prefix identifies it.
Only an empty file has none (0), and it has no position to lose.
"""

from __future__ import annotations

import os
import zlib

from logcap.dispatch.checkpoint import FilePosition

UNKNOWN = 0


def fingerprint(fd: int, length: int) -> int:
    """``(n << 32) | crc32(first n bytes)`` for the first ``n <= length`` bytes there are;
    UNKNOWN for an empty file."""
    data = os.pread(fd, length, 0)
    return (len(data) << 32) | zlib.crc32(data) if data else UNKNOWN


def covered(value: int) -> int:
    """How many leading bytes a fingerprint covers."""
    return value >> 32


def starts_as(fd: int, value: int) -> bool:
    """Whether the open file ``fd`` still begins with the bytes fingerprint ``value``
    covers (always true for UNKNOWN)."""
    if value == UNKNOWN:
        return True
    length = covered(value)
    data = os.pread(fd, length, 0)
    return len(data) == length and zlib.crc32(data) == value & 0xFFFFFFFF


def matches(saved: FilePosition, dev: int, ino: int, fd: int) -> bool:
    """Whether the open file ``fd`` (``dev``/``ino``) is the file ``saved`` describes."""
    return (saved.dev, saved.ino) == (dev, ino) and starts_as(fd, saved.fingerprint)
