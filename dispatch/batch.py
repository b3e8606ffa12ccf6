"""A batch: entries encoded once by the dispatcher and read in place by every sink.

Layout inside a batch-ring slot's payload::

    0    meta_len   uint32   bytes of the meta block
    4    reserved   uint32
    8    meta       msgpack of :class:`BatchMeta`
    8+meta_len      payload: NDJSON, one entry object per line

An entry line is exactly what the file sink writes and what Kafka receives as a value::

    {"timestamp":"…Z","ingested_at":"…Z","source":"app",
     "labels":{"host":"h","path":"/var/log/app.log"},"message":"the line as read"}

Entries that share a source, labels and timestamp form a *group*; groups are contiguous
byte ranges of the payload, so a sink can route or split by group without parsing JSON.
JSON strings never hold a raw newline, so every b"\\n" in the payload ends an entry.
``progress`` lists, per file, the offset up to which every line is in this batch or an
earlier one: acknowledging the batch makes those positions safe to checkpoint.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

import msgspec

from logcap.dispatch.checkpoint import FilePosition

PREFIX = struct.Struct("<II")


class Group(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A run of entries with the same source and labels, and the same timestamp unless
    ``timestamps`` gives each its own."""

    source: str
    labels: dict[str, str]
    timestamp_ns: int
    count: int
    nbytes: int
    # per-entry event times (Docker, HTTP ingest), first one equal to timestamp_ns; empty
    # when every entry of the group has timestamp_ns
    timestamps: list[int] = []
    # bit i set: sink i (the run plan's order) skips the group, its entries fail that
    # sink's `when` (dispatch/route.py); 0 for every group when no sink has one
    skip: int = 0
    # the level every entry of the group has, from a pipeline (None: not one level, or
    # none): what sinks route and label by, '{level}' in their templates
    level: str | None = None
    # the values of the fields that sinks' templates name ('{fields.x}'), which every
    # entry of the group shares (dispatch/route.py regroup); rendered as text, by path
    keys: dict[str, str] = {}


class BatchMeta(msgspec.Struct, array_like=True, gc=False):
    """Everything about a batch except the entries themselves."""

    created_ns: int
    count: int
    groups: list[Group]
    progress: list[FilePosition]
    # wall-clock ns its oldest entry was read (0: unknown, a batch of an older version):
    # what the sinks' delivery latency counts from
    read_ns: int = 0


_encode_meta = msgspec.msgpack.Encoder().encode
_decode_meta = msgspec.msgpack.Decoder(BatchMeta).decode


class GroupSlice(NamedTuple):
    """A group and its entries' bytes inside the payload (a view, not a copy)."""

    group: Group
    data: memoryview


class Batch:
    """A read-only view of one batch in a ring slot."""

    __slots__ = ("meta", "payload")

    def __init__(self, meta: BatchMeta, payload: memoryview) -> None:
        self.meta = meta
        self.payload = payload

    @classmethod
    def from_slot(cls, view: memoryview) -> Batch:
        """Parse the batch published in ``view`` (no copy of the payload)."""
        meta_len, _ = PREFIX.unpack_from(view, 0)
        meta = _decode_meta(view[8 : 8 + meta_len])
        return cls(meta, view[8 + meta_len :])

    def spans(self) -> Iterator[tuple[Group, int, int]]:
        """Each group with the start and end of its entries in ``payload``."""
        start = 0
        for group in self.meta.groups:
            end = start + group.nbytes
            yield group, start, end
            start = end

    def groups(self) -> Iterator[GroupSlice]:
        """Each group with its slice of the payload."""
        payload = self.payload
        for group, start, end in self.spans():
            yield GroupSlice(group, payload[start:end])

    def chunks(self) -> list[memoryview]:
        """The entries' bytes as contiguous views of the payload, in order: the whole
        payload here; a view narrowed to some groups (sinks/routing.py) has one per run of
        adjacent groups it kept. Sinks read entries through this or :meth:`groups`."""
        return [self.payload]

    @property
    def nbytes(self) -> int:
        """Bytes of this batch's entries (what a sink sends of it)."""
        return len(self.payload)


def write_batch(slot: memoryview, meta: BatchMeta, pieces: list[list[bytes | memoryview]]) -> int:
    """Lay out ``meta`` and each group's encoded pieces in ``slot``; return bytes used."""
    encoded = _encode_meta(meta)
    at = 8 + len(encoded)
    PREFIX.pack_into(slot, 0, len(encoded), 0)
    slot[8:at] = encoded
    for group in pieces:
        for piece in group:
            end = at + len(piece)
            slot[at:end] = piece
            at = end
    return at


def meta_size_bound(groups: int, progress: int, stamps: int = 0) -> int:
    """A safe upper bound of the encoded meta size (paths ≤ 4 KiB, labels small)."""
    return 64 + groups * 8448 + progress * 4200 + stamps * 9
