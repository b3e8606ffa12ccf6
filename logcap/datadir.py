"""The agent's ``data_dir``: created owner-only, and locked by the one agent that uses it.

Two agents on one ``data_dir`` (a unit and a hand-started copy) would both ship every new
line and overwrite each other's checkpoints, so ``logcap run`` takes an exclusive
``flock`` on ``data_dir/lock`` for its whole life and writes its pid there; a second start
fails at once, naming that pid. The lock goes with the process (even after ``kill -9``),
so a stale file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from logcap.errors import DataDirLocked

__all__ = ["DataDirLocked", "lock", "prepare"]
LOCK_NAME = "lock"


def prepare(data_dir: str | Path) -> Path:
    """Create ``data_dir`` (0700: it holds log contents in the spool and the DLQ)."""
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def lock(data_dir: str | Path) -> int:
    """Take the data_dir's lock for this process; return the fd to keep open."""
    path = prepare(data_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise DataDirLocked(
            f"another logcap (pid {holder}) is running on data_dir {path.parent}; "
            "stop it first, or give this agent its own data_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
