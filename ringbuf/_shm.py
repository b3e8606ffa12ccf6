"""Shared-memory segments: create, attach, unlink, and sweep the leftovers of dead runs.

Segments are named ``logcap-<pid>-<token>-<role>`` where ``pid`` is the supervisor that
created them. A supervisor that dies by ``kill -9`` cannot unlink its segments, so the
next one removes every ``logcap-*`` segment whose creator pid is no longer alive.

The stdlib ``resource_tracker`` is kept out of the way on purpose: in Python 3.11 it
unlinks a segment when *any* process that merely attached to it exits, which would pull
the rings out from under the rest of the pipeline. The supervisor owns the lifetime.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIX = "logcap-"


@contextlib.contextmanager
def _untracked() -> Iterator[None]:
    original = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        yield
    finally:
        resource_tracker.register = original


class Segment(shared_memory.SharedMemory):
    """A SharedMemory whose ``close`` tolerates views still in use.

    Long-lived processes keep views (cursors, slots) for their whole life; at exit the
    stdlib's ``__del__`` would raise BufferError for them. The kernel unmaps anyway.
    """

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            super().close()


def create(name: str, size: int) -> Segment:
    """Create a zero-filled, owner-only (0600) segment of ``size`` bytes."""
    with _untracked():
        return Segment(name=name, create=True, size=size)


def attach(name: str) -> Segment:
    """Attach to an existing segment without registering it for cleanup."""
    with _untracked():
        return Segment(name=name)


def buffer(shm: shared_memory.SharedMemory) -> memoryview:
    """The segment's bytes (typeshed says Optional; it is None only after ``close``)."""
    if shm.buf is None:
        raise ValueError(f"segment {shm.name!r} is closed")
    return shm.buf


def unlink(name: str) -> None:
    """Remove a segment by name; a missing one is not an error."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SHM_DIR / name.lstrip("/"))


def run_prefix(pid: int, token: str) -> str:
    """The name prefix of every segment belonging to one run."""
    return f"{PREFIX}{pid}-{token}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink the segments of runs whose supervisor is gone; return their names."""
    removed: list[str] = []
    for path in shm_dir.glob(f"{PREFIX}*"):
        pid_text = path.name[len(PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path.name)
    return removed
