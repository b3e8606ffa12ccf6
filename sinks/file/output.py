"""An output file several writers may append to at once, and cutting a torn tail off it.

The writers of one file can be this sink, a ``logcap dlq replay`` (the same sink code in
another process) and a second file sink whose template names the same file. Each holds
an exclusive ``flock`` on the file while it checks the file's tail, writes a batch, cuts
back a failed write or renames the file away (rotation). So, under the lock, the file
ends where some writer's whole write ended, unless a writer died during its write: the
kernel drops a dead process's lock, and the unterminated tail it left is part of a batch
nobody acknowledged. Only that is cut. A writer that finds, once it holds the lock, that
its descriptor is no longer the file the path names (another writer rotated it away, or
someone deleted it) closes it and opens the path again, so nothing is appended to a file
that was rotated away (and may be compressing or deleted by retention).

The lock is advisory: a program that appends to the file without taking it is not
protected from, and does not protect, the sink's writes.
"""

from __future__ import annotations

import fcntl
import logging
import os

log = logging.getLogger(__name__)


def open_output(path: str) -> int:
    """Open ``path`` for appending, creating it (never truncating)."""
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def lock(fd: int) -> None:
    """Wait for the exclusive lock on the file ``fd`` is open on."""
    fcntl.flock(fd, fcntl.LOCK_EX)


def unlock(fd: int) -> None:
    """Release the lock taken with :func:`lock`."""
    fcntl.flock(fd, fcntl.LOCK_UN)


def names(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file ``fd`` is open on."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def cut_torn_tail(fd: int, path: str) -> int:
    """Cut a partial last entry off the file (its lock held); return the file's size.

    A writer killed during a write(2) leaves the part of the batch copied so far, ending
    in the middle of an entry. That batch was not acknowledged and will be written again;
    appending to the fragment would leave a corrupt line in the middle of the file. Every
    live writer finishes its write before it releases the lock, so under the lock an
    unterminated tail is always such a fragment. (With format: text, a message holding
    newlines spans several lines: a crash inside such an entry can leave its first lines
    behind.)
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while True:
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0 or start == 0:
            keep = start + newline + 1  # 0 when the file holds no newline at all
            log.warning("%s ended in a partial entry (%d bytes): cut off", path, size - keep)
            os.ftruncate(fd, keep)
            return keep
        end = start
