"""Per-component counters in one shared-memory segment, summed into /metrics by the supervisor.

Every process adds to its own words only (one writer per word), per batch or per block,
never per line, so plain int64 stores are enough: no locks, no atomics.

Layout (little-endian int64 words)::

    word 0                     magic 0x4C4F47434150434E ("LOGCAPCN")
    word 1                     number of components
    word 2                     A: words of the areas after the blocks
    word 3..7                  reserved
    word 8 + c*WORDS + k       counter k (see :class:`Counter`) of component c
    word 8 + C*WORDS + i       area word i (C components, 0 <= i < A), first the step
                               area: one word per (source, pipeline, step, outcome), each
                               source's words in the order capture/pipeline/engine.py
                               step_series gives; then the histogram area: per sink, its
                               histograms (metrics/histogram.py); offsets: logcap/plan.py

The component order is fixed by the run plan (sources, dispatcher, sinks, retry), so
every process finds its block by index. A sink's block holds words written by the sink
and words written by the retry process on its behalf (see :class:`Counter`); no word has
two writers.
"""

from __future__ import annotations

import enum
from multiprocessing.shared_memory import SharedMemory

from logcap.errors import RingCorrupt
from logcap.ringbuf import _shm

MAGIC = 0x4C4F47434150434E
HEADER_WORDS = 8
WORDS = 64
NOTHING = (1 << 63) - 1  # OWNED_LOW when the retry process holds nothing for a sink


class Counter(enum.IntEnum):
    """Index of each counter inside a component's block."""

    EVENTS_IN = 0
    BYTES_IN = 1
    EVENTS_OUT = 2
    BYTES_OUT = 3
    ERRORS = 4
    BATCHES = 5
    LINES_TRUNCATED = 6
    # a gauge: current value, not a running total; an http source's is 1 once it serves
    # (the supervisor zeroes it before it starts the collector: /ready waits for it)
    FILES_WATCHED = 7
    CHECKPOINTS = 8
    FILE_RESETS = 9
    ROTATIONS = 10
    # kafka source blocks (a gauge), written by the collector: messages of its partitions
    # past the group's committed offset (high watermark - committed); the word file
    # sinks use for ROTATIONS, which no source writes (the block has no free word)
    KAFKA_LAG = 10
    # sink blocks, written by the sink: batches handed to the retry process
    RETRY_HANDOFFS = 11
    # sink blocks, written by the retry process (one writer per word still holds)
    RETRY_SCHEDULED = 12
    RETRY_DELIVERED = 13
    DLQ_PERMANENT = 14
    DLQ_EXHAUSTED = 15
    DLQ_OVERFLOW = 16
    DLQ_BYTES = 17
    DLQ_ENTRIES = 18
    OWNED_LOW = 19  # lowest batch sequence the retry process still holds for this sink
    # the retry process's own block (gauges)
    RETRY_HEAP_ENTRIES = 20
    RETRY_HEAP_BYTES = 21
    DLQ_DROPPED = 22
    DLQ_EXPIRED = 23
    DLQ_TOTAL_BYTES = 24
    # the dispatcher's block (gauges)
    CHECKPOINT_LAG_BYTES = 25
    CHECKPOINT_LAG_MS = 26
    # source blocks, written by the dispatcher: lines dropped by long_lines: skip
    LINES_SKIPPED = 27
    # http source blocks: requests refused with 429 while the pipeline was full
    HTTP_THROTTLED = 28
    # docker source blocks: reconnections to the daemon, and lines joined from Docker's
    # 16 KiB pieces (FILES_WATCHED counts the containers being read)
    DOCKER_RECONNECTS = 29
    LINES_JOINED = 30
    # http source blocks, written by the dispatcher: the highest request position whose
    # entries every sink delivered or the retry spool/DLQ holds (capture/http/acks.py)
    HTTP_ACKED = 31
    # sink blocks, written by the retry process: retries scheduled, one word per reason
    # code (logcap.errors.REASON_CODES, 8 of them)
    RETRIES_BY_CODE = 32
    # sink blocks, written by the sink: its circuit breaker (see sinks/breaker.py)
    CIRCUIT_STATE = 40  # a gauge: 0 closed, 1 open, 2 half-open
    CIRCUIT_OPENINGS = 41
    # the retry process's own block (gauges): the disk spool of batches waiting for a retry
    SPOOL_BYTES = 42
    SPOOL_BATCHES = 43
    # sink blocks, written by the retry process: DLQ records re-offered by dlq.reprocess
    DLQ_REPROCESSED = 44
    # source blocks, written by the collector: its pipelines' step failures (the entry
    # goes on unchanged), entries dropped by drop/dedup/timestamp_limits, and event times
    # outside timestamp_limits (clamped, kept or dropped)
    PIPELINE_ERRORS = 45
    PIPELINE_DROPPED = 46
    TIMESTAMPS_OUT_OF_RANGE = 47
    # source blocks, written by the collector: time it held back reading (milliseconds,
    # a running total) and entries it dropped (when_exceeded: drop) for its rate_limit
    RATE_LIMITED_MS = 48
    RATE_LIMIT_DROPPED = 49
    # file sink blocks, written by its housekeeper thread (the sink's own thread never
    # writes these): rotated files compressed and deleted (max_files), tidying failures
    FILES_COMPRESSED = 50
    FILES_DELETED = 51
    HOUSEKEEPING_FAILURES = 52
    # loki sink blocks: entries sent without a label max_label_values stopped sending,
    # and entries left out of a retry because an earlier attempt delivered them
    LOKI_ENTRIES_PRUNED = 53
    LOKI_ENTRIES_SKIPPED = 54
    # sink blocks, the events ledger (metrics/ledger.py). Written by the dispatcher:
    # entries published in batches for this sink (its inputs, its `when`)
    LEDGER_PUBLISHED = 55
    # written by the sink: the last fresh batch whose entries it counted as received and
    # as delivered (a restarted sink process counts none of them twice)
    RECEIVED_SEQ = 56
    DELIVERED_SEQ = 57
    # written by the retry process: entries it holds for the sink (spooled, due, handed
    # back and not yet reported; a gauge), and dead-lettered entries dlq.reprocess
    # took back from the DLQ
    RETRY_HELD_ENTRIES = 58
    DLQ_REPROCESSED_ENTRIES = 59
    # written by the retry process: entries of a previous run's spool it took over at its
    # first start in this run (counted once: RETRY_STARTED in its own block says so)
    RETRY_CARRIED_IN = 60
    # the retry process's own block: 1 once it has started in this run
    RETRY_STARTED = 61
    # sink blocks, written by the sink: the last fresh batch + 1 up to which every one is
    # delivered or handed to the retry process (a restarted sink releases them unsent)
    SETTLED_SEQ = 62
    # a reload retires the component (logcap/reload.py): 0 runs on; a sink: the last
    # batch it is to deliver + 2 (it takes nothing later, then exits), written by the
    # dispatcher before it publishes past it; the dispatcher and the retry process:
    # nonzero, exit cleanly now, written by the supervisor. The supervisor sets it back
    # to 0 only once the component has exited (never two writers at once)
    RETIRE = 63


