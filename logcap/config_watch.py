"""``supervisor.watch_config``: reload when the config file changes.

watchdog reports changes in the file's directory (editors replace a file by renaming a
new one over it, so the directory is watched, not the inode). A change is acted on only
once the file has been still for ``SETTLE`` seconds, so a file being written is never
read half-way, and only when its bytes differ from those of the last reload it asked
for (a ``touch`` or a rewrite with the same text is no reload). An invalid file is
reported by the reload like any other (logcap/reload.py) and the running config stays.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)
SETTLE = 1.0  # seconds the file must stay unchanged before it is read
POLL = 2.0  # also look this often: a missed event (NFS, a bind mount) is caught


class ConfigWatcher(FileSystemEventHandler):
    """Calls ``reload()`` from its own thread once the file settled with new bytes."""

    def __init__(self, path: Path, reload: Callable[[], object]) -> None:
        self.path = path.resolve()
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
        touched = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
        if str(self.path) in touched:
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
            self.changed.wait(POLL)
            self.changed.clear()
            if self.stopped.is_set():
                return
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
            self.last_digest = digest
            log.info("config file %s changed: reloading", self.path)
            self.reload()
