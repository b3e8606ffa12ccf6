"""One WARNING line per dead-lettered batch, at most ``LIMIT`` a second.

Entries that leave the pipeline for the dead letter queue must be visible in the log,
but a destination refusing everything would otherwise write a line per batch, thousands
a second. Past ``LIMIT`` lines in a one-second window, batches are only counted per sink,
and one line per sink sums them up once the window is over (or at :meth:`flush`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
LIMIT = 5  # lines a second before batches are summed up instead
WINDOW = 1.0


class DeadLetterLog:
    """Logs dead-lettered batches, rate-limited; time comes from ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, limit: int = LIMIT) -> None:
        self.clock = clock
        self.limit = limit
        self.window_start = clock()
        self.lines = 0
        self.suppressed: dict[str, list[int]] = {}  # sink -> [batches, entries]

    def dead_lettered(self, sink: str, kind: str, entries: int, reason: str) -> None:
        """Batch of ``entries`` of ``sink`` was written to the DLQ as ``kind`` for ``reason``."""
        self.tick()
        if self.lines < self.limit:
            self.lines += 1
            log.warning(
                "sink %s: a batch of %d %s was dead-lettered (%s): %s; see `logcap dlq ls`",
                sink,
                entries,
                "entry" if entries == 1 else "entries",
                kind,
                reason,
            )
            return
        counts = self.suppressed.setdefault(sink, [0, 0])
        counts[0] += 1
        counts[1] += entries

    def tick(self) -> None:
        """Start a new window once the current one is over, summing up the last."""
        if self.clock() - self.window_start >= WINDOW:
            self.flush()

    def flush(self) -> None:
        """Log the batches counted but not logged, and start a new window."""
        for sink, (batches, entries) in self.suppressed.items():
            log.warning(
                "sink %s: %d more batches (%d entries) were dead-lettered in the last %.1fs "
                "(lines past %d a second are summed up)",
                sink,
                batches,
                entries,
                self.clock() - self.window_start,
                self.limit,
            )
        self.suppressed.clear()
        self.lines = 0
        self.window_start = self.clock()
