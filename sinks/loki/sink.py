"""The ``loki`` sink: each batch becomes one or more push requests to Loki.

A batch's messages are decoded once (only the ``message`` field); groups are mapped to
label sets (:mod:`.labels`), entries gathered per stream, sorted by time, cut into
requests of at most ``max_request_entries`` / ``max_request_bytes`` (:mod:`.wire`) and
pushed one after the other over one keep-alive connection (:mod:`.client`).

Distinct times. Loki keeps one entry per (stream, time, line): a second entry with the
same time and line is dropped as a duplicate. The lines of one read block share one time,
so repeated lines (blank lines, a warning logged twice) would be lost. Each stream's
entries therefore get strictly increasing times: an entry at or within the previous
entry's time gets that time plus 1 ns, continuing across batches (the stream's *clock*).
A run of 1,000 lines read together spans 1 µs. Entries older than the stream's clock are
left as they are (an ordered Loki refuses them; the default, unordered one takes them).

Partial delivery. A batch cut into several requests can fail after some were
delivered. The batch then fails as a whole and comes back as a whole, but the sink
remembers how many leading entries of each stream were delivered and leaves them out of
the retry; a sink restarted in between sends them again (duplicates, never losses).
"""

from __future__ import annotations

import logging
import zlib
from collections import OrderedDict

import msgspec

from logcap.dispatch.batch import Batch, Group
from logcap.errors import DeliveryError, Permanent
from logcap.metrics import Counter, CounterBlock, NullBlock
from logcap.sinks.base import Failures
from logcap.sinks.loki.client import LokiClient
from logcap.sinks.loki.config import LokiSinkConfig
from logcap.sinks.loki.labels import LabelMapper
from logcap.sinks.loki.wire import (
    JSON,
    PROTOBUF,
    Stream,
    encode_json,
    encode_protobuf,
    gzipped,
    snappy,
    split,
)

log = logging.getLogger(__name__)
_REMEMBERED_BATCHES = 256
_CLOCKS = 65536
_NEVER = (-(1 << 63), -(1 << 63))
Clock = tuple[int, int]  # (time of the stream's newest entry, the time it was sent with)
Identity = tuple[int, int, int, int]
LabelSet = tuple[str, tuple[tuple[str, str], ...], bool]  # LabelMapper.stream: key, pairs, pruned


class _Message(msgspec.Struct):
    """The one field of an entry line the default line format needs."""

    message: str


_decode_messages = msgspec.json.Decoder(_Message).decode_lines


def _identity(batch: Batch) -> Identity:
    crc = 0
    for chunk in batch.chunks():
        crc = zlib.crc32(chunk, crc)
    return (batch.meta.created_ns, batch.meta.count, batch.nbytes, crc)


def _entries_bytes(batch: Batch) -> bytes | memoryview:
    """The batch's entry lines in one buffer (a view of the slot unless it was narrowed
    to non-adjacent groups)."""
    chunks = batch.chunks()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def restamp(entries: list[tuple[int, bytes]], clock: Clock) -> list[Clock]:
    """Give time-sorted ``entries`` strictly increasing times after ``clock`` (in place);
    return the stream's clock after each entry."""
    base, last = clock
    older_base, older_last = _NEVER  # entries older than the clock: distinct among themselves
    clocks = []
    for index, (ns, line) in enumerate(entries):
        if ns >= base:
            sent = last + 1 if ns <= last else ns
            base, last = ns, sent
        else:
            sent = older_last + 1 if older_base <= ns <= older_last else ns
            older_base, older_last = ns, sent
        entries[index] = (sent, line)
        clocks.append((base, last))
    return clocks


