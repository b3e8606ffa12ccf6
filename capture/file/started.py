"""The durable note that a source has run (``data_dir/started/<source>``): ``read_from:
end`` applies to a source's first run only, and a checkpoint alone cannot tell whether
there was one (a run killed before its first checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

from logcap.durable import fsync_directory


def mark_started(marker: Path) -> None:
    """Durably record that a source has run: an empty file, fsynced, and every directory
    entry that leads to it (the directories this call created included) fsynced too."""
    created = _make_dirs(marker.parent)
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    # the marker's own entry, then the entry of each directory created for it (innermost
    # first): a crash must not leave a marker whose directory is not on disk
    for directory in (marker.parent, *(d.parent for d in created)):
        fsync_directory(directory)


def _make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents (owner-only); return those created,
    innermost first."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)
    return missing
