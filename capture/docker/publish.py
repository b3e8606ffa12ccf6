"""The docker source's records: the ring's one producer, shared by every reader thread.

A container's gathered lines go out in order as entries records (capture/_entries.py),
its safe position on the last one; a destroyed container's checkpoint entry is dropped
by a ``FORGET`` record once everything before it is delivered. Publishing happens under
one lock: the ring has a single producer.
"""

from __future__ import annotations

import threading
import time

import msgspec

from logcap.capture._entries import (
    FORGET,
    NO_RUNS,
    Entry,
    Position,
    pack_records,
    pack_rich,
    record_capacity,
    write_entries,
)
from logcap.capture.docker.container import ContainerState, container_key
from logcap.capture.docker.stream import cut_utf8
from logcap.capture.pipeline.engine import Processor
from logcap.errors import EntryTooLarge
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Producer


class Publisher:
    """Turns containers' gathered lines into records of one collector ring."""

    def __init__(
        self,
        producer: Producer,
        counters: CounterBlock,
        processor: Processor | None = None,
        static_labels: dict[str, str] | None = None,
    ) -> None:
        self.producer = producer
        self.counters = counters
        self.lock = threading.Lock()
        self.processor = processor  # the source's pipelines, run under the lock
        self.static_labels = static_labels or {}

    def flush(self, container: ContainerState) -> None:
        """Publish the container's gathered lines in order, with its safe position."""
        with container.lock:
            if not container.pending and container.safe == container.published:
                return
            entries, container.pending = container.pending, []
            end, fingerprint = container.safe.encode()
            position = Position(
                f"docker://{container.id}".encode(), container_key(container.id), end, fingerprint
            )
            with self.lock:
                capacity = record_capacity(self.producer, position.path)
                read_ns = time.time_ns()
                if self.processor is not None:
                    chunks = self._processed(self.processor, entries, capacity, read_ns)
                else:
                    try:
                        chunks = pack_records(entries, capacity) if entries else [NO_RUNS]
                    except EntryTooLarge:
                        entries = [self._fit(entry, capacity) for entry in entries]
                        chunks = pack_records(entries, capacity)
                for number, data in enumerate(chunks, 1):
                    seq = self.producer.claim(1)
                    last = number == len(chunks)
                    write_entries(self.producer, seq, data, read_ns, position if last else None)
                    self.producer.publish(seq)
            container.published = container.safe
            self.counters.add(Counter.EVENTS_IN, len(entries))
            # bytes as read (UTF-8), not characters
            self.counters.add(
                Counter.BYTES_IN,
                sum(len(text.encode("utf-8", "surrogatepass")) for _, _, text in entries),
            )

    def _processed(
        self, processor: Processor, entries: list[Entry], capacity: int, read_ns: int
    ) -> list[bytes]:
        """The entries through the source's pipelines, packed (every ``claim`` below
        waits for room, so a run is never repeated: it is committed at once)."""
        processed = processor.run_tuples(entries, read_ns, self.static_labels)
        return pack_rich(processed, capacity, self.counters) or [NO_RUNS]

    def forget(self, container_id: str) -> None:
        """Drop a destroyed container's checkpoint entry, after everything read from it."""
        position = Position(
            f"docker://{container_id}".encode(), container_key(container_id), FORGET, 0
        )
        with self.lock:
            seq = self.producer.claim(1)
            write_entries(self.producer, seq, NO_RUNS, time.time_ns(), position)
            self.producer.publish(seq)

    def close(self) -> None:
        """No record follows: the dispatcher sees the ring closed."""
        with self.lock:
            self.producer.close()

    def _fit(self, entry: Entry, capacity: int) -> Entry:
        """An entry whose labels leave too little room for its message, cut to fit."""
        labels, stamp, text = entry
        size = len(msgspec.msgpack.encode([[labels, [stamp], [text]]]))
        if size <= capacity:
            return entry
        self.counters.add(Counter.LINES_TRUNCATED)
        data = text.encode()
        keep = max(0, len(data) - (size - capacity) - 16)
        return labels, stamp, cut_utf8(data, keep).decode("utf-8", "replace")
