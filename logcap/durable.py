"""Making names durable: after creating, renaming or removing a file, the directory that
holds the name must be fsynced too, or a crash can undo the change even though the file's
own data was synced."""

from __future__ import annotations

import os


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the names created, renamed or removed in ``directory`` durable."""
    fd = os.open(os.fspath(directory) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
