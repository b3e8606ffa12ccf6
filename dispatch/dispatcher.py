"""The dispatcher: collector rings → batches encoded once → the batch ring; checkpoints.

Loop: take records from every collector ring (dispatch/records.py), encode their entries,
put them into the open batch (dispatch/assemble.py) and publish it to the batch ring,
which every sink reads in place, once it is full — ``batch_max_events`` entries, or no
room for the next entry within ``batch_max_bytes`` — or ``batch_timeout`` has passed.

Nothing is lost if this process is killed at any instant:

* A collector slot is released only once every entry of it is in a *published* batch, so
  a restarted dispatcher re-reads whatever it had not published (duplicates, no loss). A
  record spread over several batches completes (releases its slot, and moves its file
  position) only with the last of them.
* Each batch carries the file positions it completes (``progress``). Positions reach the
  checkpoint file only once every sink has delivered the batch or the retry process holds
  or dead-lettered it (the frontier, see dispatch/acks.py and dispatch/process.py); a
  restarted dispatcher rebuilds the in-flight list from the batches still in the ring.

No record can stop it: one that cannot be decoded, or an entry too large for any batch
(dispatch/bounds.py), is logged, counted as an error and released, never retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from logcap.capture._record import read_header
from logcap.capture.pipeline.config import Condition
from logcap.config import DispatcherConfig
from logcap.dispatch.acks import Acknowledgements
from logcap.dispatch.assemble import OpenBatch, Run, group_meta_bound, position_bytes
from logcap.dispatch.batch import Batch, BatchMeta, Group, write_batch
from logcap.dispatch.checkpoint import CheckpointStore, FilePosition
from logcap.dispatch.encode import encode_entries, encode_rich, encode_stamped
from logcap.dispatch.records import Piece, SourceInput, cut, read_record
from logcap.dispatch.route import Router, regroup
from logcap.errors import BufferFull
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Producer
from logcap.sinks.routing import entries_for

__all__ = ["Dispatcher", "SourceInput"]
log = logging.getLogger(__name__)


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
        largest_batch: int | None = None,
        routes: dict[int, Condition] | None = None,
        routed: tuple[str, ...] = (),
        by_level: bool = True,
        ledger: list[tuple[CounterBlock, frozenset[str] | None, int]] | None = None,
    ) -> None:
        self.config = config
        self.router = Router(routes or {})  # sinks' `when`, by sink index
        self.routed = routed  # the fields sinks' templates name: groups share their values
        self.by_level = by_level  # a sink names the level: groups share it too
        # per sink: its block, inputs and skip bit, to count what each batch holds for it
        # (the events ledger, metrics/ledger.py)
        self.ledger = ledger or []
        self.inputs = inputs
        self.output = output
        self.counters = counters
        self.clock = clock
        slot = output.ring.slot_capacity
        self.max_bytes = min(int(config.batch_max_bytes), slot)
        # a batch of one entry may be larger, up to this (dispatch/bounds.py)
        self.solo_bytes = min(largest_batch or slot, slot)
        self.open = OpenBatch()
        # the frontier is the highest batch every sink has delivered or the DLQ holds; by
        # default the slowest cursor (no retry process)
        self.acks = Acknowledgements(
            checkpoints,
            counters,
            config.checkpoint_interval,
            frontier or output.ring.min_consumer_cursor,
            clock,
            self._acknowledged,
        )
        self._recover_in_flight()

    def retarget(
        self,
        routes: dict[int, Condition],
        routed: tuple[str, ...],
        by_level: bool,
        ledger: list[tuple[CounterBlock, frozenset[str] | None, int]],
    ) -> None:
        """Take a reload's sinks: their ``when`` by slot, the fields and level their
        templates name, their ledger words. The open batch is published first, so every
        batch is cut and counted for one set of sinks (logcap/reload.py)."""
        self.flush()
        self.router = Router(routes)
        self.routed = routed
        self.by_level = by_level
        self.ledger = ledger

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
        # a client waiting for its 200 is not kept waiting for the batch to fill
        if self.open.awaited or (
            self.open.count and self.clock() - self.open.opened >= self.config.batch_timeout
        ):
            self.flush()
        self.acks.acknowledge()
        return moved

    def idle_timeout(self) -> float:
        """How long the loop may park before a timer (batch or checkpoint) is due."""
        now = self.clock()
        saving = self.acks.due_in()
        due = 0.5 if saving is None else saving
        if self.open.count:
            due = min(due, self.open.opened + self.config.batch_timeout - now)
        return max(0.0, min(due, 0.5))

    def _take(self, index: int, source: SourceInput, seq: int) -> None:
        """Batch record ``seq`` of input ``index``, or refuse it if it cannot be read."""
        view = source.consumer.read(seq)
        try:
            pieces, position = read_record(source, read_header(view), view, self.counters)
            pieces = regroup(pieces, self.routed, self.by_level)
            if self.router.active:
                pieces = self.router.split(pieces)
        except Exception:  # a damaged record must not stop the pipeline: log, count, skip
            log.exception("source %s: record %d cannot be read; skipped", source.name, seq)
            self.counters.add(Counter.ERRORS)
            pieces, position = [], None
        del view
        if position is not None and position.ino and source.byte_positions:
            # how far the file is read: what the checkpoint lag counts from
            self.acks.read((position.source, position.dev, position.ino), position.offset)
        self._place(index, seq, pieces, position)

    def _place(
        self, index: int, seq: int, pieces: list[Piece], position: FilePosition | None
    ) -> None:
        """Put a record's entries into batches; its slot and position go with the last."""
        reserve = position_bytes(position)  # the batch with the last entries carries it
        limit = self.config.batch_max_events
        for piece in pieces:
            at = 0
            while at < len(piece.messages):
                if self.open.count >= limit:
                    self.flush()
                part = cut(piece, at, at + limit - self.open.count)
                self._add(self._encode(part), reserve)
                at += len(part.messages)
        if not self.open.count:
            # every entry of the record is published (or refused): nothing waits with it
            self._done_without_entries(index, seq, position)
            return
        self.open.complete(index, seq, position)
        if self.open.count >= limit or self.open.cost >= self.max_bytes:
            self.flush()

    @staticmethod
    def _encode(piece: Piece) -> Run:
        messages, stamps = piece.messages, piece.stamps
        meta = group_meta_bound(piece.source, piece.labels, piece.skip, piece.level, piece.keys)
        if stamps:
            group = Group(
                piece.source,
                piece.labels,
                stamps[0],
                0,
                0,
                stamps,
                piece.skip,
                piece.level,
                piece.keys,
            )
            if piece.levels is None and piece.fields is None:
                body = encode_stamped(piece.head, stamps, messages)
            else:  # entries from pipelines: their levels and fields go along
                body = encode_rich(piece.head, stamps, messages, piece.levels, piece.fields)
            return Run(group, b"", body, 0, len(body), len(messages), meta, piece.read_ns)
        group = Group(piece.source, piece.labels, piece.timestamp_ns, 0, 0, [], piece.skip)
        body, end = encode_entries(piece.head, messages)
        return Run(group, piece.head, body, 0, end, len(messages), meta, piece.read_ns)

    def _add(self, run: Run, reserve: int) -> None:
        """Add ``run`` to the open batch, publishing each batch it fills; what does not fit
        goes into the next one, and the last part stays open."""
        rest: Run | None = run
        while rest is not None:
            first, rest = rest.split(self.max_bytes - self.open.cost - reserve)
            if first is None and not self.open.count:  # one entry alone is larger
                first, rest = rest.split_first() if rest is not None else (None, None)
                if first is not None and first.cost + self.open.cost + reserve > self.solo_bytes:
                    self._refuse(first)
                    continue
            if first is not None:
                if not self.open.count:
                    self.open.opened = self.clock()
                self.open.add(first)
            if rest is not None:
                self.flush()

    def _refuse(self, run: Run) -> None:
        """An entry no batch can hold: dropped, logged and counted, never retried."""
        log.error(
            "source %s: an entry of %d bytes (with its labels) cannot fit a batch of at most "
            "%d bytes; dropped",
            run.group.source,
            run.cost,
            self.solo_bytes,
        )
        self.counters.add(Counter.ERRORS)

    def _done_without_entries(self, index: int, seq: int, position: FilePosition | None) -> None:
        """A record that adds no entry: its position waits for the entries before it."""
        if self.open.count:  # earlier entries wait in the open batch: go with it
            self.open.complete(index, seq, position)
            return
        if position is not None:  # all earlier entries are published: safe with the last
            self.acks.published(self.output.ring.published, [position], time.time_ns())
        self.inputs[index].releasable = seq
        self._release_inputs()

    # -- publishing ----------------------------------------------------------------
    def flush(self) -> None:
        """Publish the open batch (nothing if it holds no entry)."""
        batch, self.open = self.open, OpenBatch()
        if not batch.count:
            return
        groups = [run.final_group() for run in batch.runs]
        progress = list(batch.progress.values())
        meta = BatchMeta(time.time_ns(), batch.count, groups, progress, batch.read_ns)
        seq = self._claim()
        length = write_batch(self.output.payload(seq), meta, [run.pieces() for run in batch.runs])
        self.output.commit(seq, length)
        self.output.publish(seq)
        # counted once published, never before: the ledger reads these first, then the
        # ring, so an entry is never in neither
        for block, inputs, skip_bit in self.ledger:
            block.add(Counter.LEDGER_PUBLISHED, entries_for(groups, inputs, skip_bit))
        self.acks.published(seq, meta.progress, meta.created_ns)
        self.counters.add(Counter.EVENTS_OUT, batch.count)
        self.counters.add(Counter.BYTES_OUT, length)
        self.counters.add(Counter.BATCHES)
        for index, seq_done in batch.completes.items():
            self.inputs[index].releasable = seq_done
        self._release_inputs()

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
    def _acknowledged(self, source: str, position: int) -> None:
        """Publish a source's highest acknowledged request (capture/http/acks.py)."""
        for each in self.inputs:
            if each.name == source and position > each.counters.get(Counter.HTTP_ACKED):
                each.counters.set(Counter.HTTP_ACKED, position)

    def save_checkpoint(self) -> None:
        """Write every acknowledged position now."""
        self.acks.save()

    def all_delivered(self) -> bool:
        """Every published batch has been released by every sink."""
        return self.output.ring.min_consumer_cursor() >= self.output.ring.published
