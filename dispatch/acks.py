"""Acknowledgements: which file positions every sink has delivered, and their checkpoint.

Each published batch is remembered with the positions it completes. When the frontier —
the highest batch every sink has delivered or the DLQ holds — passes it, its positions
are committed, and the committed map is saved every ``interval`` seconds.

A position with ``ino == 0`` is an *acknowledgement only*: an HTTP ingest request's
number (capture/http/acks.py), never checkpointed; once the frontier passes it, the
highest one per source is handed to ``on_acked``, which publishes it to the waiting
request threads. Requests are numbered in ring order, so everything up to it is safe.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from logcap.dispatch.checkpoint import CheckpointStore, FilePosition, Positions
from logcap.metrics import Counter, CounterBlock

FileKey = tuple[str, int, int]  # (source, dev, inode): a renamed file stays the same file


class Acknowledgements:
    """Committed positions, batches waiting for acknowledgement, and checkpoint lag."""

    def __init__(
        self,
        store: CheckpointStore,
        counters: CounterBlock,
        interval: float,
        frontier: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        on_acked: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.on_acked = on_acked
        self.counters = counters
        self.interval = interval
        self.frontier = frontier
        self.clock = clock
        self.committed: dict[FileKey, FilePosition] = {
            (p.source, p.dev, p.ino): p for p in store.load().files
        }
        self.dirty = False
        self.last_save = clock()
        # (batch sequence, positions it completes, wall-clock ns it was published)
        self.unacked: deque[tuple[int, list[FilePosition], int]] = deque()
        self.read_positions: dict[FileKey, int] = {}
        self._next_lag_report = 0.0

    def published(self, seq: int, progress: list[FilePosition], created_ns: int) -> None:
        """Batch ``seq`` (or, for positions with no entry, the last batch) is out."""
        self.unacked.append((seq, progress, created_ns))

    def read(self, key: FileKey, end: int) -> None:
        """The collector has read ``key`` up to ``end`` (for the lag gauge)."""
        self.read_positions[key] = end

    def acknowledge(self) -> None:
        """Commit what the frontier passed; save and report lag when due."""
        delivered = self.frontier()
        acked: dict[str, int] = {}
        while self.unacked and self.unacked[0][0] <= delivered:
            _, progress, _ = self.unacked.popleft()
            for p in progress:
                if not p.ino:  # a request acknowledgement, nothing to checkpoint
                    acked[p.source] = max(p.offset, acked.get(p.source, 0))
                    continue
                if p.offset < 0:  # the input is gone for good (capture/_entries.py FORGET)
                    self.committed.pop((p.source, p.dev, p.ino), None)
                    self.read_positions.pop((p.source, p.dev, p.ino), None)
                else:
                    self.committed[(p.source, p.dev, p.ino)] = p
                self.dirty = True
        if self.on_acked is not None:
            for source, position in acked.items():
                self.on_acked(source, position)
        if self.dirty and self.clock() - self.last_save >= self.interval:
            self.save()
        if self.clock() >= self._next_lag_report:
            self._report_lag()

    def due_in(self) -> float | None:
        """Seconds until a save is due, or None when nothing new is committed."""
        return self.last_save + self.interval - self.clock() if self.dirty else None

    def save(self) -> None:
        """Write every committed position now."""
        self.store.save(Positions(files=list(self.committed.values())))
        self.counters.add(Counter.CHECKPOINTS)
        self.dirty = False
        self.last_save = self.clock()

    def _report_lag(self) -> None:
        behind = 0
        for key, read in self.read_positions.items():
            saved = self.committed.get(key)
            behind += read - saved.offset if saved is not None else read
        self.counters.set(Counter.CHECKPOINT_LAG_BYTES, max(0, behind))
        oldest = self.unacked[0][2] if self.unacked else None
        lag_ms = (time.time_ns() - oldest) // 1_000_000 if oldest is not None else 0
        self.counters.set(Counter.CHECKPOINT_LAG_MS, max(0, lag_ms))
        self._next_lag_report = self.clock() + 0.5