class CounterTable:
    """The whole segment; ``block(i)`` is what a component writes to."""

    def __init__(self, shm: SharedMemory) -> None:
        self.shm = shm
        self._words = _shm.buffer(shm).cast("q")
        if self._words[0] != MAGIC:
            raise RingCorrupt(f"segment {shm.name!r} is not a logcap counter table")
        self.components = self._words[1]
        self.area_words = self._words[2]

    @staticmethod
    def size(components: int, area_words: int = 0) -> int:
        """Bytes needed for ``components`` blocks and the areas after them."""
        return (HEADER_WORDS + components * WORDS + area_words) * 8

    @classmethod
    def create(cls, name: str, components: int, area_words: int = 0) -> CounterTable:
        """Create a zeroed table."""
        shm = _shm.create(name, cls.size(components, area_words))
        words = _shm.buffer(shm).cast("q")
        words[1] = components
        words[2] = area_words
        words[0] = MAGIC
        words.release()
        return cls(shm)

    @classmethod
    def attach(cls, name: str) -> CounterTable:
        """Open an existing table."""
        return cls(_shm.attach(name))

    def block(self, component: int) -> CounterBlock:
        """The counters of one component."""
        if not 0 <= component < self.components:
            raise IndexError(f"no component {component} of {self.components}")
        return CounterBlock(self._words, HEADER_WORDS + component * WORDS)

    def area_block(self, offset: int, count: int) -> CounterBlock:
        """The ``count`` area words from ``offset`` (one source's steps, one sink's
        histograms): word i of the block is area word ``offset + i``."""
        if not (offset >= 0 and offset + count <= self.area_words):
            raise IndexError(f"no area words {offset}..{offset + count} of {self.area_words}")
        return CounterBlock(self._words, HEADER_WORDS + self.components * WORDS + offset)

    def read_area(self, offset: int, count: int) -> list[int]:
        """A snapshot of ``count`` area words from ``offset``."""
        base = HEADER_WORDS + self.components * WORDS + offset
        return list(self._words[base : base + count])

    def read(self, component: int) -> dict[Counter, int]:
        """A snapshot of one component's named counters."""
        base = HEADER_WORDS + component * WORDS
        return {c: self._words[base + c] for c in Counter}

    def read_all(self, component: int) -> list[int]:
        """Every word of one component's block, by index."""
        base = HEADER_WORDS + component * WORDS
        return list(self._words[base : base + WORDS])

    def close(self) -> None:
        """Unmap (the segment stays)."""
        self._words.release()
        self.shm.close()


class CounterBlock:
    """One component's counters; only that component's process writes them."""

    def __init__(self, words: memoryview, base: int) -> None:
        self._words = words
        self._base = base

    def add(self, counter: int, amount: int = 1) -> None:
        """Increase a counter (call per batch/block, not per line)."""
        self._words[self._base + counter] += amount

    def set(self, counter: Counter, value: int) -> None:
        """Set a gauge-like counter."""
        self._words[self._base + counter] = value

    def get(self, counter: Counter) -> int:
        """Current value."""
        return int(self._words[self._base + counter])

    def get_word(self, index: int) -> int:
        """Current value of word ``index`` of the block (an area's words have no names)."""
        return int(self._words[self._base + index])


class NullBlock(CounterBlock):
    """A block that counts into a private array (tools and tests without a table)."""

    def __init__(self, words: int = WORDS) -> None:
        super().__init__(memoryview(bytearray(words * 8)).cast("q"), 0)
