"""The retry process: one heap, one timer, the DLQ writer, and per-sink acknowledgements.

For every sink it reads the failure ring, keeps retryable batches in the bounded delay
heap, hands due batches back to *that sink only* through its redelivery ring, and writes
permanent failures, exhausted batches and heap overflow to the dead letter queue.

What it owns is published per sink as ``owned_low``: the lowest batch sequence it still
holds for that sink (in the heap, handed back and not yet reported, or waiting for DLQ
space), or ``NOTHING`` (int64 max). It is stored *before* the failure slot is released,
so the dispatcher — which reads a sink's cursor first and ``owned_low`` second — never
sees a failed batch in neither place and never checkpoints past it.
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
from logcap.retry.heap import DelayHeap, RetryItem
from logcap.retry.messages import (
    DELIVERED,
    PERMANENT,
    REDELIVER,
    RETRYABLE,
    read_message,
    send,
)
from logcap.retry.policy import BackoffPolicy
from logcap.ringbuf import Consumer, Producer

log = logging.getLogger(__name__)


@dataclass
class SinkLane:
    """The retry process's view of one sink."""

    index: int
    name: str
    failures: Consumer
    redeliveries: Producer
    counters: CounterBlock  # the sink's block; the RETRY_* / DLQ_* words are ours
    publish_low: Callable[[int], None]
    # items held for this sink, keyed (batch_seq, first_failure_ns): idempotent, so a
    # re-failed redelivery or a repeated report after a sink crash cannot skew it
    owned: set[tuple[int, int]] = field(default_factory=set)

    def low(self) -> int:
        return min((seq for seq, _ in self.owned), default=NOTHING)


