"""The retry process: the disk spool, one heap with one timer, the DLQ writer.

For every sink it reads the failure ring and makes each failed batch durable before it
releases the slot: retryable batches go to the spool (retry/spool.py) and into the delay
heap; permanent failures, exhausted batches and spool overflow go to the dead letter
queue. Due batches are handed back to *that sink only* through its redelivery ring; the
sink reports delivered or failed-again on its failure ring, and a delivered batch is
marked done in the spool.

Because nothing is released before it is on disk, a sink's cursor passing a failed batch
means the batch is delivered, spooled or dead-lettered: the checkpoint may move on, and
the death of this process loses nothing. A restarted retry process rebuilds its heap from
the spool, re-reads the failure records its predecessor had not released, and treats the
redeliveries still in a sink's ring as in flight (their outcome arrives as usual).

``owned_low`` (the lowest batch a sink may not be checkpointed past because of us) is
always ``NOTHING``: an item is held in memory only between reading its failure record
and forcing it to disk, and that slot is still unreleased then, so the sink's cursor
already covers it. The word is kept (and published) only because the dispatcher still
reads it; it could be removed with the dispatcher's read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from logcap.dlq.record import DlqRecord
from logcap.dlq.writer import DlqWriter
from logcap.errors import REASON_CODES, BufferFull, DlqFull
from logcap.metrics import NOTHING, Counter, CounterBlock
from logcap.retry.dlq_log import DeadLetterLog
from logcap.retry.heap import DelayHeap, RetryItem
from logcap.retry.messages import (
    DELIVERED,
    PERMANENT,
    REDELIVER,
    RETRYABLE,
    Message,
    read_message,
    send,
)
from logcap.retry.policy import BackoffPolicy
from logcap.retry.spool import Spool, Spooled
from logcap.ringbuf import Consumer, Producer

log = logging.getLogger(__name__)
BUSY_DELAY = 0.05  # a sink's redelivery ring is full: try it again this much later

Key = tuple[int, int]  # (batch_seq, first_failure_ns): a failed batch's identity


@dataclass
class SinkLane:
    """The retry process's view of one sink."""

    index: int
    name: str
    failures: Consumer
    redeliveries: Producer
    counters: CounterBlock  # the sink's block; the RETRY_* / DLQ_* words are ours
    publish_low: Callable[[int], None]
    live: dict[Key, Spooled] = field(default_factory=dict)  # spooled, not yet done
    in_flight: set[int] = field(default_factory=set)  # spool ids handed back, unreported
    held: int = 0  # entries of ``live`` (kept with it: see hold/let_go)

    def hold(self, key: Key, spooled: Spooled) -> None:
        """``spooled`` is this sink's, not yet done."""
        self.let_go(key)
        self.live[key] = spooled
        self.held += spooled.entries

    def let_go(self, key: Key) -> Spooled | None:
        """Done with ``key`` (delivered or dead-lettered); what was held, if anything."""
        spooled = self.live.pop(key, None)
        if spooled is not None:
            self.held -= spooled.entries
        return spooled


