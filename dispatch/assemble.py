"""The open batch: runs of encoded entries, cut so that no batch passes its byte bound.

A batch closes *before* it would pass ``batch_max_bytes``, counted as it is written into
its slot (dispatch/batch.py: the 8-byte prefix, the msgpack meta, the NDJSON entries), so
the retry heap, the retry spool and the DLQ, which validation checks against the same
bound (dispatch/bounds.py), can always take a whole batch. Entries are encoded when they
are added, so their size is known, not estimated; the meta is counted by an upper bound
(:func:`group_meta_bound`) and encoded exactly only when the batch is published.

A run that does not fit is cut between two entries without encoding anything again: a
run's bytes are ``head + body[lo:hi]`` and every entry ends in ``b"\\n"`` (JSON strings
never hold a raw newline), so the first ``k`` entries end just past the ``k``-th newline.
Only a batch of one entry may pass ``batch_max_bytes``: an entry larger than that is sent
alone, and one larger than the largest single-entry batch cannot be batched at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from logcap.dispatch.acks import FileKey
from logcap.dispatch.batch import PREFIX, Group
from logcap.dispatch.checkpoint import FilePosition

_encode = msgspec.msgpack.Encoder().encode
# the batch meta around its groups: array header (1), created_ns (9), count (5),
# headers of the groups and progress arrays (5 each), read_ns (9); plus the slot's
# 8-byte prefix
BATCH_OVERHEAD = PREFIX.size + 1 + 9 + 5 + 5 + 5 + 9
STAMP_BYTES = 9  # one int64 in a group's msgpack timestamps


def group_meta_bound(
    source: str,
    labels: dict[str, str],
    skip: int = 0,
    level: str | None = None,
    keys: dict[str, str] | None = None,
) -> int:
    """Upper bound of the msgpack of a :class:`Group` of ``source``, ``labels``, ``skip``,
    ``level`` and ``keys``, apart from its timestamps (:data:`STAMP_BYTES` each): encoded with
    every other number 0 (1 byte), plus what the real numbers and the timestamps array
    header may add."""
    # timestamp_ns up to 9 bytes (+8), count and nbytes up to 5 (+4 each), array header +4
    group = Group(source, labels, 0, 0, 0, [], skip, level, keys or {})
    return len(_encode(group)) + 8 + 4 + 4 + 4


def position_bytes(position: FilePosition | None) -> int:
    """Bytes a position adds to the meta of the batch that carries it."""
    return 0 if position is None else len(_encode(position))


class Run:
    """Encoded entries of one group: the bytes ``head + body[lo:hi]``, ``count`` entries."""

    __slots__ = ("body", "count", "group", "head", "hi", "lo", "meta", "read_ns")

    def __init__(
        self,
        group: Group,
        head: bytes,
        body: bytes,
        lo: int,
        hi: int,
        count: int,
        meta: int,
        read_ns: int = 0,
    ) -> None:
        self.group = group
        self.head = head
        self.body = body
        self.lo = lo
        self.hi = hi
        self.count = count
        self.meta = meta  # group_meta_bound of the group
        self.read_ns = read_ns  # when its entries were read (wall ns)

    @property
    def size(self) -> int:
        """Bytes of the entries."""
        return len(self.head) + self.hi - self.lo

    @property
    def cost(self) -> int:
        """Upper bound of what the run adds to a batch slot: entries and group meta."""
        return self.size + self.meta + (STAMP_BYTES * self.count if self.group.timestamps else 0)

    def pieces(self) -> list[bytes | memoryview]:
        """The entries' bytes, to be written one after the other (no join, no copy)."""
        body = memoryview(self.body)[self.lo : self.hi]
        return [self.head, body] if self.head else [body]

    def final_group(self) -> Group:
        """The group as the batch meta holds it, with its count and byte length."""
        g = self.group
        return msgspec.structs.replace(g, count=self.count, nbytes=self.size)

    def split(self, room: int) -> tuple[Run | None, Run | None]:
        """(the longest head of whole entries costing at most ``room``, the rest)."""
        if self.cost <= room:
            return self, None
        stamp = STAMP_BYTES if self.group.timestamps else 0
        budget = room - self.meta
        limit = budget  # bytes of entries to search in; shrinks while timestamps overflow
        while limit > len(self.head):
            pos = self.body.rfind(b"\n", self.lo, self.lo + limit - len(self.head))
            if pos < 0:
                break
            end = pos + 1
            count = self.body.count(b"\n", self.lo, end)
            used = len(self.head) + end - self.lo + stamp * count
            if used <= budget:
                return self._cut(end, count)
            limit = end - self.lo + len(self.head) - (used - budget)
        return None, self

    def split_first(self) -> tuple[Run, Run | None]:
        """(the first entry alone, the rest)."""
        end = self.body.index(b"\n", self.lo) + 1
        if end >= self.hi:
            return self, None
        return self._cut(end, 1)

    def _cut(self, end: int, count: int) -> tuple[Run, Run]:
        g = self.group
        stamps, later = g.timestamps[:count], g.timestamps[count:]
        first = msgspec.structs.replace(g, count=count, nbytes=0, timestamps=stamps)
        rest_ns = later[0] if later else g.timestamp_ns
        rest = msgspec.structs.replace(g, timestamp_ns=rest_ns, count=0, nbytes=0, timestamps=later)
        return (
            Run(first, self.head, self.body, self.lo, end, count, self.meta, self.read_ns),
            Run(rest, b"", self.body, end, self.hi, self.count - count, self.meta, self.read_ns),
        )


@dataclass
class OpenBatch:
    """The batch being filled, and what publishing it completes."""

    runs: list[Run] = field(default_factory=list)
    count: int = 0
    cost: int = BATCH_OVERHEAD  # upper bound of its slot bytes
    opened: float = 0.0
    progress: dict[FileKey, FilePosition] = field(default_factory=dict)
    # per input index: the last sequence whose lines are all in this batch
    completes: dict[int, int] = field(default_factory=dict)
    awaited: bool = False  # completes an HTTP request whose client waits for it
    read_ns: int = 0  # its oldest entry's read time (wall ns; 0: none yet)

    def add(self, run: Run) -> None:
        """Append a run that fits."""
        self.runs.append(run)
        self.count += run.count
        self.cost += run.cost
        if run.read_ns and (not self.read_ns or run.read_ns < self.read_ns):
            self.read_ns = run.read_ns

    def complete(self, index: int, seq: int, position: FilePosition | None) -> None:
        """Record ``seq`` of input ``index`` (and its file position) goes with this batch."""
        if position is not None:
            key = (position.source, position.dev, position.ino)
            self.cost += position_bytes(position) - position_bytes(self.progress.get(key))
            self.progress[key] = position
            self.awaited = self.awaited or not position.ino
        self.completes[index] = seq
