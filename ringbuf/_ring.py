"""A Disruptor-style ring of fixed-size slots in one shared-memory segment.

One producer, ``consumers`` consumers (1 for a collector ring, one per sink for the
batch ring). Sequences are int64 and only grow; slot ``s`` lives at ``s & (slots-1)``.
The producer ``claim``\\ s sequences, writes their slots, then ``publish``\\ es the highest;
every consumer has its own cursor, and the producer may not reuse a slot until the
slowest consumer has released it (gating) — that is the back-pressure path.

Layout (all integers little-endian int64, offsets in bytes)::

    0     magic          b"LOGCAPRB"
    8     version        1
    16    slot_count     power of two
    24    slot_size      bytes per slot, slot header included, multiple of 64
    32    consumers      number of consumer cursors
    40    closed         0 open, 1 the producer finished cleanly (no more publishes)
    48    reserved       (16 bytes)
    64    published      producer cursor: highest published sequence, -1 if none
    72    reserved       rest of the 64-byte line, so the cursor shares it with nothing
    128+64*i  consumer i cursor: highest sequence consumer i has released, -1 if none;
              INACTIVE (2**63-1) for a cursor no consumer holds (a sink slot reserved
              for a reload, or a removed sink's): it never gates, and the min over all
              cursors needs no list of the active ones
    H     slots          H = 128 + 64*consumers rounded up to 4096

    slot k at H + k*slot_size:
    +0    length         payload bytes in use
    +8    sequence       the sequence last written here (a cheap integrity check)
    +16   payload        slot_size - 16 bytes

Memory ordering. CPython has no atomics; what makes this safe is that every cursor is an
8-byte-aligned int64 written by exactly one process with a single store through a
``memoryview.cast("q")`` (never ``struct.pack_into``, which zeroes the bytes first and lets
another process read a transient 0), that the payload is written *before* the cursor
that publishes it, and that x86-64 (TSO) neither reorders stores with older stores nor
loads with older loads. On a weaker memory model (ARM) this would need real fences.
The cross-process stress test in ``tests/test_ring_stress.py`` checks exactly this.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from multiprocessing.shared_memory import SharedMemory

from logcap.errors import BufferFull, RingCorrupt
from logcap.ringbuf import _shm
from logcap.ringbuf._wait import SleepWait, WaitStrategy

MAGIC = b"LOGCAPRB"
INACTIVE = (1 << 63) - 1  # the cursor of a consumer index nobody holds
VERSION = 1
SLOT_HEADER = 16
_W_VERSION, _W_SLOTS, _W_SLOT_SIZE, _W_CONSUMERS, _W_CLOSED = 1, 2, 3, 4, 5
_W_PUBLISHED = 64 // 8


def _consumer_word(index: int) -> int:
    return (128 + 64 * index) // 8


def _header_size(consumers: int) -> int:
    return -(-(128 + 64 * consumers) // 4096) * 4096


class Ring:
    """The shared segment and its layout; use :class:`Producer` / :class:`Consumer`."""

    def __init__(self, shm: SharedMemory) -> None:
        self.shm = shm
        buf = _shm.buffer(shm)
        # A size that is not whole int64 words would make the cast below raise TypeError.
        if len(buf) < 4096 or len(buf) % 8 or bytes(buf[:8]) != MAGIC:
            raise RingCorrupt(f"segment {shm.name!r} is not a logcap ring")
        self._words = buf.cast("q")
        if self._words[_W_VERSION] != VERSION:
            raise RingCorrupt(f"ring {shm.name!r} has version {self._words[_W_VERSION]}")
        self.slot_count = self._words[_W_SLOTS]
        self.slot_size = self._words[_W_SLOT_SIZE]
        self.consumers = self._words[_W_CONSUMERS]
        self._slots_at = _header_size(self.consumers)
        if (
            self.consumers < 1
            or self.slot_count <= 0
            or self.slot_count & (self.slot_count - 1)
            or self.slot_size % 64
            or self.slot_size <= SLOT_HEADER
            or self._slots_at + self.slot_count * self.slot_size > len(buf)
        ):
            raise RingCorrupt(f"ring {shm.name!r} header is inconsistent with its size")
        self.mask = self.slot_count - 1
        self.slot_capacity = self.slot_size - SLOT_HEADER
        # One writable view per slot payload, made once: slicing per access costs ~100 ns.
        self._payloads = [
            buf[at + SLOT_HEADER : at + self.slot_size]
            for at in range(
                self._slots_at, self._slots_at + self.slot_count * self.slot_size, self.slot_size
            )
        ]
        self._slot_words = [
            (self._slots_at + k * self.slot_size) // 8 for k in range(self.slot_count)
        ]

    @staticmethod
    def segment_size(slot_count: int, slot_size: int, consumers: int) -> int:
        """Bytes needed for a ring of this shape."""
        return _header_size(consumers) + slot_count * slot_size

    @classmethod
    def create(
        cls,
        name: str,
        slot_count: int,
        slot_payload: int,
        consumers: int,
        active: int | None = None,
    ) -> Ring:
        """Create and initialise a ring whose slots hold ``slot_payload`` bytes each;
        consumer indexes from ``active`` on (default: none) start INACTIVE."""
        if slot_count <= 0 or slot_count & (slot_count - 1):
            raise ValueError(f"slot_count must be a power of two, got {slot_count}")
        if consumers < 1:
            raise ValueError("a ring needs at least one consumer")
        slot_size = -(-(slot_payload + SLOT_HEADER) // 64) * 64
        shm = _shm.create(name, cls.segment_size(slot_count, slot_size, consumers))
        words = _shm.buffer(shm).cast("q")
        words[_W_VERSION] = VERSION
        words[_W_SLOTS] = slot_count
        words[_W_SLOT_SIZE] = slot_size
        words[_W_CONSUMERS] = consumers
        words[_W_PUBLISHED] = -1
        for i in range(consumers):
            words[_consumer_word(i)] = -1 if active is None or i < active else INACTIVE
        words.release()
        _shm.buffer(shm)[:8] = MAGIC  # last: a half-initialised segment never looks valid
        return cls(shm)

    @classmethod
    def attach(cls, name: str) -> Ring:
        """Open an existing ring by segment name."""
        return cls(_shm.attach(name))

    # -- cursors -------------------------------------------------------------------
    @property
    def published(self) -> int:
        """Highest published sequence (-1 before the first publish)."""
        return self._words[_W_PUBLISHED]

    def consumer_cursor(self, index: int) -> int:
        """Highest sequence consumer ``index`` has released."""
        return self._words[_consumer_word(index)]

    def active(self, index: int) -> bool:
        """Whether a consumer holds cursor ``index`` (it is not INACTIVE)."""
        return self._words[_consumer_word(index)] != INACTIVE

    def activate(self, index: int) -> int:
        """Start an INACTIVE cursor at the current ``published`` and return it. Only the
        producer calls this (between two publishes, before any consumer holds the index),
        so the cursor still has one writer at a time: the new consumer reads from the
        next publish on, and from now on the producer gates on it."""
        at = self.published
        self._words[_consumer_word(index)] = at
        return at

    def deactivate(self, index: int) -> None:
        """Make cursor ``index`` INACTIVE once its consumer has exited for good (the
        supervisor, after a reload removed a sink): it no longer gates the producer."""
        self._words[_consumer_word(index)] = INACTIVE

    def min_consumer_cursor(self) -> int:
        """The gating sequence: the slowest consumer's cursor."""
        words = self._words
        return min(words[_consumer_word(i)] for i in range(self.consumers))

    @property
    def closed(self) -> bool:
        """True once the producer has finished cleanly and will publish no more."""
        return self._words[_W_CLOSED] == 1

    def occupancy(self) -> int:
        """Slots published but not yet released by the slowest consumer."""
        return max(0, self.published - self.min_consumer_cursor())

    # -- slots ---------------------------------------------------------------------
    def payload(self, seq: int) -> memoryview:
        """The whole writable payload area of the slot holding ``seq``."""
        return self._payloads[seq & self.mask]

    def slot_length(self, seq: int) -> int:
        """Bytes the producer wrote into the slot holding ``seq``."""
        return self._words[self._slot_words[seq & self.mask]]

    def slot_sequence(self, seq: int) -> int:
        """The sequence stamped into the slot holding ``seq`` when it was written."""
        return self._words[self._slot_words[seq & self.mask] + 1]

    def close(self) -> None:
        """Release this process's mapping (the segment itself stays)."""
        self._payloads.clear()
        self._words.release()
        self.shm.close()

    # -- used by Producer / Consumer only ------------------------------------------
    def _store(self, word: int, value: int) -> None:
        self._words[word] = value

    def _stamp(self, seq: int, length: int) -> None:
        word = self._slot_words[seq & self.mask]
        self._words[word] = length
        self._words[word + 1] = seq


