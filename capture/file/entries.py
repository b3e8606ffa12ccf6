"""A file source with pipelines: its blocks of whole lines become processed entries.

Without pipelines the collector publishes raw blocks and the dispatcher cuts them into
entries. With pipelines the cutting happens here, by the same rules
(dispatch/lines.py: the encoding, a byte-order mark, multiline events, ``max_line_bytes``),
the steps run (capture/pipeline/engine.py) on both cores' worth of work apart from the
dispatcher, and the entries are packed into ``FLAG_ENTRIES`` records (capture/_entries.py)
with the file's labels; the last record of a block carries the file's position, so it is
checkpointed once everything before it is delivered, as a raw block's would be.

A block is processed exactly once: its records wait in :attr:`FileEntries.pending` until
the ring takes them, and no other block is processed meanwhile, so a step with memory
(dedup) never sees a line twice, and a full ring costs time, never a line. An entry that
no longer fits a ring slot after its steps loses its fields (then, if needed, the end of
its message); that is counted as a pipeline error, and the entry still goes on.
"""

from __future__ import annotations

from logcap.capture._entries import (
    NO_RUNS,
    Position,
    pack_rich,
    record_capacity,
    write_entries,
)
from logcap.capture._record import FLAG_TRUNCATED, BlockHeader
from logcap.capture.file.config import FileSourceConfig, multiline_rule
from logcap.capture.file.encoding import line_codec
from logcap.capture.labels import PathLabels, file_labels
from logcap.capture.pipeline.engine import Processor
from logcap.capture.pipeline.entry import Entry
from logcap.dispatch.lines import block_messages
from logcap.errors import BufferFull
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Producer

PATHS_REMEMBERED = 4096


class FileEntries:
    """Turns one file source's blocks into processed entry records."""

    def __init__(
        self,
        source: str,
        config: FileSourceConfig,
        processor: Processor,
        counters: CounterBlock,
        host: str,
    ) -> None:
        self.source = source
        self.processor = processor
        self.counters = counters
        self.host = host
        self.static = dict(config.labels)
        self.path_labels = None if config.path_labels is None else PathLabels(config.path_labels)
        self.encoding = line_codec(config.encoding).name
        self.multiline = multiline_rule(config)
        self.max_line_bytes = int(config.max_line_bytes)
        self.skip_long_lines = config.long_lines == "skip"
        self.pending: list[tuple[bytes, Position | None, int]] = []
        self._labels: dict[str, dict[str, str]] = {}

    def labels(self, path: str) -> dict[str, str]:
        """The labels of ``path``'s entries (the same mapping each time: runs share it)."""
        labels = self._labels.get(path)
        if labels is None:
            if len(self._labels) >= PATHS_REMEMBERED:
                self._labels.clear()
            labels = self._labels[path] = file_labels(
                self.host, self.static, self.path_labels, path
            )
        return labels

    def publish(
        self, producer: Producer, header: BlockHeader, data: memoryview, path: str, raw: bytes
    ) -> bool:
        """Process and publish one block; False if an earlier block's records still wait
        for the ring (this block is then left for later, unprocessed)."""
        if not self.flush(producer):
            return False
        messages, overlong = block_messages(
            data,
            header.start == 0,
            self.encoding,
            self.multiline,
            self.max_line_bytes,
            self.skip_long_lines,
        )
        if header.flags & FLAG_TRUNCATED:
            overlong = 1  # the collector cut or dropped this one line already
        if overlong:
            skipped = Counter.LINES_SKIPPED if self.skip_long_lines else Counter.LINES_TRUNCATED
            self.counters.add(skipped, overlong)
        # read: the entries cut, and a line long_lines: skip dropped (pipelines drop later)
        self.counters.add(
            Counter.EVENTS_IN, len(messages) + (overlong if self.skip_long_lines else 0)
        )
        labels = self.labels(path)
        read_ns = header.read_ns
        entries = self.processor.run(
            [Entry(self.source, labels, read_ns, message) for message in messages], read_ns
        )
        capacity = record_capacity(producer, raw)
        # every entry dropped: the position goes on alone
        chunks = pack_rich(entries, capacity, self.counters) or [NO_RUNS]
        position = Position(raw, header.ino, header.end, header.fingerprint, header.dev)
        last = len(chunks) - 1
        self.pending = [
            (chunk, position if i == last else None, read_ns) for i, chunk in enumerate(chunks)
        ]
        self.flush(producer)
        return True  # taken: records the ring has no room for yet go first next time

    def flush(self, producer: Producer, timeout: float = 0.2) -> bool:
        """Publish the records still waiting; False if the ring stayed full."""
        while self.pending:
            try:
                seq = producer.claim(1, timeout=timeout)
            except BufferFull:
                return False
            data, position, read_ns = self.pending[0]
            write_entries(producer, seq, data, read_ns, position)
            producer.publish(seq)
            self.pending.pop(0)
        return True
