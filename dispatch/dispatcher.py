"""The dispatcher: collector rings → batches encoded once → the batch ring; checkpoints.

Loop: take blocks of lines from every collector ring, cut them into entries, close a batch
when it reaches ``batch_max_events`` / ``batch_max_bytes`` or ``batch_timeout``, encode it
once and publish it to the batch ring, which every sink reads in place.

Nothing is lost if this process is killed at any instant:

* A collector slot is released only once every line of it is in a *published* batch, so
  a restarted dispatcher re-reads whatever it had not published (duplicates, no loss).
* Each batch carries the file positions it completes (``progress``). Positions reach the
  checkpoint file only once every sink has delivered the batch or the retry process holds
  or dead-lettered it (the frontier, see dispatch/acks.py and dispatch/process.py); a
  restarted dispatcher rebuilds the in-flight list from the batches still in the ring.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from logcap.capture._entries import decode_runs
from logcap.capture._record import (
    FLAG_ENTRIES,
    FLAG_TRUNCATED,
    HEADER_SIZE,
    BlockHeader,
    read_header,
)
from logcap.capture.file.multiline import MultilineRule
from logcap.config import DispatcherConfig
from logcap.dispatch.acks import Acknowledgements, FileKey
from logcap.dispatch.batch import (
    Batch,
    BatchMeta,
    Group,
    meta_size_bound,
    write_batch,
)
from logcap.dispatch.checkpoint import CheckpointStore, FilePosition
from logcap.dispatch.encode import encode_entries, encode_stamped, entry_prefix, entry_rest
from logcap.dispatch.lines import block_messages
from logcap.errors import BufferFull
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Consumer, Producer

log = logging.getLogger(__name__)


@dataclass
class SourceInput:
    """One collector's ring as the dispatcher sees it."""

    name: str
    consumer: Consumer
    counters: CounterBlock
    max_line_bytes: int
    host: str
    skip_long_lines: bool = False  # long_lines: skip drops them instead of cutting them
    encoding: str = "utf-8"
    multiline: MultilineRule | None = None  # blocks hold whole events; join their lines
    # sequence of the newest record fully placed into a published batch
    releasable: int = -1
    labels_by_path: dict[bytes, tuple[str, dict[str, str]]] = field(default_factory=dict)


@dataclass
class _Pending:
    """The batch being filled."""

    groups: list[tuple[Group, list[str], bytes]] = field(default_factory=list)
    count: int = 0
    raw_bytes: int = 0
    opened: float = 0.0
    progress: dict[FileKey, FilePosition] = field(default_factory=dict)
    # per input index: the last sequence whose lines are all in this batch
    completes: dict[int, int] = field(default_factory=dict)