class Producer:
    """The single writer of a ring. ``claim`` → write ``payload(seq)`` → ``publish``."""

    def __init__(
        self,
        ring: Ring,
        wake: Sequence[WaitStrategy] = (),
        wait: WaitStrategy | None = None,
    ) -> None:
        self.ring = ring
        self._wake = list(wake)
        self._wait = wait or SleepWait()
        # A restarted producer resumes after the last published sequence; whatever a
        # crashed predecessor claimed but never published is simply overwritten.
        self._next = ring.published + 1
        self._gate = ring.min_consumer_cursor()
        ring._store(_W_CLOSED, 0)

    def wake_only(self, wake: Sequence[WaitStrategy]) -> None:
        """Ring these after each publish from now on (a reload changed the consumers)."""
        self._wake = list(wake)

    @property
    def next_sequence(self) -> int:
        """The sequence the next claim will start at."""
        return self._next

    def free_slots(self) -> int:
        """Slots that could be claimed right now."""
        self._gate = self.ring.min_consumer_cursor()
        return self.ring.slot_count - (self._next - 1 - self._gate)

    def try_claim(self, n: int = 1) -> int:
        """Claim ``n`` slots and return the highest sequence, or raise :class:`BufferFull`."""
        if not 0 < n <= self.ring.slot_count:
            raise ValueError(f"cannot claim {n} slots of {self.ring.slot_count}")
        hi = self._next + n - 1
        wrap = hi - self.ring.slot_count
        if wrap > self._gate:
            self._gate = self.ring.min_consumer_cursor()
            if wrap > self._gate:
                raise BufferFull(f"ring {self.ring.shm.name} is full")
        self._next = hi + 1
        return hi

    def claim(self, n: int = 1, timeout: float | None = None) -> int:
        """Claim ``n`` slots, waiting for consumers; :class:`BufferFull` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self.try_claim(n)
            except BufferFull:
                remaining = 0.5 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise
                self._wait.wait(min(remaining, 0.5))

    def payload(self, seq: int) -> memoryview:
        """The writable payload area of a claimed slot."""
        return self.ring.payload(seq)

    def commit(self, seq: int, length: int) -> None:
        """Record how many payload bytes ``seq`` holds (before it is published)."""
        self.ring._stamp(seq, length)

    def write(self, seq: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into the claimed slot ``seq`` and record its length."""
        n = len(data)
        self.ring.payload(seq)[:n] = data
        self.ring._stamp(seq, n)

    def publish(self, hi: int) -> None:
        """Make every claimed sequence up to ``hi`` visible, then wake the consumers."""
        self.ring._store(_W_PUBLISHED, hi)
        for waiter in self._wake:
            waiter.signal()

    def close(self) -> None:
        """Say that nothing more will be published (a clean shutdown)."""
        self.ring._store(_W_CLOSED, 1)
        for waiter in self._wake:
            waiter.signal()


