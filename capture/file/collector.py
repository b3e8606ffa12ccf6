"""The file source's collector process: discover files, tail them, publish blocks."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from logcap.capture.file.config import FileSourceConfig, multiline_rule
from logcap.capture.file.discovery import ChangeWatcher, FileFinder
from logcap.capture.file.encoding import line_codec
from logcap.capture.file.entries import FileEntries
from logcap.capture.file.identity import matches
from logcap.capture.file.recover import find_unfinished, publish_forget
from logcap.capture.file.started import mark_started
from logcap.capture.file.tailer import FileTailer
from logcap.capture.pipeline.engine import Processor
from logcap.capture.ratelimit import TokenBucket
from logcap.dispatch.checkpoint import FilePosition
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Producer

log = logging.getLogger(__name__)
CLOSED_FILES_REMEMBERED = 4096
# a rotated-away file whose last line has had no newline for this long gets it sent as is
RETIRED_TAIL_AFTER = 5.0
# a file replaced at its path or removed stays open this long even once read to its end:
# a program writes on to its rotated log until it reopens it (logrotate's postrotate
# signal), and a name the patterns miss leaves us no other way to find those lines
RETIRE_GRACE = 5.0


@dataclass
class _Retired:
    """When a tailer was retired, and since when its file has had its current size."""

    since: float
    size: int
    size_since: float


class FileCollector:
    """Tails every file of one ``file`` source into that source's ring."""

    def __init__(
        self,
        name: str,
        config: FileSourceConfig,
        producer: Producer,
        counters: CounterBlock,
        checkpoints: dict[tuple[int, int], FilePosition],
        should_stop: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        started_marker: Path | None = None,
        processor: Processor | None = None,
    ) -> None:
        self.name = name
        # read_from: end applies only to the very first run of a source. Whether there was
        # one is kept on disk before anything is read: a checkpoint alone cannot tell (a
        # run killed before its first checkpoint would otherwise skip to the end again).
        self.first_run = not checkpoints if started_marker is None else not started_marker.exists()
        if started_marker is not None and self.first_run:
            mark_started(started_marker)
        self.config = config
        self.producer = producer
        self.counters = counters
        self.checkpoints = checkpoints
        self.should_stop = should_stop
        self.clock = clock
        self.finder = FileFinder(config.include, config.exclude)
        self.codec = line_codec(config.encoding)
        self.multiline = multiline_rule(config)
        self.watcher = ChangeWatcher(config.include) if config.watch else None
        self.tailers: dict[str, FileTailer] = {}
        self.retiring: list[FileTailer] = []  # replaced or deleted, read to their end
        self._retired: dict[int, _Retired] = {}  # id(tailer) -> its retirement clocks
        # where files we stopped tailing ended: a listing taken mid-rotation can miss a
        # file, and when it shows up again it must not be read again from its start
        self.closed: OrderedDict[tuple[int, int], FilePosition] = OrderedDict()
        # checkpoint entries of files gone for good, to be dropped (capture/file/recover.py)
        self.forgets: list[FilePosition] = []
        self._next_scan = 0.0
        self.limiter = None if config.rate_limit is None else TokenBucket(config.rate_limit)
        # with pipelines, blocks become processed entries here (capture/file/entries.py)
        self.entries = (
            None
            if processor is None
            else FileEntries(name, config, processor, counters, socket.gethostname())
        )

    def _start_position(self, tailer: FileTailer, initial: bool) -> int:
        key = (tailer.dev, tailer.ino)
        saved = self.closed.pop(key, None) or self.checkpoints.get(key)
        if saved is not None and matches(saved, tailer.dev, tailer.ino, tailer.fd):
            size = tailer.size()
            return int(saved.offset) if saved.offset <= size else 0
        # Not a checkpointed file (none, or a new file on a reused inode). read_from: end
        # applies on the source's first run only, to the files already there: later, and
        # on any restart, a file we do not know appeared while we were not looking, and
        # is read whole, or its first lines would be lost.
        if initial and self.config.read_from == "end" and self.first_run:
            tailer.unrecorded = True
            return tailer.size()
        return 0

    def _position(self, tailer: FileTailer) -> FilePosition:
        return FilePosition(
            self.name, tailer.path, tailer.dev, tailer.ino, tailer.position, tailer.fingerprint
        )

    def _remember(self, tailer: FileTailer) -> None:
        self.closed[(tailer.dev, tailer.ino)] = self._position(tailer)
        while len(self.closed) > CLOSED_FILES_REMEMBERED:
            self.closed.popitem(last=False)

    def _known(self, dev: int, ino: int) -> FileTailer | None:
        """The tailer already reading this file under some name, if any."""
        for tailer in (*self.tailers.values(), *self.retiring):
            if (tailer.dev, tailer.ino) == (dev, ino):
                return tailer
        return None

    def _too_old(self, st: os.stat_result) -> bool:
        horizon = self.config.ignore_older
        return horizon is not None and st.st_mtime < time.time() - horizon

    def rescan(self, initial: bool = False) -> None:
        """Open new matches; follow renamed files; retire files replaced or removed."""
        found = self.finder.scan()
        raced = False
        for path in found:
            try:
                st = os.stat(path)
            except OSError:
                continue
            current = self.tailers.get(path)
            if current is not None:
                if (st.st_dev, st.st_ino) == (current.dev, current.ino):
                    continue
                self._retire(self.tailers.pop(path))  # rotated: drain the old one
            known = self._known(st.st_dev, st.st_ino)
            if known is not None:  # renamed (rotated away) but still matching: same position
                if known in self.retiring:
                    self.retiring.remove(known)
                    self._retired.pop(id(known), None)
                for old_path, tailer in list(self.tailers.items()):
                    if tailer is known:
                        del self.tailers[old_path]
                known.rename(path)
                self.tailers[path] = known
                continue
            if self._too_old(st) and (st.st_dev, st.st_ino) not in self.checkpoints:
                continue  # ignore_older: looked at again on every scan, in case it is written
            opened = self._open(path)
            if opened is None:
                continue
            if (opened.dev, opened.ino) != (st.st_dev, st.st_ino):
                # renamed between the stat and the open: what is at ``path`` now may be a
                # file already tailed under another name (a second tailer would read it
                # again from its start), so this name waits for the next scan, right away
                opened.close()
                raced = True
                continue
            opened.position = self._start_position(opened, initial)
            self.tailers[path] = opened
        for path in set(self.tailers) - set(found):
            self._retire(self.tailers.pop(path))
        if initial:
            self._recover()
            log.info("%s", self.first_scan_summary())
        self.counters.set(Counter.FILES_WATCHED, len(self.tailers))
        self._next_scan = self.clock() + (0.0 if raced else self.config.glob_interval)

    def first_scan_summary(self, shown: int = 3) -> str:
        """What the operator learns after the first scan: how many files, a few names."""
        paths = sorted(self.tailers)
        if not paths:
            return f"source {self.name}: no file matches {', '.join(self.config.include)} yet"
        names = ", ".join(paths[:shown])
        more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
        files = "file" if len(paths) == 1 else "files"
        return f"source {self.name}: watching {len(paths)} {files} ({names}{more})"

    def _open(self, path: str) -> FileTailer | None:
        try:
            tailer = FileTailer(
                path,
                0,
                self.config.fingerprint_bytes,
                self.config.long_lines == "skip",
                self.codec,
            )
        except OSError as exc:
            log.warning("source %s: cannot open %s: %s", self.name, path, exc)
            self.counters.add(Counter.ERRORS)
            return None
        tailer.entries = self.entries
        tailer.limiter = self.limiter
        if self.multiline is not None and self.config.multiline is not None:
            tailer.multiline = self.multiline
            tailer.multiline_timeout = self.config.multiline.timeout
            tailer.clock = self.clock
        return tailer

    def _recover(self) -> None:
        """Read to their end the checkpointed files the scan did not find (renamed away
        while we were not running), and forget the entries of files gone for good."""
        opened = {(t.dev, t.ino) for t in (*self.tailers.values(), *self.retiring)}
        missing = [p for key, p in self.checkpoints.items() if key not in opened]
        if not missing:
            return
        found = find_unfinished(missing, self.finder.wanted)
        for path, saved in found.unread:
            tailer = self._open(path)
            if tailer is None:
                continue
            if not matches(saved, tailer.dev, tailer.ino, tailer.fd):  # replaced meanwhile
                tailer.close()
                continue
            size = tailer.size()
            tailer.position = saved.offset if saved.offset <= size else 0
            # known by the name it was read under, as a file rotated away while we run is:
            # its entries keep their path label, and its checkpoint entry a path the
            # patterns match (or the next start would not read it: see recover.py)
            tailer.rename(saved.path)
            log.info(
                "source %s: reading the last %d bytes of %s (was %s)",
                self.name,
                size - tailer.position,
                path,
                saved.path,
            )
            self._retire(tailer)
        for saved in found.gone:
            self._forget(saved)

    def _forget(self, saved: FilePosition) -> None:
        self.checkpoints.pop((saved.dev, saved.ino), None)
        self.forgets.append(saved)

    def _retire(self, tailer: FileTailer) -> None:
        self.retiring.append(tailer)
        now = self.clock()
        self._retired[id(tailer)] = _Retired(now, tailer.size(), now)

    def poll_once(self) -> bool:
        """One read from every file that has data; True if anything was published."""
        moved = False
        if self.entries is not None and not self.entries.flush(self.producer):
            return False  # a processed block's records go before anything else
        if not self._publish_forgets():  # nothing may pass them (a new file on the inode)
            return False
        max_line = self.config.max_line_bytes
        for tailer in (*self.tailers.values(), *self.retiring):
            try:
                moved |= tailer.read_block(self.producer, max_line, self.counters)
            except OSError as exc:
                log.warning("source %s: read of %s failed: %s", self.name, tailer.path, exc)
                self.counters.add(Counter.ERRORS)
        now = self.clock()
        for tailer in list(self.retiring):
            retired = self._retired[id(tailer)]
            if not tailer.at_end():
                size = tailer.size()
                if size != retired.size:
                    retired.size, retired.size_since = size, now
                elif now - retired.size_since >= RETIRED_TAIL_AFTER:  # no newline will come
                    moved |= tailer.flush_tail(self.producer, max_line, self.counters)
                continue
            if now - retired.since < RETIRE_GRACE:
                continue  # read to its end, but its program may not have let go of it yet
            self.retiring.remove(tailer)
            del self._retired[id(tailer)]
            if os.fstat(tailer.fd).st_nlink:
                self._remember(tailer)
            else:  # deleted: no name can bring it back, so its checkpoint entry goes
                self._forget(self._position(tailer))
            tailer.close()
        self._publish_forgets()
        if self.limiter is not None:
            self.counters.set(Counter.RATE_LIMITED_MS, self.limiter.held_ms())
        return moved

    def _publish_forgets(self) -> bool:
        """Publish the forgets waiting (see capture/file/recover.py); False if the ring
        stayed full."""
        while self.forgets and publish_forget(self.producer, self.forgets[0]):
            self.forgets.pop(0)
        return not self.forgets

    def run(self) -> None:
        """Tail until asked to stop, then close the ring cleanly."""
        if self.watcher is not None:
            self.watcher.start()
        try:
            self.rescan(initial=True)
            while not self.should_stop():
                if self.watcher is not None:
                    self.watcher.changed.clear()  # before reading: a later write re-sets it
                moved = self.poll_once()
                layout_changed = self.watcher is not None and self.watcher.layout_changed
                if layout_changed or self.clock() >= self._next_scan:
                    if self.watcher is not None:
                        self.watcher.layout_changed = False
                    self.rescan()
                    continue
                if not moved:
                    timeout = min(self.config.poll_interval, self._next_scan - self.clock())
                    if self.limiter is not None and (wait := self.limiter.retry_after(1)) > 0:
                        time.sleep(min(timeout, wait))  # held back: writes must not wake us
                        continue
                    if self.watcher is not None:
                        self.watcher.changed.wait(max(0.0, timeout))
                    else:
                        time.sleep(max(0.0, timeout))
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            for tailer in (*self.tailers.values(), *self.retiring):
                tailer.close()
            if self.entries is not None:  # what is not published now is read again later
                self.entries.flush(self.producer, timeout=1.0)
        self.producer.close()
