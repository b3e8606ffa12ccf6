"""The bounded delay heap: every batch waiting for another attempt, ordered by due time.

One heap and one timer for the whole process — never a thread or task per item. The
heap is bounded by entries and bytes; ``push`` refuses an item that would exceed either
bound and the caller sends it to the dead letter queue instead.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field


@dataclass
class RetryItem:
    """A failed batch waiting for its sink to get it again."""

    sink: int  # index of the sink in the run plan
    batch_seq: int
    attempts: int
    first_failure: float  # clock() of the first failure
    first_failure_ns: int  # wall clock, for the DLQ record
    reason: str
    batch: bytes  # the batch slot's bytes exactly as the dispatcher wrote them
    entries: int

    @property
    def size(self) -> int:
        return len(self.batch)


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

    def fits(self, item: RetryItem) -> bool:
        """Whether ``item`` can be added without passing a bound."""
        return (
            self.entries + item.entries <= self.max_entries
            and self.bytes + item.size <= self.max_bytes
        )

    def push(self, due: float, item: RetryItem) -> bool:
        """Add ``item`` due at ``due``; False (nothing added) if a bound would be passed."""
        if not self.fits(item):
            return False
        heapq.heappush(self._heap, _Slot(due, next(self._order), item))
        self.entries += item.entries
        self.bytes += item.size
        return True

    def next_due(self) -> float | None:
        """When the earliest item is due (the one timer's deadline), or None if empty."""
        return self._heap[0].due if self._heap else None

    def pop_due(self, now: float) -> RetryItem | None:
        """Remove and return the earliest item if it is due at ``now``."""
        if not self._heap or self._heap[0].due > now:
            return None
        item = heapq.heappop(self._heap).item
        self.entries -= item.entries
        self.bytes -= item.size
        return item

    def items(self) -> list[RetryItem]:
        """Every waiting item (any order)."""
        return [slot.item for slot in self._heap]