class LokiSink:
    """Pushes batches to Loki; every write is finished when it returns."""

    def __init__(
        self,
        config: LokiSinkConfig,
        client: LokiClient | None = None,
        counters: CounterBlock | None = None,
    ) -> None:
        self.config = config
        self.client = client or LokiClient(config)
        self.labels = LabelMapper(config)
        self.counters = counters or NullBlock()
        self._clocks: dict[str, Clock] = {}
        # batch identity -> stream -> leading entries already delivered
        # (and the label set each group of it had: a retry must see the same streams)
        self._delivered: OrderedDict[Identity, tuple[dict[str, int], list[LabelSet]]] = (
            OrderedDict()
        )

    @property
    def entries_pruned(self) -> int:
        """Entries sent without a label that max_label_values stopped sending."""
        return self.counters.get(Counter.LOKI_ENTRIES_PRUNED)

    @property
    def entries_skipped(self) -> int:
        """Entries left out of a retry because an earlier attempt delivered them."""
        return self.counters.get(Counter.LOKI_ENTRIES_SKIPPED)

    def streams(self, batch: Batch) -> list[Stream]:
        """The batch's entries per label set, each stream sorted by (original) time."""
        return self._streams(batch, None)[0]

    def _streams(
        self, batch: Batch, label_sets: list[LabelSet] | None
    ) -> tuple[list[Stream], list[LabelSet]]:
        """:meth:`streams`, and the label set of each group; ``label_sets`` given: those
        of an earlier attempt at the batch (labels stopped being sent since must not move
        its entries to other streams, or what it delivered could not be told apart)."""
        data = _entries_bytes(batch)
        if self.config.line_format == "json":
            lines = bytes(data).split(b"\n")
        else:
            lines = [m.message.encode() for m in _decode_messages(data)]
        groups = batch.meta.groups
        if label_sets is not None and len(label_sets) == len(groups):
            return self._grouped(groups, lines, label_sets), label_sets
        dropped = len(self.labels.dropped)
        label_sets = [self.labels.stream(group) for group in groups]
        if len(self.labels.dropped) != dropped:
            # a label stopped being sent partway: its earlier groups still had it. Every
            # group of a batch gets its label set once, the same on every attempt, or a
            # retry could not tell which streams an earlier attempt delivered
            label_sets = [self.labels.stream(group) for group in groups]
        return self._grouped(groups, lines, label_sets), label_sets

    def _grouped(
        self, groups: list[Group], lines: list[bytes], label_sets: list[LabelSet]
    ) -> list[Stream]:
        streams: dict[str, Stream] = {}
        at = 0
        for group, (key, pairs, pruned) in zip(groups, label_sets, strict=True):
            if pruned:
                self.counters.add(Counter.LOKI_ENTRIES_PRUNED, group.count)
            stream = streams.get(key)
            if stream is None:
                stream = streams[key] = Stream(key, pairs)
            stamps = group.timestamps or [group.timestamp_ns] * group.count
            stream.entries.extend(zip(stamps, lines[at : at + group.count], strict=True))
            at += group.count
        for stream in streams.values():
            stream.entries.sort(key=lambda entry: entry[0])  # stable: equal times keep order
        return list(streams.values())

    def write(self, batch: Batch) -> None:
        identity = _identity(batch) if self._delivered else None
        done, label_sets = self._delivered.pop(identity, ({}, None)) if identity else ({}, None)
        try:
            streams, label_sets = self._streams(batch, label_sets)
        except (msgspec.DecodeError, ValueError) as exc:  # ValueError: counts and lines differ
            raise Permanent(f"batch entries cannot be read: {exc}", "other") from exc
        clocks: dict[str, list[Clock]] = {}
        for stream in streams:
            skip = done.get(stream.key, 0)
            if skip:
                del stream.entries[:skip]
                self.counters.add(Counter.LOKI_ENTRIES_SKIPPED, skip)
            clocks[stream.key] = restamp(stream.entries, self._clocks.get(stream.key, _NEVER))
        progress: dict[str, int] = {}  # entries of each stream delivered by this attempt
        for request in split(
            [s for s in streams if s.entries],
            self.config.max_request_bytes,
            self.config.max_request_entries,
        ):
            try:
                self._push(request)
            except DeliveryError:
                if progress or done:
                    sent = {key: done.get(key, 0) + progress.get(key, 0) for key in clocks}
                    self._remember(identity or _identity(batch), sent, label_sets)
                raise
            for piece in request:
                count = progress[piece.key] = progress.get(piece.key, 0) + len(piece.entries)
                self._tick(piece.key, clocks[piece.key][count - 1])

    def _push(self, request: list[Stream]) -> None:
        if self.config.encoding == "protobuf":
            self.client.push(snappy(encode_protobuf(request)), PROTOBUF, None)
        elif self.config.compression == "gzip":
            self.client.push(gzipped(encode_json(request)), JSON, "gzip")
        else:
            self.client.push(encode_json(request), JSON, None)

    def _tick(self, key: str, clock: Clock) -> None:
        if clock[1] > self._clocks.get(key, _NEVER)[1]:
            if len(self._clocks) >= _CLOCKS and key not in self._clocks:
                self._clocks.clear()  # many streams: forget; at worst a run restarts
            self._clocks[key] = clock

    def _remember(self, identity: Identity, sent: dict[str, int], sets: list[LabelSet]) -> None:
        self._delivered[identity] = (sent, sets)
        while len(self._delivered) > _REMEMBERED_BATCHES:
            self._delivered.popitem(last=False)

    def flush(self) -> Failures:
        """Nothing in flight: every push finished within its write."""
        return []

    def close(self) -> None:
        """Close the connection."""
        self.client.close()
