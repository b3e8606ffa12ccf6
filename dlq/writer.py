"""Appending to the dead letter queue, within its size and age limits.

A record is durable when :meth:`DlqWriter.append` returns (``fsync: always``), or at the
next interval (``interval``), or when the OS decides (``never``); in every case it is in
the kernel, so it survives the process being killed. Only then may the retry process
give up the batch, and only then may its file positions be checkpointed.

An append that raises left nothing behind: a short write or a failed fsync is cut back
to the size before it, so the caller's retry does not write the record twice. The
writer appends only to a segment it created or that has a valid header (segments.py);
a file found without one is left as it is (its records stay readable) and the next
record starts a new segment. Nothing in the directory stops the writer from opening:
stray names and unreadable files are reported and ignored.

Segments leave by ``max_age``, ``when_full: drop_oldest``, ``logcap dlq purge`` (noticed
at the next append or tick) or :meth:`DlqWriter.delete_replayed`, once every record in
them was marked replayed (marks.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from logcap.config import DlqConfig
from logcap.dlq.marks import replayed
from logcap.dlq.record import (
    HEADER_PROBLEMS,
    HEADERLESS,
    UNFINISHED,
    DlqRecord,
    Problem,
    encode_record,
    file_header,
    read_segment,
)
from logcap.dlq.segments import (
    REPLAYED_SUFFIX,
    SUFFIX,
    create_segment,
    dlq_directory,
    ensure_directory,
    highest_number,
    marks_path,
    read_high_water,
    remove_leftovers,
    segment_paths,
    write_high_water,
)
from logcap.errors import DlqFull

__all__ = ["REPLAYED_SUFFIX", "SUFFIX", "DlqWriter", "dlq_directory", "segment_paths"]

log = logging.getLogger(__name__)


@dataclass
class _Segment:
    path: Path
    size: int
    records: int
    newest: float  # wall-clock time of its newest record
    sealed: bool = False  # never appended to (no valid header, or its state is unknown)
    known: bool = True  # its records could be counted (a segment, readable)


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
        ensure_directory(self.dir)
        strays: list[Path] = []
        paths = segment_paths(self.dir, strays)
        for stray in strays:
            log.warning("DLQ: ignoring %s (not a segment name)", stray)
        self.ignored_files = len(strays)  # *.dlq entries that are not segments
        # numbers only grow, even when every segment was deleted: a name reused for new
        # records would inherit marks a sidecar of the old segment may still hold
        self._last_number = highest_number(self.dir)
        if self._last_number > read_high_water(self.dir):
            write_high_water(self.dir, self._last_number)
        for leftover in remove_leftovers(self.dir):
            log.warning("DLQ: removed leftover %s", leftover)
        self.segments = [s for s in map(self._open_segment, paths) if s is not None]
        self._fd: int | None = None
        self._last_sync = clock()
        self._unsynced = False
        self.dropped_records = 0  # deleted by when_full: drop_oldest
        self.expired_records = 0  # deleted by max_age
        self.sync_errors = 0  # failed interval fsyncs (records already handed over)

    def _open_segment(self, path: Path) -> _Segment | None:
        problems: list[Problem] = []
        try:
            count = sum(1 for _ in read_segment(path, problems))
            info = path.stat()
        except OSError as exc:
            log.warning("DLQ %s unreadable (%s); left as it is", path, exc)
            return _Segment(path, 0, 0, self.clock(), sealed=True, known=False)
        for problem in problems:
            log.warning("DLQ %s at byte %d: %s", problem.path, problem.offset, problem.what)
        if problems and problems[0].what == UNFINISHED:  # created by a crash, holds nothing
            path.unlink(missing_ok=True)
            marks_path(path).unlink(missing_ok=True)
            log.warning("DLQ %s removed (it held no record)", path)
            return None
        sealed = bool(problems) and problems[0].what in HEADER_PROBLEMS
        known = not sealed or problems[0].what == HEADERLESS
        return _Segment(path, info.st_size, count, info.st_mtime, sealed, known)

    @property
    def total_bytes(self) -> int:
        """Bytes of every segment."""
        return sum(s.size for s in self.segments)

    @property
    def total_records(self) -> int:
        """Records in every segment."""
        return sum(s.records for s in self.segments)

    def append(self, record: DlqRecord) -> int:
        """Write one record; return its size. Raises :class:`DlqFull` (``block``), or
        OSError with nothing written."""
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
        fd = self._fd_for(current)
        written = os.write(fd, data)
        try:
            if written != len(data):
                raise OSError(f"short write to {current.path}")
            if self.config.fsync == "always":
                os.fsync(fd)
        except OSError:
            self._cut_back(current)
            raise
        current.size += len(data)
        current.records += 1
        current.newest = self.clock()
        self._unsynced = self.config.fsync != "always"
        if not self._unsynced:
            self._last_sync = self.clock()
        return len(data)

    def _cut_back(self, current: _Segment) -> None:
        """Undo a record that is not (known to be) written whole and durable."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, current.size)
        except OSError as exc:
            # the record may stay in the file: a new segment takes the next ones, and a
            # retried append may leave it twice (at least once, never lost)
            log.error("DLQ %s: cannot cut a failed append back (%s)", current.path, exc)
            current.sealed = True
            current.size = os.fstat(self._fd).st_size

    def tick(self) -> None:
        """Periodic work: interval fsync and age expiry (call from the owner's loop)."""
        if (
            self._unsynced
            and self.config.fsync == "interval"
            and self.clock() - self._last_sync >= self.config.fsync_interval
        ):
            try:
                self.sync()
            except OSError as exc:  # the records were handed over already: say so, go on
                self.sync_errors += 1
                self._unsynced = False
                self._last_sync = self.clock()
                log.error("DLQ fsync failed; recent records may be lost on power failure: %s", exc)
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

    def delete_replayed(self) -> int:
        """Delete every segment whose records were all marked replayed (the current one
        too: the next record starts a new segment); return how many records went."""
        self._forget_purged()
        deleted = 0
        for segment in list(self.segments):
            if segment.known and segment.records and len(replayed(segment.path)) >= segment.records:
                deleted += self._delete(segment, "all replayed")
        return deleted

    def _forget_purged(self) -> None:
        """Drop segments ``logcap dlq purge`` removed; never append to an unlinked file."""
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            os.close(self._fd)
            self._fd = None
        self.segments = [segment for segment in self.segments if segment.path.exists()]

    def _current(self, incoming: int) -> _Segment:
        last = self.segments[-1] if self.segments else None
        if (
            last is None
            or last.sealed
            or (last.size + incoming > self.config.segment_bytes and last.records)
        ):
            self._close_fd()
            number = self._last_number + 1
            write_high_water(self.dir, number)  # before the segment: never reused
            self._last_number = number
            path = create_segment(self.dir, number, file_header())
            last = _Segment(path, len(file_header()), 0, self.clock())
            self.segments.append(last)
        return last

    def _fd_for(self, segment: _Segment) -> int:
        if self._fd is None:
            self._fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = None

    def _delete(self, segment: _Segment, why: str = "") -> int:
        if segment is self.segments[-1] and self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.segments.remove(segment)
        segment.path.unlink(missing_ok=True)
        marks_path(segment.path).unlink(missing_ok=True)
        if why:
            log.info("DLQ segment %s deleted: %s", segment.path, why)
        else:
            log.warning("DLQ segment %s deleted with %d records", segment.path, segment.records)
        return segment.records

    def close(self) -> None:
        """Sync and close the current segment."""
        self._close_fd()
