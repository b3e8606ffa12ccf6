"""What a sink is, and the loop that feeds it batches from the batch ring.

With the retry process (``logcap run``): a batch that fails is copied into this sink's
failure ring, and once the retry process has taken it in — microseconds, not a retry —
the sink releases the batch-ring slot and goes on with the next batch. Batches due again
come back on the sink's redelivery ring and are served first; their outcome is reported
on the failure ring before that slot is released, so a crash re-serves them.
Without a retry process (tests, tools) a failed batch is retried in place instead.

Every batch the runner reads, on every path, is first narrowed to the sink's ``inputs``
(:meth:`SinkRunner._open`, sinks/routing.py); one with nothing for the sink is released
at once without a write: nothing sent, counted or retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from logcap.dispatch.batch import Batch
from logcap.errors import REASON_CODES, DeliveryError, Permanent, Retryable
from logcap.metrics import NOTHING, Counter, CounterBlock, NullBlock
from logcap.metrics.histogram import SINK_WORDS, sink_histograms
from logcap.retry.messages import DELIVERED, PERMANENT, RETRYABLE, read_message, send
from logcap.ringbuf import Consumer, Producer, SleepWait, WaitStrategy
from logcap.sinks.breaker import CircuitBreaker
from logcap.sinks.routing import RoutedBatch, narrow, nothing_for_sink, slot_bytes

log = logging.getLogger(__name__)


Failures = list[tuple[int, DeliveryError]]  # (index of the write since the last flush, error)


class Sink(Protocol):
    """Delivers batches somewhere. Errors are :class:`DeliveryError` subclasses.

    A sink may finish deliveries asynchronously (Kafka: broker acknowledgements): the
    runner writes every batch that is ready, then flushes once, and releases the batches
    only after the flush said which of them failed.
    """

    def write(self, batch: Batch) -> None:
        """Deliver every entry of ``batch``, or start to (read it in place; keep no
        reference to it). Raise if the batch failed at once."""

    def flush(self) -> Failures:
        """Finish every delivery started since the last flush; return the batches that
        failed after their write returned, by the index of their write call (counting
        every call since the last flush). Called when the ring has nothing more for now."""

    def close(self) -> None:
        """Release files and connections."""


def retry_after_ms(exc: DeliveryError) -> int:
    """The delay a destination asked for (HTTP Retry-After), in ms; 0 if none."""
    after = exc.retry_after if isinstance(exc, Retryable) else None
    return 0 if after is None else round(after * 1000)


class SinkRunner:
    """Reads the batch ring with this sink's own cursor and acknowledges by releasing."""

    def __init__(
        self,
        name: str,
        sink: Sink,
        consumer: Consumer,
        counters: CounterBlock,
        failures: Producer | None = None,
        redeliveries: Consumer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_backoff: float = 5.0,
        wall_ns: Callable[[], int] = time.time_ns,
        wait: WaitStrategy | None = None,
        breaker: CircuitBreaker | None = None,
        inputs: frozenset[str] | None = None,
        skip_bit: int = 0,
        histograms: CounterBlock | None = None,
    ) -> None:
        self.name = name
        # delivery latency, send duration, batch size (metrics/histogram.py)
        self.latency, self.send_time, self.batch_size = sink_histograms(
            histograms or NullBlock(SINK_WORDS)
        )
        self.inputs = inputs
        # this sink's bit in each group's skip mask (its `when`; 0: none): fresh batches
        # only, a redelivery holds what this sink's first delivery already kept
        self.skip_bit = skip_bit
        self.breaker = breaker
        self.sink = sink
        self.consumer = consumer
        self.counters = counters
        self.failures = failures
        self.redeliveries = redeliveries
        self.sleep = sleep
        self.max_backoff = max_backoff
        self.wall_ns = wall_ns
        self.wait = wait or SleepWait()

    def _open(self, data: memoryview, fresh: bool = True) -> Batch:
        """The batch in ``data`` (a batch slot, or a redelivered copy) as this sink sees
        it: narrowed to its inputs and, if ``fresh`` from the dispatcher, its ``when``.
        The one place routing is applied. (A redelivery's masks may be of an earlier run
        whose sinks had other indexes; it holds only what this sink kept then.)"""
        return narrow(Batch.from_slot(data), self.inputs, self.skip_bit if fresh else 0)

    @staticmethod
    def _wire(view: memoryview, batch: Batch) -> bytes | memoryview:
        """What is handed to the retry process for ``batch`` read from ``view``: the slot
        as it is, or (narrowed) a batch of only this sink's entries."""
        return slot_bytes(batch) if isinstance(batch, RoutedBatch) else view

    def step(self, timeout: float = 0.5) -> bool:
        """Serve redeliveries, then new batches (waiting up to ``timeout``); False if idle."""
        breaker = self.breaker
        moved = self._serve_redeliveries()
        if moved and breaker is not None and breaker.probing:
            return True  # a redelivery was the probe: its outcome decides first
        consumer = self.consumer
        settled = self.counters.get(Counter.SETTLED_SEQ) - 1
        if consumer.next_sequence <= settled:
            # this sink's previous process delivered these or handed them to the retry
            # process, and died before releasing them: release, do not send them again
            consumer.release(min(settled, consumer.available()))
        first = consumer.next_sequence
        # the cursor first, then the stop word: the dispatcher writes the stop word before
        # it publishes past it, so a batch seen here is never past an unseen stop
        available = consumer.available()
        stop_after = self.stop_after()
        last = min(available, stop_after)
        if first > stop_after:
            return moved  # retiring: everything it was to deliver is settled
        if last < first:
            if moved:
                return True
            available = consumer.wait_for(first, timeout)
            last = min(available, self.stop_after())
            if last < first:
                return self._serve_redeliveries()
        if self.failures is None:  # no retry process: hold the cursor and retry here
            self._deliver_in_place(range(first, last + 1))
        elif breaker is not None and not breaker.allows():
            self._shed(first, last)  # open: straight to the retry heap, untried
        else:
            last = self._deliver(first, last)
        self._settled(last)
        consumer.release(last)
        return True

    def stop_after(self) -> int:
        """The last batch this sink is to deliver: a reload that removes or changes it
        names one (``Counter.RETIRE``, written by the dispatcher before it publishes the
        next batch; logcap/reload.py), else there is no end."""
        retire = self.counters.get(Counter.RETIRE)
        return retire - 2 if retire else NOTHING

    def retired(self) -> bool:
        """A reload retired this sink and every batch up to its last is settled."""
        return self.consumer.next_sequence > self.stop_after()

    def _settled(self, seq: int) -> None:
        """Every fresh batch up to ``seq`` is delivered or owned by the retry process
        (its failure record published): a restarted process of this sink skips them."""
        if self.failures is not None and seq + 1 > self.counters.get(Counter.SETTLED_SEQ):
            self.counters.set(Counter.SETTLED_SEQ, seq + 1)

    def _deliver(self, first: int, last: int) -> int:
        """Write the ready batches, flush once, hand the failed ones to the retry process;
        return the last sequence handled (its slots may then be released)."""
        began = time.monotonic()
        written, last, handed = self._write_ready(first, last)
        # a sink may buffer or await acknowledgements: delivered means flushed
        failed = dict(self.sink.flush())
        if written:
            self.send_time.observe(time.monotonic() - began)
        handed = max(handed, self._settle(written, failed))
        del written  # drop the views into the slots before handing them back
        self._await_taken(handed)
        return last

    def _settle(
        self, written: list[tuple[int, memoryview, Batch, int]], failed: dict[int, DeliveryError]
    ) -> int:
        """Count the flushed batches delivered, hand off those that failed; return the
        failure-ring sequence of the last hand-off (-1: none)."""
        handed = -1
        first_ns = self.wall_ns()
        for index, (seq, view, batch, count) in enumerate(written):
            if count < 0:
                continue
            if index in failed:
                self._judged(failed[index])
                wire = self._wire(view, batch)
                handed = self._hand_off(failed[index], seq, wire, 1, first_ns, count)
            else:
                self._judged(None)
                self._count(count, batch.nbytes, seq)
                self._observe(batch, count)
            # in order, one by one: a process that dies later in this round has its
            # successor skip what is settled (written before and not delivered: sent again)
            self._settled(seq)
        return handed

    def _write_ready(
        self, first: int, last: int
    ) -> tuple[list[tuple[int, memoryview, Batch, int]], int, int]:
        """``write`` every batch from ``first`` on (those with nothing for this sink are
        skipped); a batch that fails at once is handed off. Returns (seq, slot, batch,
        entries or -1 if handed off) per write, the last sequence read, and the
        failure-ring sequence of the last hand-off (-1: none)."""
        breaker, consumer = self.breaker, self.consumer
        probing = breaker is not None and breaker.probing
        if probing:
            last = first  # half-open: one batch tries the destination
        written: list[tuple[int, memoryview, Batch, int]] = []
        handed = -1
        seq = first
        while seq <= last:
            view = consumer.read(seq)
            batch = self._open(view)
            count = batch.meta.count
            if nothing_for_sink(batch):
                pass  # released with the others: this sink has delivered all it had to
            else:
                self._received(seq, batch)
                try:
                    self.sink.write(batch)
                except DeliveryError as exc:
                    self._judged(exc)
                    wire = self._wire(view, batch)
                    handed = self._hand_off(exc, seq, wire, 1, self.wall_ns(), count)
                    written.append((seq, view, batch, -1))  # keeps the write indices aligned
                else:
                    written.append((seq, view, batch, count))
            del batch  # drop the views into the slot before handing the slot back
            seq += 1
            if seq > last and not probing:
                # batches published meanwhile go out before the wait for acknowledgements,
                # up to half the ring, so the dispatcher always has free slots to fill
                available = consumer.available()  # before the stop word: see step()
                limit = min(first + consumer.ring.slot_count // 2, self.stop_after())
                last = max(last, min(available, limit))
        return written, last, handed

    def _judged(self, error: DeliveryError | None) -> None:
        """Tell the breaker how an attempt went."""
        if self.breaker is None:
            return
        if error is None:
            self.breaker.succeeded()
        else:
            self.breaker.failed(error)

    def _shed(self, first: int, last: int) -> None:
        """While the circuit is open: hand batches to the retry heap without trying."""
        assert self.breaker is not None
        cause = self.breaker.last_error
        error = Retryable(f"circuit open: {cause}", cause.code if cause else "other")
        handed = -1
        for seq in range(first, last + 1):
            view = self.consumer.read(seq)
            batch = self._open(view)
            if not nothing_for_sink(batch):
                self._received(seq, batch)
                # attempts 0: the destination was not tried, so no attempt is used up
                handed = self._hand_off(
                    error,
                    seq,
                    self._wire(view, batch),
                    attempts=0,
                    first_ns=self.wall_ns(),
                    entries=batch.meta.count,
                    quiet=True,
                )
            self._settled(seq)  # handed off (or nothing for this sink)
            del view, batch
        # published one after another, taken in (and spooled with one fsync) together
        self._await_taken(handed)

    def _received(self, seq: int, batch: Batch) -> None:
        """Count what a fresh batch holds for this sink, once: a retry in place reads it
        again, a restarted process reads what its predecessor had not released (the
        word keeps the last counted sequence + 1 across restarts); a redelivery was
        counted when it first came."""
        if seq + 1 > self.counters.get(Counter.RECEIVED_SEQ):
            self.counters.set(Counter.RECEIVED_SEQ, seq + 1)
            self.counters.add(Counter.EVENTS_IN, batch.meta.count)
            self.counters.add(Counter.BYTES_IN, batch.nbytes)

    def _observe(self, batch: Batch, entries: int) -> None:
        """A delivered batch in the histograms: its entries' latency from their read
        (timed from its oldest entry) and its size."""
        if batch.meta.read_ns:
            self.latency.observe(max(0, self.wall_ns() - batch.meta.read_ns) / 1e9, entries)
        self.batch_size.observe(entries)

    def _count(self, entries: int, size: int, seq: int | None = None) -> None:
        """Count a delivered batch; a fresh one (``seq``) once, like :meth:`_received`
        (the events ledger needs each delivery once: metrics/ledger.py)."""
        if seq is not None:
            if seq + 1 <= self.counters.get(Counter.DELIVERED_SEQ):
                return
            self.counters.set(Counter.DELIVERED_SEQ, seq + 1)
        self.counters.add(Counter.EVENTS_OUT, entries)
        self.counters.add(Counter.BYTES_OUT, size)
        self.counters.add(Counter.BATCHES)

    def _deliver_in_place(self, seqs: range) -> None:
        """Write batches until each is delivered, holding at the first that fails at once
        (used without a retry process)."""
        pending = list(seqs)
        backoff = 0.05
        while pending:
            batches: list[Batch | None] = []  # None: nothing in it for this sink
            writes: list[int] = []  # index in pending of each write call
            errors: dict[int, DeliveryError] = {}
            began = time.monotonic()
            for index, seq in enumerate(pending):
                batch = self._open(self.consumer.read(seq))
                if nothing_for_sink(batch):
                    batches.append(None)
                    continue
                self._received(seq, batch)
                batches.append(batch)
                writes.append(index)
                try:
                    self.sink.write(batch)
                except DeliveryError as exc:
                    errors[index] = exc
                    break  # later batches wait: order is kept while a sink fails
            errors.update((writes[index], exc) for index, exc in self.sink.flush())
            if writes:
                self.send_time.observe(time.monotonic() - began)
            written = len(batches)
            for index, kept in enumerate(batches):
                if kept is not None and index not in errors:
                    # not by sequence: a flush may fail an earlier batch and a later
                    # one go through (without a retry process; no ledger here)
                    self._count(kept.meta.count, kept.nbytes)
                    self._observe(kept, kept.meta.count)
            del batches
            if not errors:
                return
            self.counters.add(Counter.ERRORS, len(errors))
            log.error(
                "sink %s: delivery failed, retrying in %.2fs: %s",
                self.name,
                backoff,
                next(iter(errors.values())),
            )
            self.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
            pending = [pending[index] for index in sorted(errors)] + pending[written:]

    def _hand_off(
        self,
        exc: DeliveryError,
        batch_seq: int,
        batch: bytes | memoryview,
        attempts: int,
        first_ns: int,
        entries: int,
        quiet: bool = False,
    ) -> int:
        """Publish a failed batch on the failure ring; return its failure-ring sequence.
        The batch slot may be released only after :meth:`_await_taken` of it."""
        assert self.failures is not None
        kind = PERMANENT if isinstance(exc, Permanent) else RETRYABLE
        if not quiet:  # a batch shed while the circuit is open failed nothing itself
            self.counters.add(Counter.ERRORS)
        self.counters.add(Counter.RETRY_HANDOFFS)
        # while the circuit is open every batch is handed off untried: the breaker has
        # said so once, a line per batch would only bury it
        (log.debug if quiet else log.warning)(
            "sink %s: batch %d failed (%s, attempt %d): %s",
            self.name,
            batch_seq,
            "permanent" if kind == PERMANENT else "retryable",
            attempts,
            exc,
        )
        return self._report(
            kind,
            batch_seq,
            attempts,
            first_ns,
            entries,
            str(exc),
            batch,
            REASON_CODES.index(exc.code),
            retry_after_ms(exc),
        )

    def _await_taken(self, seq: int) -> None:
        """Wait until the retry process has taken in (spooled) failure record ``seq``."""
        if seq < 0 or self.failures is None:
            return
        ring = self.failures.ring
        while ring.consumer_cursor(0) < seq:  # until the retry process owns it
            self.wait.wait(0.1)

    def _report(
        self,
        kind: int,
        batch_seq: int,
        attempts: int,
        first_ns: int,
        entries: int,
        reason: str,
        batch: bytes | memoryview = b"",
        code: int = 0,
        after_ms: int = 0,
    ) -> int:
        assert self.failures is not None
        return send(
            self.failures,
            self.failures.claim(1),
            kind,
            batch_seq,
            attempts,
            first_ns,
            entries,
            reason,
            batch,
            code,
            after_ms,
        )

    def _serve_redeliveries(self) -> bool:
        ring = self.redeliveries
        if ring is None:
            return False
        first, last = ring.next_sequence, ring.available()
        if self.breaker is not None and last >= first:
            if not self.breaker.allows():
                return False  # open: they wait in their ring (the retry heap holds the rest)
            if self.breaker.probing:
                last = first
        for seq in range(first, last + 1):
            message = read_message(ring.read(seq))
            batch = self._open(message.batch, fresh=False)
            # nothing for this sink (its inputs changed since it failed): delivered as is
            skip = nothing_for_sink(batch)
            try:
                if not skip:
                    began = time.monotonic()
                    self.sink.write(batch)
                    failed = self.sink.flush()
                    self.send_time.observe(time.monotonic() - began)
                    if failed:
                        raise failed[0][1]
            except DeliveryError as exc:
                self._judged(exc)
                self._await_taken(
                    self._hand_off(
                        exc,
                        message.batch_seq,
                        self._wire(message.batch, batch),
                        message.attempts + 1,
                        message.first_failure_ns,
                        batch.meta.count,
                    )
                )
            else:
                if not skip:
                    self._judged(None)
                    self._count(batch.meta.count, batch.nbytes)
                    self._observe(batch, batch.meta.count)
                self._report(
                    DELIVERED,
                    message.batch_seq,
                    message.attempts,
                    message.first_failure_ns,
                    message.entries,
                    "",
                )
            del batch, message
            ring.release(seq)
        return last >= first

    def run(self) -> None:
        """Deliver until the dispatcher closed the ring and everything is delivered."""
        try:
            while not self.consumer.drained and not self.retired():
                self.step()
        finally:
            self.sink.close()
