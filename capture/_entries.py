"""Records of structured entries (HTTP ingest, Docker): packed into ring slots.

The data of a ``FLAG_ENTRIES`` record (see capture/_record.py) is msgpack::

    [[labels, [timestamp_ns, ...], [message, ...]], ...]

a list of *runs*: consecutive entries that share one labels mapping, each entry keeping
its own event time. Entries a pipeline processed (capture/pipeline/) may carry a level and
structured fields: their runs have two more members, ``[level or nil, ...]`` and
``[fields or nil, ...]`` (each nil when no entry of the run has one), the fields as the
bytes of their JSON object: encoded once, here, and written as they are by the
dispatcher, which never decodes them.
Sending the labels once per run, not once per entry, is what keeps a container's
10,000 lines a second from costing 10,000 label maps in every later stage.

A record may carry a *position* in its header instead of a file offset: ``ino`` names
the input (non-zero), ``end`` (int64, not negative) and ``fingerprint`` (uint64) say how
far the entries delivered with this record reach, in the source's own encoding (Docker:
an event time and counts of lines per stream, capture/docker/position.py); the
dispatcher checkpoints both unchanged. An ``end`` of ``FORGET`` says the input is gone
for good (a destroyed container) and its checkpoint entry can be dropped once
everything before the record is delivered. Records of sources that cannot resume
(HTTP) carry ``ino == 0``; an HTTP request's last record carries its request number
in ``end`` (positive), which the dispatcher acknowledges once delivered
(capture/http/acks.py), and nothing is checkpointed for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgspec

from logcap.capture._record import FLAG_ENTRIES, HEADER_SIZE, BlockHeader, write_header
from logcap.errors import EntryTooLarge
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Producer

FORGET = -1  # a position's timestamp_ns: drop the input's checkpoint entry
Entry = tuple[dict[str, str], int, str]  # (labels, event time in ns, message)
Run = tuple[dict[str, str], list[int], list[str]]
_pack = msgspec.msgpack.Encoder().encode
_json = msgspec.json.Encoder().encode
NO_RUNS = _pack([])  # a record of no entries: a position that goes on alone


class RunRecord(msgspec.Struct, array_like=True, gc=False):
    """One run as the dispatcher reads it (the last two members only from pipelines)."""

    labels: dict[str, str]
    stamps: list[int]
    messages: list[str]
    levels: list[str | None] | None = None
    fields: list[bytes | None] | None = None  # each entry's fields as JSON text


decode_runs = msgspec.msgpack.Decoder(list[RunRecord]).decode


class Position(NamedTuple):
    """Where a resumable input has been read to (see the module docstring)."""

    path: bytes
    key: int
    end: int  # FORGET, or the source's position (with fingerprint)
    fingerprint: int
    dev: int = 0  # a file's device (with ``key``, its inode)


def runs_of(entries: list[Entry]) -> list[Run]:
    """Consecutive entries with the same labels, as runs."""
    runs: list[Run] = []
    last: dict[str, str] | None = None
    for labels, stamp, message in entries:
        if labels is not last and labels != last:
            runs.append((labels, [], []))
            last = labels
        runs[-1][1].append(stamp)
        runs[-1][2].append(message)
    return runs


def pack_records(
    entries: Sequence[Any], capacity: int, runs: Callable[[Any], list[Any]] = runs_of
) -> list[bytes]:
    """``entries`` in order, as few record payloads of at most ``capacity`` bytes as the
    halving search finds (``runs`` groups a slice of them into runs); :class:`EntryTooLarge`
    if one entry alone does not fit."""
    chunks: list[bytes] = []
    start = 0
    while start < len(entries):
        count = len(entries) - start
        while True:
            data = _pack(runs(entries[start : start + count]))
            if len(data) <= capacity:
                break
            if count == 1:
                raise EntryTooLarge(
                    f"an entry of {len(data)} bytes does not fit the collector ring "
                    f"({capacity} bytes a slot)"
                )
            # as many as the size seen says fit (entries are alike), at most half as many
            count = max(1, min(count // 2, count * capacity * 15 // (len(data) * 16)))
        chunks.append(data)
        start += count
    return chunks


def record_capacity(producer: Producer, path: bytes = b"") -> int:
    """Bytes of entry data one slot of ``producer``'s ring holds after header and path."""
    return producer.ring.slot_capacity - HEADER_SIZE - len(path)