class RetryService:
    """The loop of the retry process; ``step`` is one pass, driven by an injected clock."""

    def __init__(
        self,
        policy: BackoffPolicy,
        heap: DelayHeap,
        dlq: DlqWriter,
        lanes: list[SinkLane],
        counters: CounterBlock,
        spool: Spool,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.policy = policy
        self.heap = heap
        self.dlq = dlq
        self.lanes = lanes
        self.counters = counters
        self.spool = spool
        self.clock = clock
        self.wall_ns = wall_ns
        # spooled items the DLQ refused (full, or an IO error): (item, kind, reason)
        self.waiting_for_dlq: list[tuple[RetryItem, str, str]] = []
        self.dead_letters = DeadLetterLog(clock)
        self._recover()

    # -- start -----------------------------------------------------------------------
    def _recover(self) -> None:
        """Rebuild the heap from the spool; redeliveries still in a ring are in flight."""
        by_name = {lane.name: lane for lane in self.lanes}
        in_rings = {lane.name: self._pending_redeliveries(lane) for lane in self.lanes}
        recovered = self.spool.recover()
        for spooled in recovered:
            lane = by_name.get(spooled.sink)
            item = self._item(lane.index if lane else -1, spooled, None)
            if lane is None:
                self._to_dlq(item, "permanent", f"sink {spooled.sink!r} is no longer configured")
                continue
            lane.hold((spooled.batch_seq, spooled.first_failure_ns), spooled)
            if (spooled.batch_seq, spooled.first_failure_ns) in in_rings[lane.name]:
                lane.in_flight.add(spooled.id)
            elif spooled.permanent:
                self._to_dlq(item, "permanent", spooled.reason)
            else:
                self.schedule(item, self.policy.delay(max(spooled.attempts, 1)))
        for lane in self.lanes:
            lane.publish_low(NOTHING)  # what a predecessor held is on disk
        # the events ledger (metrics/ledger.py): at its first start in this run, what an
        # earlier run spooled was never published in this one; counted as carried in,
        # after it is in its place (held, or dead-lettered above), and only once
        first_start = not self.counters.get(Counter.RETRY_STARTED)
        carried: dict[str, int] = {}
        for spooled in recovered:
            carried[spooled.sink] = carried.get(spooled.sink, 0) + spooled.entries
        for lane in self.lanes:
            self.publish_held(lane)
            if first_start and carried.get(lane.name):
                lane.counters.add(Counter.RETRY_CARRIED_IN, carried[lane.name])
        self.counters.set(Counter.RETRY_STARTED, 1)
        if recovered:
            log.info(
                "retry spool: %d batches recovered from %s", len(recovered), self.spool.directory
            )

    @staticmethod
    def _pending_redeliveries(lane: SinkLane) -> set[Key]:
        ring = lane.redeliveries.ring
        keys = set()
        for seq in range(ring.consumer_cursor(0) + 1, ring.published + 1):
            message = read_message(ring.payload(seq)[: ring.slot_length(seq)])
            keys.add((message.batch_seq, message.first_failure_ns))
            del message
        return keys

    # -- one pass --------------------------------------------------------------------
    def step(self, redeliver: bool = True) -> bool:
        """Ingest failures, move due items (unless draining), retry DLQ writes; True if
        anything moved."""
        moved = self._flush_dlq_backlog()
        if not self.waiting_for_dlq:  # DLQ full (block): stop taking in more failures
            for lane in self.lanes:
                moved |= self._ingest(lane)
        if redeliver:
            moved |= self._redeliver_due()
        self.dlq.tick()
        self.dead_letters.tick()
        self._publish_gauges()
        return moved

    def next_timeout(self, maximum: float = 0.5) -> float:
        """How long the loop may sleep: until the heap's earliest item is due."""
        due = self.heap.next_due()
        if self.waiting_for_dlq:
            return min(maximum, 0.25)
        return maximum if due is None else max(0.0, min(maximum, due - self.clock()))

    # -- failure ring ------------------------------------------------------------------
    def _ingest(self, lane: SinkLane) -> bool:
        consumer = lane.failures
        first, available = consumer.next_sequence, consumer.available()
        taken = first - 1
        for seq in range(first, available + 1):
            message = read_message(consumer.read(seq))
            took = self._take(lane, message)
            del message
            if not took:  # neither the spool nor the DLQ can hold it: the sink waits
                break
            taken = seq
        if taken < first:
            return False
        self.spool.sync()  # on disk before the slot is released (module docstring)
        lane.publish_low(NOTHING)
        # held before released, so the sink frees its batch slot only after: the ledger
        # (metrics/ledger.py) never finds these entries in neither place
        self.publish_held(lane)
        consumer.release(taken)
        return True

    def _take(self, lane: SinkLane, message: Message) -> bool:
        """Make one failure record durable; False if it cannot be for now."""
        key = (message.batch_seq, message.first_failure_ns)
        known = lane.live.get(key)
        if message.kind == DELIVERED:
            if known is not None:
                self.spool.done(known)
                lane.let_go(key)
                lane.in_flight.discard(known.id)
                lane.counters.add(Counter.RETRY_DELIVERED)
            return True
        if message.kind not in (RETRYABLE, PERMANENT):
            # never sent by a sink; taking it would mean guessing what it is
            log.error("sink %s sent a record of kind %d; ignored", lane.name, message.kind)
            return True
        permanent = message.kind == PERMANENT
        if known is not None:  # a redelivery failed again
            lane.in_flight.discard(known.id)
            self.spool.attempted(known, message.attempts, message.reason)
            item = self._item(lane.index, known, message.batch)
        else:
            item = RetryItem(
                lane.index,
                message.batch_seq,
                message.attempts,
                self._monotonic_of(message.first_failure_ns),
                message.first_failure_ns,
                message.reason,
                bytes(message.batch),
                message.entries,
            )
        if permanent:
            return self._to_dlq(item, "permanent", message.reason)
        why = self.policy.exhausted(item.attempts, item.first_failure, self.clock())
        if why is not None:
            return self._to_dlq(item, "exhausted", f"{why}; last error: {message.reason}")
        if item.spooled is None:
            if not self.spool.fits(len(message.batch)):
                reason = f"retry spool full; last error: {message.reason}"
                return self._to_dlq(item, "overflow", reason)
            if not self.spool_item(lane, item):
                return self._to_dlq(item, "overflow", f"retry spool unwritable; {message.reason}")
        self.schedule(item, message.retry_after_ms / 1000)
        lane.counters.add(Counter.RETRIES_BY_CODE + message.code % len(REASON_CODES))
        return True

    def spool_item(self, lane: SinkLane, item: RetryItem, permanent: bool = False) -> bool:
        """Append ``item`` to the spool; False if the disk refused it."""
        assert item.batch is not None
        try:
            spooled = self.spool.put(
                lane.name, item.batch_seq, item.attempts, item.first_failure_ns, item.entries,
                item.reason, item.batch, permanent,
            )  # fmt: skip
        except OSError as exc:
            log.error("cannot write to the retry spool %s: %s", self.spool.directory, exc)
            self.counters.add(Counter.ERRORS)
            return False
        item.spooled = spooled
        lane.hold((item.batch_seq, item.first_failure_ns), spooled)
        return True

    def schedule(self, item: RetryItem, not_before: float = 0.0) -> None:
        """Put a spooled ``item`` in the heap, due after the backoff delay or
        ``not_before`` seconds (the server's Retry-After) if later."""
        delay = max(self.policy.delay(item.attempts), not_before)
        self.heap.push(self.clock() + delay, item)
        if item.sink >= 0:
            self.lanes[item.sink].counters.add(Counter.RETRY_SCHEDULED)

    def _item(self, sink: int, spooled: Spooled, batch: memoryview | None) -> RetryItem:
        return RetryItem(
            sink,
            spooled.batch_seq,
            spooled.attempts,
            self._monotonic_of(spooled.first_failure_ns),
            spooled.first_failure_ns,
            spooled.reason,
            None if batch is None else bytes(batch),
            spooled.entries,
            spooled,
        )

    def _monotonic_of(self, wall_ns: int) -> float:
        return self.clock() - (self.wall_ns() - wall_ns) / 1e9

    # -- due items ---------------------------------------------------------------------
    def _redeliver_due(self) -> bool:
        moved = False
        now = self.clock()
        busy: list[RetryItem] = []
        while (item := self.heap.pop_due(now)) is not None:
            lane = self.lanes[item.sink]
            assert item.spooled is not None
            if item.spooled.id not in self.spool.live or item.spooled.id in lane.in_flight:
                # done meanwhile, or scheduled twice (a predecessor's failure record for a
                # batch the spool already held): one copy is enough
                continue
            try:
                seq = lane.redeliveries.try_claim()
            except BufferFull:  # the sink is still busy with earlier ones: a moment later
                busy.append(item)
                continue
            batch = item.batch if item.batch is not None else self.spool.read_batch(item.spooled)
            send(
                lane.redeliveries,
                seq,
                REDELIVER,
                item.batch_seq,
                item.attempts,
                item.first_failure_ns,
                item.entries,
                item.reason,
                batch,
            )
            # still spooled: the sink reports delivered or failed-again on its failure ring
            lane.in_flight.add(item.spooled.id)
            moved = True
        for item in busy:
            self.heap.push(now + BUSY_DELAY, item)
        return moved

    # -- dead letter queue ----------------------------------------------------------------
    def _to_dlq(self, item: RetryItem, kind: str, reason: str) -> bool:
        """Write ``item`` to the DLQ; if the DLQ refuses, keep it in the spool until it
        takes it (False only if the spool cannot hold it either)."""
        lane = self.lanes[item.sink] if item.sink >= 0 else None
        sink_name = lane.name if lane is not None else (item.spooled.sink if item.spooled else "")
        batch = item.batch
        try:
            if batch is None:
                assert item.spooled is not None
                batch = self.spool.read_batch(item.spooled)
            size = self.dlq.append(
                DlqRecord(
                    sink=sink_name,
                    kind=kind,
                    reason=reason,
                    attempts=item.attempts,
                    first_failure_ns=item.first_failure_ns,
                    written_ns=self.wall_ns(),
                    batch_seq=item.batch_seq,
                    entries=item.entries,
                    batch=batch,
                )
            )
        except (DlqFull, OSError) as exc:
            if not self.waiting_for_dlq:
                log.error("cannot write to the dead letter queue (%s); pipeline held", exc)
            self.counters.add(Counter.ERRORS)
            if item.spooled is None and (
                lane is None
                or not self.spool.fits(item.size)
                or not self.spool_item(lane, item, True)
            ):
                return False
            self.waiting_for_dlq.append((item, kind, reason))
            return True
        self.dead_letters.dead_lettered(sink_name, kind, item.entries, reason)
        if item.spooled is not None:
            self.spool.done(item.spooled)
            if lane is not None:
                lane.let_go((item.batch_seq, item.first_failure_ns))
        if lane is not None:
            lane.counters.add(DLQ_RECORDS[kind])
            lane.counters.add(Counter.DLQ_BYTES, size)
            lane.counters.add(Counter.DLQ_ENTRIES, item.entries)
        return True

    def _flush_dlq_backlog(self) -> bool:
        if not self.waiting_for_dlq:
            return False
        backlog, self.waiting_for_dlq = self.waiting_for_dlq, []
        for item, kind, reason in backlog:
            if self.waiting_for_dlq:  # still full: keep the order, try again later
                self.waiting_for_dlq.append((item, kind, reason))
            else:
                self._to_dlq(item, kind, reason)
        return len(self.waiting_for_dlq) < len(backlog)

    @staticmethod
    def publish_held(lane: SinkLane) -> None:
        """Entries held for the lane's sink: every batch it spooled and is not done with
        (due, waiting for the DLQ, or handed back and not yet reported)."""
        lane.counters.set(Counter.RETRY_HELD_ENTRIES, lane.held)

    def _publish_gauges(self) -> None:
        for lane in self.lanes:
            self.publish_held(lane)
        self.counters.set(Counter.RETRY_HEAP_ENTRIES, self.heap.entries)
        self.counters.set(Counter.RETRY_HEAP_BYTES, self.heap.bytes)
        self.counters.set(Counter.SPOOL_BYTES, self.spool.total_bytes)
        self.counters.set(Counter.SPOOL_BATCHES, len(self.spool.live))
        self.counters.set(Counter.DLQ_DROPPED, self.dlq.dropped_records)
        self.counters.set(Counter.DLQ_EXPIRED, self.dlq.expired_records)
        self.counters.set(Counter.DLQ_TOTAL_BYTES, self.dlq.total_bytes)

    def idle(self) -> bool:
        """Nothing held for any sink (every failure resolved)."""
        return not self.heap and not self.waiting_for_dlq and not self.spool.live

    def close(self) -> None:
        """Sync and close the spool and the DLQ."""
        self.dead_letters.flush()
        self.spool.close()
        self.dlq.close()


DLQ_RECORDS = {
    "permanent": Counter.DLQ_PERMANENT,
    "exhausted": Counter.DLQ_EXHAUSTED,
    "overflow": Counter.DLQ_OVERFLOW,
}
