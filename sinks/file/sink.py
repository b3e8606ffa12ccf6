"""The ``file`` sink: appends each batch's NDJSON to files named by a template.

The payload is already the file's content, so a batch costs one ``write`` per output
file, straight from shared memory. Files are opened with O_APPEND (never truncated: a
restart continues them) and rotated by size: the current file is renamed to
``<path>.<n>`` with ``n`` one higher than any existing rotation, and a new one is begun.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass

from logcap.dispatch.batch import Batch
from logcap.metrics import Counter, CounterBlock, NullBlock
from logcap.sinks._io import classify, write_all
from logcap.sinks.base import Failures
from logcap.sinks.file.config import FileSinkConfig

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
IDLE_CLOSE_SECONDS = 300.0
log = logging.getLogger(__name__)


@dataclass
class _OpenFile:
    fd: int
    size: int
    last_write: float


def _cut_torn_tail(fd: int, path: str) -> int:
    """Cut a partial last entry off; return the file's size.

    A sink killed during a write(2) leaves the part of the batch copied so far, ending
    in the middle of an entry. That batch was not acknowledged and will be written again;
    appending it to the fragment would leave a corrupt line in the middle of the file.
    The sink owns its output, so an unterminated tail is always such a fragment.
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


class FileSink:
    """Writes NDJSON batches to ``config.path`` rendered per source and time."""

    def __init__(self, config: FileSinkConfig, counters: CounterBlock | None = None) -> None:
        self.config = config
        self.counters = counters or NullBlock()
        self._files: dict[str, _OpenFile] = {}
        self._paths: dict[tuple[str, int], str] = {}
        self._timed = "%" in config.path

    def render(self, source: str, timestamp_ns: int) -> str:
        """The output path for entries of ``source`` stamped ``timestamp_ns``."""
        second = timestamp_ns // 1_000_000_000 if self._timed else 0
        key = (source, second)
        path = self._paths.get(key)
        if path is None:
            path = self.config.path.replace("{source}", _UNSAFE.sub("_", source))
            if self._timed:
                path = time.strftime(path, time.gmtime(second))
            if len(self._paths) > 4096:
                self._paths.clear()
            self._paths[key] = path
        return path

    def write(self, batch: Batch) -> None:
        # consecutive groups bound for the same file go out in a single write
        run_path, run_start, run_end = "", 0, 0
        offset = 0
        for group in batch.meta.groups:
            path = self.render(group.source, group.timestamp_ns)
            if path != run_path and run_end > run_start:
                self._append(run_path, batch.payload[run_start:run_end])
                run_start = offset
            run_path = path
            offset += group.nbytes
            run_end = offset
        if run_end > run_start:
            self._append(run_path, batch.payload[run_start:run_end])

    def _append(self, path: str, data: memoryview) -> None:
        try:
            handle = self._files.get(path) or self._open(path)
            limit = self.config.max_file_bytes
            if limit is not None and handle.size and handle.size + len(data) > limit:
                handle = self._rotate(path, handle)
            before = os.fstat(handle.fd).st_size  # not handle.size: replay may append too
            try:
                write_all(handle.fd, data)
            except OSError:
                # a short write before the error (disk full) left part of an entry at the
                # end: cut it off, or the retried batch would be appended to a torn line
                with contextlib.suppress(OSError):
                    os.ftruncate(handle.fd, before)
                raise
        except OSError as exc:
            self._forget(path)  # reopen next time: the file may have been moved or removed
            raise classify(exc, f"writing {path}") from exc
        handle.size += len(data)
        handle.last_write = time.monotonic()

    def _open(self, path: str) -> _OpenFile:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        handle = _OpenFile(fd, _cut_torn_tail(fd, path), time.monotonic())
        self._files[path] = handle
        return handle

    def _rotate(self, path: str, handle: _OpenFile) -> _OpenFile:
        os.close(handle.fd)
        del self._files[path]
        directory, base = os.path.split(path)
        pattern = re.compile(re.escape(base) + r"\.(\d+)$")
        taken = [
            int(m.group(1)) for name in os.listdir(directory or ".") if (m := pattern.match(name))
        ]
        os.rename(path, f"{path}.{max(taken, default=0) + 1}")
        self.counters.add(Counter.ROTATIONS)
        return self._open(path)

    def _forget(self, path: str) -> None:
        handle = self._files.pop(path, None)
        if handle is not None:
            os.close(handle.fd)

    def flush(self) -> Failures:
        """Close files nobody wrote to for a while (time-templated paths move on); every
        write was complete when it returned."""
        now = time.monotonic()
        for path in [p for p, h in self._files.items() if now - h.last_write > IDLE_CLOSE_SECONDS]:
            self._forget(path)
        return []

    def close(self) -> None:
        """Close every file."""
        for path in list(self._files):
            self._forget(path)
