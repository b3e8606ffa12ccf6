"""Which files a file source reads: glob expansion plus change notifications.

Globs are re-expanded every ``glob_interval``; with ``watch: true`` a watchdog observer
(inotify on Linux) on each pattern's fixed directory prefix wakes the collector at once
when something is created or written there, so new data and new files are noticed in
milliseconds while the polling loop remains the safety net.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import stat
import threading
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)
_MAGIC = set("*?[")


def fixed_root(pattern: str) -> tuple[str, bool]:
    """The directory before the first wildcard, and whether matches may lie deeper."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if _MAGIC & set(part):
            return str(Path(*fixed)) if fixed else "/", True
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "/", False


class FileFinder:
    """Expands include patterns, minus exclude patterns, to regular files."""

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self.include = include
        self.exclude = exclude

    def excluded(self, path: str) -> bool:
        """True if ``path`` matches an exclude pattern (``*`` also crosses '/')."""
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.exclude)

    def wanted(self, path: str) -> bool:
        """True if ``path`` matches an include pattern (as the scan would list it) and no
        exclude pattern; for a path that need not exist any more."""
        parts = Path(path).parts
        return not self.excluded(path) and any(
            _glob_match(Path(pattern).parts, parts) for pattern in self.include
        )

    def scan(self) -> list[str]:
        """Every matching regular file, sorted."""
        found: set[str] = set()
        for pattern in self.include:
            for path in glob.iglob(pattern, recursive=True):
                if path in found or self.excluded(path):
                    continue
                try:
                    if stat.S_ISREG(os.stat(path).st_mode):
                        found.add(path)
                except OSError:
                    continue
        return sorted(found)


def _glob_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Glob matching by path component: ``**`` is any number of components (none too)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], pattern[0])
        and _glob_match(pattern[1:], parts[1:])
    )


class _Wake(FileSystemEventHandler):
    def __init__(self, watcher: ChangeWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("created", "moved", "deleted"):
            self.watcher.layout_changed = True  # a plain flag: set here, cleared by the loop
            self.watcher.changed.set()
        elif kind == "modified":
            self.watcher.changed.set()


class ChangeWatcher:
    """Sets ``changed`` when a file under the patterns' directories is written, created,
    moved or deleted, and ``layout_changed`` for the last three (time to re-glob)."""

    def __init__(self, include: list[str]) -> None:
        self.changed = threading.Event()
        self.layout_changed = False
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._include = include

    def start(self) -> None:
        """Start watching the roots that exist (missing ones are left to polling)."""
        observer = Observer()
        handler = _Wake(self)
        roots: dict[str, bool] = {}
        for pattern in self._include:
            root, deep = fixed_root(pattern)
            roots[root] = roots.get(root, False) or deep
        for root, deep in roots.items():
            if os.path.isdir(root):
                try:
                    observer.schedule(handler, root, recursive=deep)
                except OSError as exc:  # e.g. inotify watch limit: polling still works
                    log.warning("cannot watch %s (%s); relying on polling", root, exc)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        """Stop the observer thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None
