"""Appending to the dead letter queue, within its size and age limits.

A record is durable when :meth:`DlqWriter.append` returns (``fsync: always``), or at the
next interval (``interval``), or when the OS decides (``never``); in every case it is in
the kernel, so it survives the process being killed. Only then may the retry process
give up the batch, and only then may its file positions be checkpointed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from logcap.config import DlqConfig
from logcap.dlq.record import DlqRecord, Problem, encode_record, file_header, read_segment
from logcap.errors import DlqFull

log = logging.getLogger(__name__)
SUFFIX = ".dlq"
REPLAYED_SUFFIX = ".replayed"


def dlq_directory(data_dir: str | os.PathLike[str]) -> Path:
    """Where the dead letter queue's segments live."""
    return Path(data_dir) / "dlq"


def segment_paths(directory: Path) -> list[Path]:
    """Segments oldest first (their names are increasing numbers)."""
    return sorted(directory.glob(f"*{SUFFIX}"))


@dataclass
class _Segment:
    path: Path
    size: int
    records: int
    newest: float  # wall-clock time of its newest record


class DlqWriter:
    """Appends records to the newest segment; enforces ``max_bytes`` and ``max_age``."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        config: DlqConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dir = Path(directory)
        self.config = config
        self.clock = clock
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segments: list[_Segment] = []
        for path in segment_paths(self.dir):
            problems: list[Problem] = []
            count = sum(1 for _ in read_segment(path, problems))
            for problem in problems:
                log.warning("DLQ %s at byte %d: %s", problem.path, problem.offset, problem.what)
            self.segments.append(_Segment(path, path.stat().st_size, count, path.stat().st_mtime))
        # numbers only grow while we run, even when every segment was deleted: a name
        # reused for new records would inherit a concurrent replay's marks of the old one
        self._last_number = int(self.segments[-1].path.stem) if self.segments else 0
        self._fd: int | None = None
        self._last_sync = clock()
        self._unsynced = False
        self.dropped_records = 0  # deleted by when_full: drop_oldest
        self.expired_records = 0  # deleted by max_age

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def total_records(self) -> int:
        return sum(s.records for s in self.segments)

    def append(self, record: DlqRecord) -> int:
        """Write one record; return its size. Raises :class:`DlqFull` (``block``)."""
        data = encode_record(record)
        self._forget_purged()
        self.expire()
        too_big = len(file_header()) + len(data) > self.config.max_bytes
        while self.total_bytes + len(data) > self.config.max_bytes:
            # drop_oldest may drop the current segment too (segment_bytes may equal
            # max_bytes); only a record larger than the whole DLQ cannot be written,
            # and deleting everything for it would be a loss for nothing
            if self.config.when_full == "block" or not self.segments or too_big:
                raise DlqFull(
                    f"dead letter queue at {self.total_bytes} of {self.config.max_bytes} bytes"
                )
            self.dropped_records += self._delete(self.segments[0])
        current = self._current(len(data))
        written = os.write(self._fd_for(current), data)
        if written != len(data):  # a short write: the record is torn; never leave it so
            os.ftruncate(self._fd_for(current), current.size)
            raise OSError(f"short write to {current.path}")
        current.size += len(data)
        current.records += 1
        current.newest = self.clock()
        self._unsynced = True
        if self.config.fsync == "always":
            self.sync()
        return len(data)

    def tick(self) -> None:
        """Periodic work: interval fsync and age expiry (call from the owner's loop)."""
        if (
            self._unsynced
            and self.config.fsync == "interval"
            and self.clock() - self._last_sync >= self.config.fsync_interval
        ):
            self.sync()
        self._forget_purged()
        self.expire()

    def sync(self) -> None:
        """Force what was appended to disk."""
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
        self._unsynced = False
        self._last_sync = self.clock()

    def expire(self) -> None:
        """Delete segments whose newest record is older than ``max_age``."""
        horizon = self.clock() - self.config.max_age
        while self.segments and self.segments[0].newest < horizon:
            self.expired_records += self._delete(self.segments[0])

    def _forget_purged(self) -> None:
        """Drop segments ``logcap dlq purge`` removed; never append to an unlinked file."""
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            os.close(self._fd)
            self._fd = None
        self.segments = [segment for segment in self.segments if segment.path.exists()]

    def _current(self, incoming: int) -> _Segment:
        last = self.segments[-1] if self.segments else None
        if last is None or (last.size + incoming > self.config.segment_bytes and last.records):
            if self._fd is not None:
                self.sync()
                os.close(self._fd)
                self._fd = None
            self._last_number += 1
            path = self.dir / f"{self._last_number:016d}{SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            os.write(fd, file_header())
            os.fsync(fd)
            self._fsync_dir()
            self._fd = fd
            last = _Segment(path, len(file_header()), 0, self.clock())
            self.segments.append(last)
        return last

    def _fd_for(self, segment: _Segment) -> int:
        if self._fd is None:
            self._fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        return self._fd

    def _delete(self, segment: _Segment) -> int:
        if segment is self.segments[-1] and self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.segments.remove(segment)
        segment.path.unlink(missing_ok=True)
        segment.path.with_name(segment.path.name + REPLAYED_SUFFIX).unlink(missing_ok=True)
        log.warning("DLQ segment %s deleted with %d records", segment.path, segment.records)
        return segment.records

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Sync and close the current segment."""
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