class RetryService:
    """The loop of the retry process; ``step`` is one pass, driven by an injected clock."""

    def __init__(
        self,
        policy: BackoffPolicy,
        heap: DelayHeap,
        dlq: DlqWriter,
        lanes: list[SinkLane],
        counters: CounterBlock,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.policy = policy
        self.heap = heap
        self.dlq = dlq
        self.lanes = lanes
        self.counters = counters
        self.clock = clock
        self.wall_ns = wall_ns
        self.waiting_for_dlq: list[tuple[RetryItem, str, str]] = []  # (item, kind, reason)
        # OWNED_LOW is not reset here: the supervisor sets it when it creates the segments.
        # A retry process started on an existing pipeline must leave a predecessor's value
        # in place (its heap died with it), so nothing it held can be checkpointed past.

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
        available = consumer.available()
        first = consumer.next_sequence
        for seq in range(first, available + 1):
            message = read_message(consumer.read(seq))
            key = (message.batch_seq, message.first_failure_ns)
            if message.kind == DELIVERED:
                if key in lane.owned:
                    lane.owned.discard(key)
                    lane.counters.add(Counter.RETRY_DELIVERED)
            elif message.kind not in (RETRYABLE, PERMANENT):
                # never sent by a sink; owning it would hold the checkpoint back for good
                log.error("sink %s sent a record of kind %d; ignored", lane.name, message.kind)
            else:
                item = RetryItem(
                    lane.index,
                    message.batch_seq,
                    message.attempts,
                    self.clock() - (self.wall_ns() - message.first_failure_ns) / 1e9,
                    message.first_failure_ns,
                    message.reason,
                    bytes(message.batch),
                    message.entries,
                )
                lane.owned.add(key)
                if message.kind == PERMANENT:
                    self._to_dlq(item, "permanent", message.reason)
                elif message.kind == RETRYABLE and self._schedule(
                    lane, item, message.retry_after_ms / 1000
                ):
                    # only retries actually scheduled: exhausted / overflow went to the DLQ
                    lane.counters.add(Counter.RETRIES_BY_CODE + message.code % len(REASON_CODES))
            # ownership is published before the slot is released (see module docstring)
            lane.publish_low(lane.low())
            consumer.release(seq)
        return available >= first

    def _schedule(self, lane: SinkLane, item: RetryItem, not_before: float = 0.0) -> bool:
        """Put ``item`` in the heap (True), or send it to the DLQ (False); it is due after
        the backoff delay, or ``not_before`` seconds (the server's Retry-After) if later."""
        why = self.policy.exhausted(item.attempts, item.first_failure, self.clock())
        if why is not None:
            self._to_dlq(item, "exhausted", f"{why}; last error: {item.reason}")
            return False
        delay = max(self.policy.delay(item.attempts), not_before)
        if self.heap.push(self.clock() + delay, item):
            lane.counters.add(Counter.RETRY_SCHEDULED)
            return True
        self._to_dlq(item, "overflow", f"retry heap full; last error: {item.reason}")
        return False

    # -- due items ---------------------------------------------------------------------
    def _redeliver_due(self) -> bool:
        moved = False
        now = self.clock()
        while (item := self.heap.pop_due(now)) is not None:
            lane = self.lanes[item.sink]
            try:
                seq = lane.redeliveries.try_claim()
            except BufferFull:  # the sink is still busy with earlier ones: a moment later
                self.heap.push(now + 0.05, item)
                break
            send(
                lane.redeliveries,
                seq,
                REDELIVER,
                item.batch_seq,
                item.attempts,
                item.first_failure_ns,
                item.entries,
                item.reason,
                item.batch,
            )
            # still owned: the sink reports delivered or failed-again on its failure ring
            moved = True
        return moved

    # -- dead letter queue ----------------------------------------------------------------
    def _to_dlq(self, item: RetryItem, kind: str, reason: str) -> None:
        lane = self.lanes[item.sink]
        try:
            size = self.dlq.append(
                DlqRecord(
                    sink=lane.name,
                    kind=kind,
                    reason=reason,
                    attempts=item.attempts,
                    first_failure_ns=item.first_failure_ns,
                    written_ns=self.wall_ns(),
                    batch_seq=item.batch_seq,
                    entries=item.entries,
                    batch=item.batch,
                )
            )
        except (DlqFull, OSError) as exc:
            if not self.waiting_for_dlq:
                log.error("cannot write to the dead letter queue (%s); pipeline held", exc)
            self.waiting_for_dlq.append((item, kind, reason))
            self.counters.add(Counter.ERRORS)
            return
        lane.owned.discard((item.batch_seq, item.first_failure_ns))
        lane.counters.add(DLQ_RECORDS[kind])
        lane.counters.add(Counter.DLQ_BYTES, size)
        lane.counters.add(Counter.DLQ_ENTRIES, item.entries)

    def _flush_dlq_backlog(self) -> bool:
        if not self.waiting_for_dlq:
            return False
        backlog, self.waiting_for_dlq = self.waiting_for_dlq, []
        for item, kind, reason in backlog:
            if self.waiting_for_dlq:  # still full: keep the order, try again later
                self.waiting_for_dlq.append((item, kind, reason))
            else:
                self._to_dlq(item, kind, reason)
        for lane in self.lanes:
            lane.publish_low(lane.low())
        return len(self.waiting_for_dlq) < len(backlog)

    def _publish_gauges(self) -> None:
        self.counters.set(Counter.RETRY_HEAP_ENTRIES, self.heap.entries)
        self.counters.set(Counter.RETRY_HEAP_BYTES, self.heap.bytes)
        self.counters.set(Counter.DLQ_DROPPED, self.dlq.dropped_records)
        self.counters.set(Counter.DLQ_EXPIRED, self.dlq.expired_records)
        self.counters.set(Counter.DLQ_TOTAL_BYTES, self.dlq.total_bytes)

    def idle(self) -> bool:
        """Nothing held for any sink (every failure resolved)."""
        return (
            not self.heap
            and not self.waiting_for_dlq
            and all(not lane.owned for lane in self.lanes)
        )


DLQ_RECORDS = {
    "permanent": Counter.DLQ_PERMANENT,
    "exhausted": Counter.DLQ_EXHAUSTED,
    "overflow": Counter.DLQ_OVERFLOW,
}
