"""``supervisor.watch_config``: reload when the config file changes.

watchdog reports events in the file's directory (editors replace a file by renaming a
new one over it, so the directory is watched, not the inode, and the path is kept as
given: a symlink, a Kubernetes ConfigMap's ``..data`` swap, is followed at every look).
Only a finished write counts: the file closed after writing, or renamed or linked into
place; a write still in progress (however long its pauses) is never read. Then the file
must stay still for ``SETTLE`` seconds, and its bytes must differ from those last
applied (a ``touch`` or a rewrite of the same text is no reload). A missed event (NFS)
is caught by a look every ``POLL`` seconds at a file unchanged for ``QUIET`` seconds. An
invalid file is reported by the reload like any other (logcap/reload.py) and the
running config stays; the same bytes saved again are tried again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger(__name__)
SETTLE = 1.0  # seconds the file must stay unchanged before it is read
POLL = 2.0  # also look this often: a missed event (NFS, a bind mount) is caught
QUIET = 10.0  # ... at a file unchanged this long (a writer may pause mid-file)


class ConfigWatcher(FileSystemEventHandler):
    """Calls ``reload()`` from its own thread once the file settled with new bytes."""

    def __init__(self, path: Path, reload: Callable[[], bool]) -> None:
        self.path = path.absolute()  # not resolved: a symlink's target may be swapped
        self.reload = reload
        self.changed = threading.Event()
        self.stopped = threading.Event()
        self.last_digest = self._digest()
        self.observer = Observer()
        self.thread = threading.Thread(target=self._run, name="config-watch", daemon=True)

    def start(self) -> None:
        self.observer.schedule(self, str(self.path.parent), recursive=False)
        self.observer.start()
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.changed.set()
        self.observer.stop()
        self.observer.join(timeout=5)
        self.thread.join(timeout=5)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent):
            finished = str(event.dest_path) == str(self.path)
        elif isinstance(event, FileClosedEvent | FileCreatedEvent):
            finished = str(event.src_path) == str(self.path)
        else:  # modified: a write may be in progress; the close that ends it follows
            return
        if finished:
            self.changed.set()

    def _digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None  # being replaced, or gone: looked at again when it is back

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _run(self) -> None:
        while not self.stopped.is_set():
            evented = self.changed.wait(POLL)
            self.changed.clear()
            if self.stopped.is_set():
                return
            if not evented and not self._quiet():
                continue
            # still for SETTLE seconds: no event and the same size and mtime
            before = self._stat()
            while not self.stopped.wait(SETTLE):
                if self.changed.is_set():
                    self.changed.clear()
                    before = self._stat()
                    continue
                now = self._stat()
                if now == before:
                    break
                before = now
            digest = self._digest()
            if digest is None or digest == self.last_digest:
                continue
            log.info("config file %s changed: reloading", self.path)
            if self.reload():
                self.last_digest = digest  # refused: the same bytes saved again retry

    def _quiet(self) -> bool:
        """The file has not changed for QUIET seconds (for the polling look)."""
        stat = self._stat()
        return stat is not None and time.time_ns() - stat[0] > QUIET * 1e9