class Consumer:
    """One reader of a ring with its own cursor; ``release`` frees slots for the producer."""

    def __init__(
        self,
        ring: Ring,
        index: int = 0,
        wake_producer: WaitStrategy | None = None,
        wait: WaitStrategy | None = None,
    ) -> None:
        if not 0 <= index < ring.consumers:
            raise ValueError(f"ring has {ring.consumers} consumers, no index {index}")
        self.ring = ring
        self.index = index
        self._word = _consumer_word(index)
        self._wake = wake_producer
        self._wait = wait or SleepWait()
        self.next_sequence = ring.consumer_cursor(index) + 1

    def available(self) -> int:
        """Highest published sequence (may be below ``next_sequence``: nothing new)."""
        return self.ring.published

    def wait_for(self, seq: int, timeout: float) -> int:
        """Wait until ``seq`` is published or ``timeout`` passes; return the cursor."""
        available = self.ring.published
        if available >= seq:
            return available
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return available
            self._wait.wait(remaining)
            available = self.ring.published
            if available >= seq:
                return available

    def read(self, seq: int) -> memoryview:
        """The bytes published at ``seq``, read in place (valid until released)."""
        return self.ring.payload(seq)[: self.ring.slot_length(seq)]

    def release(self, seq: int) -> None:
        """Hand every slot up to ``seq`` back to the producer.

        A consumer may read ahead of what it releases (the dispatcher keeps a block until
        its lines are published), so ``next_sequence`` only ever moves forward here.
        """
        self.ring._store(self._word, seq)
        self.next_sequence = max(self.next_sequence, seq + 1)
        if self._wake is not None:
            self._wake.signal()

    @property
    def drained(self) -> bool:
        """The producer closed the ring and everything it published was released."""
        return self.ring.closed and self.next_sequence > self.ring.published
