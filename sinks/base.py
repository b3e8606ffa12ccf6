"""What a sink is, and the loop that feeds it batches from the batch ring."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from logcap.dispatch.batch import Batch
from logcap.errors import DeliveryError
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Consumer

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Delivers batches somewhere. Errors are raised as :class:`DeliveryError` subclasses."""

    def write(self, batch: Batch) -> None:
        """Deliver every entry of ``batch`` (read in place; do not keep references)."""

    def flush(self) -> None:
        """Push out anything buffered; called when the ring has nothing more for now."""

    def close(self) -> None:
        """Release files and connections."""


class SinkRunner:
    """Reads the batch ring with this sink's own cursor and acknowledges by releasing.

    A batch is released only after ``write`` returned, so a crash re-delivers it
    (at least once). Until the retry process exists, a failed batch is retried here with
    capped exponential backoff, holding the cursor: nothing is skipped or lost.
    """

    def __init__(
        self,
        name: str,
        sink: Sink,
        consumer: Consumer,
        counters: CounterBlock,
        sleep: Callable[[float], None] = time.sleep,
        max_backoff: float = 5.0,
    ) -> None:
        self.name = name
        self.sink = sink
        self.consumer = consumer
        self.counters = counters
        self.sleep = sleep
        self.max_backoff = max_backoff

    def step(self, timeout: float = 0.5) -> bool:
        """Deliver what is published (waiting up to ``timeout``); False if idle."""
        consumer = self.consumer
        first = consumer.next_sequence
        last = consumer.wait_for(first, timeout)
        if last < first:
            return False
        for seq in range(first, last + 1):
            batch = Batch.from_slot(consumer.read(seq))
            self._deliver(batch)
            self.counters.add(Counter.EVENTS_IN, batch.meta.count)
            self.counters.add(Counter.EVENTS_OUT, batch.meta.count)
            self.counters.add(Counter.BYTES_OUT, len(batch.payload))
            self.counters.add(Counter.BATCHES)
            del batch  # drop the view into the slot before handing the slot back
            consumer.release(seq)
        self.sink.flush()
        return True

    def _deliver(self, batch: Batch) -> None:
        backoff = 0.05
        while True:
            try:
                self.sink.write(batch)
                return
            except DeliveryError as exc:
                self.counters.add(Counter.ERRORS)
                log.error(
                    "sink %s: delivery failed, retrying in %.2fs: %s", self.name, backoff, exc
                )
                self.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def run(self) -> None:
        """Deliver until the dispatcher closed the ring and everything is delivered."""
        try:
            while not self.consumer.drained:
                self.step()
        finally:
            self.sink.close()
