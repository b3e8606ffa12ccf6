"""The ``file`` sink: appends each batch's entries to files named by a template.

``format: json`` writes the payload as it is — it already is the file's content — so a
batch costs one ``write`` per output file, straight from shared memory. ``format: text``
decodes the entries of each run of groups once (msgspec) and renders the template.

Files are opened with O_APPEND (never truncated: a restart continues them) and rotated
before a write that would take them past ``max_file_bytes`` or that finds them older
than ``rotate_every``: the current file is renamed to ``<path>.<n>`` with ``n`` one higher
than any existing rotation, and a new one is begun. Compression and ``max_files`` are
applied to rotated files in the background (housekeeper.py).

Other processes may write the same files (a ``logcap dlq replay``, a second sink whose
template names the same file): every write, tail check and rotation happens under an
exclusive ``flock`` of the file (output.py), so no writer ever takes another's batch in
progress for a crash's torn tail, and nobody appends to a file rotated away.

``fsync``: ``batch`` syncs every file written (and the directory of every file created
or rotated) before ``flush`` returns, so the runner acknowledges only what is on disk; a
failed sync fails the batches written to that file since the last flush. ``interval``
syncs at the first flush at least ``fsync_interval`` after the previous sync, and when a
file is rotated or closed. ``never`` leaves it to the OS.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from logcap.dispatch.batch import Batch, Group
from logcap.durable import fsync_directory
from logcap.errors import DeliveryError, Permanent
from logcap.metrics import Counter, CounterBlock, NullBlock
from logcap.sinks._io import classify, write_all
from logcap.sinks.base import Failures
from logcap.sinks.file.config import FileSinkConfig
from logcap.sinks.file.housekeeper import Housekeeper
from logcap.sinks.file.output import cut_torn_tail, lock, names, open_output, unlock
from logcap.sinks.file.rotation import families, highest_number, interrupted, rotated_files
from logcap.sinks.file.text import TextRenderer
from logcap.sinks.template import GroupKey, compile_template, group_key

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
IDLE_CLOSE_SECONDS = 300.0
log = logging.getLogger(__name__)


@dataclass
class _OpenFile:
    fd: int
    size: int
    last_write: float


def path_part(value: str) -> str:
    """``value`` as part of one file name: only letters, digits, '.', '_' and '-', and
    never '.' or '..' (a field's value must not climb out of the directory)."""
    clean = _UNSAFE.sub("_", value)
    return "_" * len(clean) if clean.strip(".") == "" else clean


class FileSink:
    """Writes batches to ``config.path`` rendered per source and time."""

    def __init__(
        self,
        config: FileSinkConfig,
        counters: CounterBlock | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.counters = counters or NullBlock()
        self.clock = clock
        self._files: dict[str, _OpenFile] = {}
        self._paths: dict[tuple[GroupKey, int], str] = {}
        self._timed = "%" in config.path
        self._path_of = compile_template(config.path, "unknown", path_part)
        self._text = TextRenderer(config.text_template) if config.text_template else None
        self._started: dict[str, float] = {}  # path → first opened by this process
        self._numbers: dict[str, int] = {}  # path → its last rotation number
        # fsync bookkeeping: path → indices of the writes (since the last flush) in it
        self._syncing = config.fsync != "never"
        self._dirty: dict[str, list[int]] = {}
        self._dirty_dirs: set[str] = set()
        self._failed: dict[int, DeliveryError] = {}
        self._writes = 0
        self._last_sync = clock()
        self.fsyncs = 0  # fsync calls made for delivered data (files and directories)
        lock = threading.Lock()  # rotation numbering vs. the housekeeper's renames
        self.housekeeper = Housekeeper(config.compression, config.max_files, lock, self.counters)
        self._recover()

    def _recover(self) -> None:
        """Hand the rotated files an earlier run left to the housekeeper at start:
        compressions a crash interrupted, retention, files still to compress."""
        tidying = self.config.compression != "none" or self.config.max_files is not None
        for path in sorted(families(self.config.path)):
            if tidying or interrupted(rotated_files(path)):
                self.housekeeper.submit(path)

    def render(self, group: Group) -> str:
        """The output path for the entries of ``group`` (stamped as its first)."""
        second = group.timestamp_ns // 1_000_000_000 if self._timed else 0
        key = (group_key(group), second)
        path = self._paths.get(key)
        if path is None:
            path = self._path_of(group)
            if self._timed:
                path = time.strftime(path, time.gmtime(second))
            if len(self._paths) > 4096:
                self._paths.clear()
            self._paths[key] = path
        return path

    def write(self, batch: Batch) -> None:
        index = self._writes
        self._writes += 1
        # consecutive groups bound for the same file go out in a single write (groups
        # next to each other in the payload: a batch narrowed to its inputs has gaps)
        run_path, run_start, run_end = "", 0, 0
        for group, start, end in batch.spans():
            path = self.render(group)
            if (path != run_path or start != run_end) and run_end > run_start:
                self._append(run_path, batch.payload[run_start:run_end], index)
                run_start = start
            elif run_end == run_start:
                run_start = start
            run_path = path
            run_end = end
        if run_end > run_start:
            self._append(run_path, batch.payload[run_start:run_end], index)

    def _append(self, path: str, entries: memoryview, index: int) -> None:
        try:
            data = entries if self._text is None else self._text.render(entries)
        except msgspec.ValidationError as exc:  # a bug upstream: retrying will not help
            raise Permanent(f"rendering entries for {path}: {exc}", "rejected") from exc
        try:
            handle = self._locked(path)
            if handle.size and self._rotation_due(path, handle, len(data)):
                self._rotate(path)
                handle = self._locked(path)
            try:
                write_all(handle.fd, data)
            except OSError:
                # a short write before the error (disk full) left part of an entry at the
                # end: cut it off, or the retried batch would be appended to a torn line
                with contextlib.suppress(OSError):
                    os.ftruncate(handle.fd, handle.size)
                raise
            unlock(handle.fd)
        except OSError as exc:
            self._close(path)  # drops the lock; reopen next time: the file may be gone
            raise classify(exc, f"writing {path}") from exc
        handle.size += len(data)
        handle.last_write = self.clock()
        if self._syncing:
            self._dirty.setdefault(path, []).append(index)

    def _rotation_due(self, path: str, handle: _OpenFile, adding: int) -> bool:
        limit = self.config.max_file_bytes
        if limit is not None and handle.size + adding > limit:
            return True
        every = self.config.rotate_every
        return every is not None and self.clock() - self._started[path] >= every

    def _locked(self, path: str) -> _OpenFile:
        """The file ``path`` names, open, under its exclusive lock, ending in a whole
        entry (output.py says why each writer takes the lock)."""
        for _ in range(100):  # bounded: other writers could rotate it away every time
            handle = self._files.get(path) or self._open(path)
            lock(handle.fd)
            if names(path, handle.fd):
                handle.size = cut_torn_tail(handle.fd, path)
                return handle
            self._close(path)  # rotated away or deleted meanwhile: open the path again
            self._started.pop(path, None)  # and its age counts from then
        raise OSError(errno.EAGAIN, "the file is replaced faster than it can be opened", path)

    def _open(self, path: str) -> _OpenFile:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self._syncing and not os.path.exists(path):
            self._dirty_dirs.add(directory)  # the new name must be durable too
        handle = _OpenFile(open_output(path), 0, self.clock())
        self._files[path] = handle
        if path not in self._started:
            if len(self._started) > 4096:  # time-templated paths move on
                self._started = {p: t for p, t in self._started.items() if p in self._files}
            self._started[path] = handle.last_write
        return handle

    def _rotate(self, path: str) -> None:
        """Rename ``path`` away (its lock held), then close it."""
        with self.housekeeper.lock:
            number = max(highest_number(path), self._numbers.get(path, 0)) + 1
            os.rename(path, f"{path}.{number}")
        # closed after the rename: a writer waiting for the lock then finds it renamed
        self._close(path)
        self._numbers[path] = number
        del self._started[path]
        if self._syncing:
            self._dirty_dirs.add(os.path.dirname(path))
        self.counters.add(Counter.ROTATIONS)
        if self.config.compression != "none" or self.config.max_files is not None:
            self.housekeeper.submit(path)

    def _close(self, path: str) -> None:
        handle = self._files.pop(path, None)
        if handle is None:
            return
        if path in self._dirty:
            self._sync(path, handle.fd)
        os.close(handle.fd)

    def _sync(self, path: str, fd: int) -> None:
        """fsync one written file; a failure fails the batches written to it."""
        written = self._dirty.pop(path)
        self.fsyncs += 1
        try:
            os.fsync(fd)
        except OSError as exc:
            error = classify(exc, f"syncing {path}")
            if not written:  # fsync: interval: those batches were acknowledged already
                log.error("%s; entries written before may be lost on power failure", error)
                self.counters.add(Counter.ERRORS)
            for index in written:
                self._failed.setdefault(index, error)

    def _sync_all(self) -> None:
        for path in list(self._dirty):
            self._sync(path, self._files[path].fd)
        for directory in self._dirty_dirs:
            self.fsyncs += 1
            try:
                fsync_directory(directory)
            except OSError as exc:
                log.error("syncing directory %s: %s", directory, exc)
        self._dirty_dirs.clear()
        self._last_sync = self.clock()

    def flush(self) -> Failures:
        """Sync as ``fsync`` says, close files nobody wrote to for a while (time-templated
        paths move on), and report batches whose sync failed."""
        now = self.clock()
        policy = self.config.fsync
        if policy == "batch" or (
            policy == "interval" and now - self._last_sync >= self.config.fsync_interval
        ):
            self._sync_all()
        if policy == "interval":  # interval: acknowledged at once, so no batch to fail
            for indices in self._dirty.values():
                indices.clear()
        for path in [p for p, h in self._files.items() if now - h.last_write > IDLE_CLOSE_SECONDS]:
            self._close(path)
        failed, self._failed = sorted(self._failed.items()), {}
        self._writes = 0
        return failed

    def close(self) -> None:
        """Sync (unless fsync: never) and close every file; stop the housekeeper."""
        if self._syncing:
            self._sync_all()
        for path in list(self._files):
            self._close(path)
        self.housekeeper.close()