class Dispatcher:
    """Owns the batch ring's producer side and the checkpoint file."""

    def __init__(
        self,
        config: DispatcherConfig,
        inputs: list[SourceInput],
        output: Producer,
        counters: CounterBlock,
        checkpoints: CheckpointStore,
        clock: Callable[[], float] = time.monotonic,
        frontier: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.inputs = inputs
        self.output = output
        self.counters = counters
        self.clock = clock
        self.pending = _Pending()
        # the frontier is the highest batch every sink has delivered or the DLQ holds; by
        # default the slowest cursor (no retry process)
        self.acks = Acknowledgements(
            checkpoints,
            counters,
            config.checkpoint_interval,
            frontier or output.ring.min_consumer_cursor,
            clock,
        )
        self._recover_in_flight()

    # -- recovery ------------------------------------------------------------------
    def _recover_in_flight(self) -> None:
        """Re-learn the progress of batches published by a previous incarnation."""
        ring = self.output.ring
        for seq in range(ring.min_consumer_cursor() + 1, ring.published + 1):
            view = ring.payload(seq)[: ring.slot_length(seq)]
            meta = Batch.from_slot(view).meta
            self.acks.published(seq, list(meta.progress), meta.created_ns)

    # -- the loop ------------------------------------------------------------------
    def step(self) -> bool:
        """Move whatever is available; return True if anything moved."""
        moved = False
        for index, source in enumerate(self.inputs):
            consumer = source.consumer
            available = consumer.available()
            seq = consumer.next_sequence
            while seq <= available:
                self._take(index, source, seq)
                seq += 1
                moved = True
            consumer.next_sequence = seq
        if self.pending.count and self.clock() - self.pending.opened >= self.config.batch_timeout:
            self.flush()
        self.acks.acknowledge()
        return moved

    def idle_timeout(self) -> float:
        """How long the loop may park before a timer (batch or checkpoint) is due."""
        now = self.clock()
        saving = self.acks.due_in()
        due = 0.5 if saving is None else saving
        if self.pending.count:
            due = min(due, self.pending.opened + self.config.batch_timeout - now)
        return max(0.0, min(due, 0.5))

    def _take(self, index: int, source: SourceInput, seq: int) -> None:
        view = source.consumer.read(seq)
        header = read_header(view)
        if header.flags & FLAG_ENTRIES:
            self._take_entries(index, source, seq, header, view)
            return
        path_end = HEADER_SIZE + header.path_len
        path_bytes = bytes(view[HEADER_SIZE:path_end])
        labelled = source.labels_by_path.get(path_bytes)
        if labelled is None:
            # JSON and msgpack hold valid UTF-8 only: a file name that is not UTF-8 (an
            # old Latin-1 name) is shown and checkpointed with U+FFFD for its bad bytes.
            path = path_bytes.decode("utf-8", "replace")
            labelled = (path, {"host": source.host, "path": path})
            source.labels_by_path[path_bytes] = labelled
        path, labels = labelled
        self.acks.read((source.name, header.dev, header.ino), header.end)
        data = view[path_end : path_end + header.data_len]
        lines, overlong = block_messages(
            data,
            header.start == 0,
            source.encoding,
            source.multiline,
            source.max_line_bytes,
            source.skip_long_lines,
        )
        if header.flags & FLAG_TRUNCATED:
            # one line the collector already cut or dropped (and counted here once),
            # perhaps cut again above only to drop a character its byte cut had split
            overlong = 1
        if overlong:
            counter = Counter.LINES_SKIPPED if source.skip_long_lines else Counter.LINES_TRUNCATED
            source.counters.add(counter, overlong)
        source.counters.add(Counter.EVENTS_OUT, len(lines))
        self.counters.add(Counter.EVENTS_IN, len(lines))
        self.counters.add(Counter.BYTES_IN, header.data_len)
        progress = FilePosition(
            source.name, path, header.dev, header.ino, header.end, header.fingerprint
        )
        if not lines:  # e.g. one skipped line: nothing to send, a position to checkpoint
            self._done_without_entries(index, source, seq, progress)
            return
        prefix = entry_prefix(source.name, labels, header.read_ns)
        while lines:
            room = self.config.batch_max_events - self.pending.count
            take, lines = (lines, []) if len(lines) <= room else (lines[:room], lines[room:])
            # estimated encoded size, proportional to the share of the block taken
            size = (header.data_len * len(take)) // max(1, len(take) + len(lines)) + (
                len(prefix) + 3
            ) * len(take)
            if not lines:  # the block's position travels with its last lines
                self._completes(index, seq, progress)
            self._append(
                Group(source.name, labels, header.read_ns, len(take), 0), take, prefix, size
            )

    def _take_entries(
        self, index: int, source: SourceInput, seq: int, header: BlockHeader, view: memoryview
    ) -> None:
        """Structured entries (HTTP ingest, Docker): runs that share labels, each entry
        with its own event time; the record's position (if any) goes with its last entry."""
        path_end = HEADER_SIZE + header.path_len
        runs = decode_runs(view[path_end : path_end + header.data_len])
        total = sum(len(messages) for _, _, messages in runs)
        source.counters.add(Counter.EVENTS_OUT, total)
        self.counters.add(Counter.EVENTS_IN, total)
        self.counters.add(Counter.BYTES_IN, header.data_len)
        progress = None
        if header.ino:  # a resumable input: its position is checkpointed like a file's
            path = bytes(view[HEADER_SIZE:path_end]).decode("utf-8", "replace")
            progress = FilePosition(
                source.name, path, header.dev, header.ino, header.end, header.fingerprint
            )
        for number, (labels, stamps, messages) in enumerate(runs, 1):
            merged = {**labels, "host": source.host}
            rest = entry_rest(source.name, merged, header.read_ns)
            while messages:
                room = self.config.batch_max_events - self.pending.count
                take, messages = messages[:room], messages[room:]
                took, stamps = stamps[:room], stamps[room:]
                if number == len(runs) and not messages:
                    self._completes(index, seq, progress)
                size = sum(map(len, take)) + (len(rest) + 48) * len(take)
                self._append(
                    Group(source.name, merged, took[0], len(take), 0, took), take, rest, size
                )
        if not runs:
            self._done_without_entries(index, source, seq, progress)
        elif not self.pending.count:  # the record's last entries filled a batch: published
            source.releasable = seq
            self._release_inputs()

    def _completes(self, index: int, seq: int, progress: FilePosition | None) -> None:
        """Record ``seq`` of input ``index`` is done once the open batch is published (call
        before appending the record's last entries, which may publish it at once)."""
        if progress is not None:
            self.pending.progress[(progress.source, progress.dev, progress.ino)] = progress
        self.pending.completes[index] = seq

    def _done_without_entries(
        self, index: int, source: SourceInput, seq: int, progress: FilePosition | None
    ) -> None:
        """A record that adds no entry: its position waits for the lines before it."""
        if self.pending.count:  # earlier lines wait in the open batch: go with it
            self._completes(index, seq, progress)
            return
        if progress is not None:  # all earlier lines are published: safe with the last batch
            self.acks.published(self.output.ring.published, [progress], time.time_ns())
        source.releasable = seq
        self._release_inputs()

    def _append(self, group: Group, lines: list[str], prefix: bytes, size: int) -> None:
        """Add entries to the open batch; publish it once it is full."""
        pending = self.pending
        if not pending.count:
            pending.opened = self.clock()
        pending.groups.append((group, lines, prefix))
        pending.count += len(lines)
        pending.raw_bytes += size
        if (
            pending.count >= self.config.batch_max_events
            or pending.raw_bytes >= self.config.batch_max_bytes
        ):
            self.flush()

    # -- publishing ----------------------------------------------------------------
    def flush(self) -> None:
        """Encode the pending batch once and publish it (splitting if it cannot fit)."""
        pending, self.pending = self.pending, _Pending()
        if not pending.count:
            return
        pieces = [
            encode_stamped(prefix, g.timestamps, lines)
            if g.timestamps
            else encode_entries(prefix, lines)
            for g, lines, prefix in pending.groups
        ]
        sizes = [sum(map(len, group_pieces)) for group_pieces in pieces]
        groups = [
            Group(g.source, g.labels, g.timestamp_ns, len(lines), size, g.timestamps)
            for (g, lines, _), size in zip(pending.groups, sizes, strict=True)
        ]
        stamps = sum(len(g.timestamps) for g in groups)
        total = sum(sizes) + meta_size_bound(len(groups), len(pending.progress), stamps)
        if total > self.output.ring.slot_capacity and pending.count > 1:
            self._publish_split(pending)
            return
        meta = BatchMeta(time.time_ns(), pending.count, groups, list(pending.progress.values()))
        seq = self._claim()
        length = write_batch(self.output.payload(seq), meta, pieces)
        self.output.commit(seq, length)
        self.output.publish(seq)
        self.acks.published(seq, meta.progress, meta.created_ns)
        self.counters.add(Counter.EVENTS_OUT, pending.count)
        self.counters.add(Counter.BYTES_OUT, length)
        self.counters.add(Counter.BATCHES)
        for index, seq_done in pending.completes.items():
            self.inputs[index].releasable = seq_done
        self._release_inputs()

    def _publish_split(self, pending: _Pending) -> None:
        """Escaping blew the batch past a slot: publish it in two halves."""
        flat = [
            (g, p, line, g.timestamps[k] if g.timestamps else g.timestamp_ns)
            for g, lines, p in pending.groups
            for k, line in enumerate(lines)
        ]
        half = len(flat) // 2
        for part, last in ((flat[:half], False), (flat[half:], True)):
            self.pending = _Pending(opened=pending.opened)
            runs: list[tuple[Group, list[str], bytes, list[int]]] = []
            for group, prefix, line, stamp in part:
                if runs and runs[-1][0] is group:
                    runs[-1][1].append(line)
                    runs[-1][3].append(stamp)
                else:
                    runs.append((group, [line], prefix, [stamp]))
                self.pending.count += 1
            for group, lines, prefix, stamps in runs:
                if group.timestamps:  # each half keeps the times of its own entries
                    group = Group(group.source, group.labels, stamps[0], 0, 0, stamps)
                self.pending.groups.append((group, lines, prefix))
            if last:
                self.pending.progress = pending.progress
                self.pending.completes = pending.completes
            self.flush()

    def _claim(self) -> int:
        while True:
            try:
                return self.output.claim(1, timeout=0.5)
            except BufferFull:
                # sinks are behind: keep committing what they did deliver meanwhile
                self.acks.acknowledge()

    def _release_inputs(self) -> None:
        for source in self.inputs:
            consumer = source.consumer
            if source.releasable > consumer.ring.consumer_cursor(consumer.index):
                consumer.release(source.releasable)

    # -- acknowledgements and checkpoints -------------------------------------------
    def save_checkpoint(self) -> None:
        """Write every acknowledged position now."""
        self.acks.save()

    def all_delivered(self) -> bool:
        """Every published batch has been released by every sink."""
        return self.output.ring.min_consumer_cursor() >= self.output.ring.published
