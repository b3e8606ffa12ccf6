"""The bounded delay heap: every batch waiting for another attempt, ordered by due time.

One heap and one timer for the whole process — never a thread or task per item. Every
item is also in the disk spool (retry/spool.py); the heap's bounds (entries and bytes)
cap only the batch copies it keeps in memory: an item that does not fit is pushed
without its copy (``batch`` None) and read back from the spool when it is due.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from logcap.retry.spool import Spooled


@dataclass
class RetryItem:
    """A failed batch waiting for its sink to get it again."""

    sink: int  # index of the sink in the run plan
    batch_seq: int
    attempts: int
    first_failure: float  # clock() of the first failure
    first_failure_ns: int  # wall clock, for the DLQ record
    reason: str
    batch: bytes | None  # the batch slot's bytes as the dispatcher wrote them, if cached
    entries: int
    spooled: Spooled | None = None  # its record in the disk spool

    @property
    def size(self) -> int:
        """Bytes of the batch copy held in memory."""
        return 0 if self.batch is None else len(self.batch)

    @property
    def cached_entries(self) -> int:
        """Entries of the batch copy held in memory."""
        return 0 if self.batch is None else self.entries


@dataclass(order=True)
class _Slot:
    due: float
    order: int
    item: RetryItem = field(compare=False)


class DelayHeap:
    """A min-heap by due time with bounds on entries and bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._heap: list[_Slot] = []
        self._order = itertools.count()
        self.entries = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._heap)

    def fits(self, entries: int, size: int) -> bool:
        """Whether a batch copy of ``entries`` and ``size`` bytes may be kept in memory."""
        return self.entries + entries <= self.max_entries and self.bytes + size <= self.max_bytes

    def push(self, due: float, item: RetryItem) -> None:
        """Add ``item`` due at ``due``; its batch copy is dropped if it would pass a bound."""
        if item.batch is not None and not self.fits(item.entries, item.size):
            item.batch = None  # the spool has it
        heapq.heappush(self._heap, _Slot(due, next(self._order), item))
        self.entries += item.cached_entries
        self.bytes += item.size

    def next_due(self) -> float | None:
        """When the earliest item is due (the one timer's deadline), or None if empty."""
        return self._heap[0].due if self._heap else None

    def pop_due(self, now: float) -> RetryItem | None:
        """Remove and return the earliest item if it is due at ``now``."""
        if not self._heap or self._heap[0].due > now:
            return None
        item = heapq.heappop(self._heap).item
        self.entries -= item.cached_entries
        self.bytes -= item.size
        return item

    def items(self) -> list[RetryItem]:
        """Every waiting item (any order)."""
        return [slot.item for slot in self._heap]
