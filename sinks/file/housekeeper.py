"""After a rotation: finish what a crash interrupted, apply ``max_files``, compress.

Runs in one background thread of the sink process, so compressing a large rotated file
does not hold up delivery (zlib and zstd release the GIL while they work). Each path
handed over is tidied as a whole, so work that failed once (a full disk) is done again
at the path's next rotation or the sink's next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from logcap.metrics import Counter, CounterBlock, NullBlock
from logcap.sinks.file.compress import Busy, Interrupted, compress_file, compressing
from logcap.sinks.file.rotation import SUFFIXES, Rotated, expired, rotated_files

log = logging.getLogger(__name__)


class Housekeeper:
    """Tidies the rotated files of output paths, one path at a time, in a thread."""

    def __init__(
        self,
        compression: str,
        max_files: int | None,
        lock: threading.Lock,
        counters: CounterBlock | None = None,
    ) -> None:
        self.compression = compression
        self.max_files = max_files
        self.lock = lock  # held while rotated names change: the sink numbers rotations
        # its own words of the sink's block (this thread is their one writer)
        self.counters = counters or NullBlock()
        self._pending: list[str] = []
        self._busy = False
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def compressed(self) -> int:
        """Rotated files compressed."""
        return self.counters.get(Counter.FILES_COMPRESSED)

    @property
    def deleted(self) -> int:
        """Rotated files deleted beyond max_files."""
        return self.counters.get(Counter.FILES_DELETED)

    @property
    def failures(self) -> int:
        """Tidying runs that failed (retried with the next rotation or start)."""
        return self.counters.get(Counter.HOUSEKEEPING_FAILURES)

    def submit(self, path: str) -> None:
        """Tidy the rotated files of ``path`` soon."""
        with self._changed:
            if path not in self._pending:
                self._pending.append(path)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="file-sink-housekeeper", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything submitted is done; False if ``timeout`` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self) -> None:
        """Stop, abandoning a compression in progress (the next start redoes it)."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
                self._changed.wait_for(lambda: self._pending or self._stop.is_set())
                if self._stop.is_set():
                    return
                path = self._pending.pop(0)
                self._busy = True
            try:
                self.tidy(path)
            except Interrupted:
                return
            except OSError as exc:
                self.counters.add(Counter.HOUSEKEEPING_FAILURES)
                log.warning("tidying rotated files of %s: %s (retried later)", path, exc)
            except Exception:  # a bug must not stop tidying for good, nor the sink
                self.counters.add(Counter.HOUSEKEEPING_FAILURES)
                log.exception("tidying rotated files of %s failed (retried later)", path)

    def tidy(self, path: str) -> None:
        """Clean up after crashes, delete beyond ``max_files``, compress the rest."""
        with self.lock:
            files = rotated_files(path)
        finished = {(r.n, r.ext) for r in files if not r.tmp}
        for rotated in files:
            if rotated.tmp and (rotated.n, "") in finished:
                if not compressing(f"{path}.{rotated.n}"):  # not another process's work in progress
                    self._delete(rotated)  # an interrupted compression: the original is intact
            elif not rotated.tmp and not rotated.ext and finished & compressed_forms(rotated):
                self._delete(rotated)  # compressed and renamed; only the unlink was missed
        if self.max_files is not None:
            for rotated in expired(rotated_files(path), self.max_files):
                self._delete(rotated)
                self.counters.add(Counter.FILES_DELETED)
        if self.compression == "none":
            return
        for rotated in rotated_files(path):
            if not rotated.tmp and not rotated.ext:
                try:
                    compress_file(rotated.path, self.compression, self._stop, self.lock)
                except (FileNotFoundError, Busy):
                    continue  # gone meanwhile, or another process is compressing it
                self.counters.add(Counter.FILES_COMPRESSED)

    @staticmethod
    def _delete(rotated: Rotated) -> None:
        with contextlib.suppress(FileNotFoundError):  # already gone: what deleting is for
            os.unlink(rotated.path)


def compressed_forms(rotated: Rotated) -> set[tuple[int, str]]:
    """The (n, ext) keys a compressed copy of ``rotated`` would have."""
    return {(rotated.n, ext) for ext in SUFFIXES.values()}