def write_entries(
    producer: Producer, seq: int, data: bytes, read_ns: int, position: Position | None = None
) -> None:
    """Fill claimed slot ``seq`` with one packed record (publishing is the caller's)."""
    slot = producer.payload(seq)
    path, key, stamp, seen, dev = position if position is not None else (b"", 0, 0, 0, 0)
    header = BlockHeader(read_ns, 0, stamp, dev, key, seen, len(data), len(path), FLAG_ENTRIES)
    at = write_header(slot, header, path)
    slot[at : at + len(data)] = data
    producer.commit(seq, at + len(data))


class RichColumns:
    """Pipeline entries (capture/pipeline/entry.py) as columns, each entry's fields
    encoded to JSON once: packing searches for the cut that fits a slot, and each try
    only slices these lists instead of encoding the fields again."""

    def __init__(self, entries: Sequence[Any]) -> None:
        self.stamps = [e.timestamp_ns for e in entries]
        self.messages = [e.message for e in entries]
        self.levels = [e.level for e in entries]
        self.fields = [_json(e.fields) if e.fields else None for e in entries]
        # (start, end, labels) of each run of entries with equal labels
        self.bounds: list[tuple[int, int, dict[str, str]]] = []
        start = 0
        for i in range(1, len(entries) + 1):
            if i == len(entries) or (
                entries[i].labels is not entries[start].labels
                and entries[i].labels != entries[start].labels
            ):
                self.bounds.append((start, i, entries[start].labels))
                start = i

    def runs(self, span: range) -> list[list[Any]]:
        """The entries ``span`` as ``[labels, stamps, messages, levels, fields]`` runs
        (levels or fields None when no entry of the run has one)."""
        out: list[list[Any]] = []
        for start, end, labels in self.bounds:
            lo, hi = max(start, span.start), min(end, span.stop)
            if lo >= hi:
                continue
            levels, fields = self.levels[lo:hi], self.fields[lo:hi]
            out.append(
                [
                    labels,
                    self.stamps[lo:hi],
                    self.messages[lo:hi],
                    levels if any(level is not None for level in levels) else None,
                    fields if any(fields) else None,
                ]
            )
        return out


def rich_runs(entries: Sequence[Any]) -> list[list[Any]]:
    """Consecutive pipeline entries with equal labels as runs (:meth:`RichColumns.runs`)."""
    return RichColumns(entries).runs(range(len(entries)))


def _pack_rich(entries: Sequence[Any], capacity: int) -> list[bytes]:
    columns = RichColumns(entries)
    return pack_records(range(len(entries)), capacity, columns.runs)


def pack_rich(entries: Sequence[Any], capacity: int, counters: CounterBlock) -> list[bytes]:
    """Pipeline entries packed like :func:`pack_records`; an entry its steps grew past
    ``capacity`` is made to fit (:func:`fit_rich`), counted as a pipeline error."""
    try:
        return _pack_rich(entries, capacity)
    except EntryTooLarge:
        for entry in entries:
            if fit_rich(entry, capacity):
                counters.add(Counter.PIPELINE_ERRORS)
        return _pack_rich(entries, capacity)


def fit_rich(entry: Any, capacity: int) -> bool:
    """Make a pipeline entry that does not fit a record of ``capacity`` bytes fit: its
    fields go first, then the end of its message. True if it had to change."""
    if len(_pack(rich_runs([entry]))) <= capacity:
        return False
    entry.fields = None
    overflow = len(_pack(rich_runs([entry]))) - capacity
    if overflow > 0:  # (a field_add can make a message longer than the line was)
        raw = entry.message.encode("utf-8", "surrogatepass")
        keep = max(0, len(raw) - overflow - 16)  # 16: room for a longer length prefix
        entry.message = raw[:keep].decode("utf-8", "ignore")
    return True
