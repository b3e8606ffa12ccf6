"""Reading one file into the collector ring: whole lines only, position tracked.

A read takes as much as fits a ring slot and cuts it after its last newline; the bytes
after it (a line still being written) are read again next time, so a partial line is
held until its newline arrives — never dropped, never split. A line too long for a slot
is cut to ``max_line_bytes`` once its newline is found; the rest is skipped and counted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from logcap.capture._record import FLAG_TRUNCATED, HEADER_SIZE, BlockHeader, write_header
from logcap.capture.file.encoding import LineCodec, line_codec
from logcap.capture.file.identity import covered, fingerprint, starts_as
from logcap.capture.file.multiline import MultilineRule
from logcap.errors import BufferFull
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Producer

if TYPE_CHECKING:
    from logcap.capture.file.entries import FileEntries
    from logcap.capture.ratelimit import TokenBucket

SCAN_CHUNK = 1 << 20
UTF8: LineCodec = line_codec("utf-8")


class FileTailer:
    """An open file, the offset of its next unread line, and how to publish from it."""

    def __init__(
        self,
        path: str,
        position: int,
        fingerprint_bytes: int = 256,
        skip_long_lines: bool = False,
        codec: LineCodec = UTF8,
    ) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.rename(path)
        st = os.fstat(self.fd)
        self.dev, self.ino = st.st_dev, st.st_ino
        self.fingerprint_bytes = fingerprint_bytes
        self.fingerprint = fingerprint(self.fd, fingerprint_bytes)
        self.position = position
        self.skip_long_lines = skip_long_lines
        self.codec = codec
        self.multiline: MultilineRule | None = None
        self.multiline_timeout = 1.0
        self.clock: Callable[[], float] = time.monotonic
        self._held: tuple[int, float] | None = None  # (file size, since) while an event waits
        self._scan_at: int | None = None  # set while skipping the tail of an over-long line
        # started at its end (read_from: end): that position is published, even with no
        # line, so it is checkpointed and a restart does not read the file from its start
        self.unrecorded = False
        # a source with pipelines: blocks become processed entries (capture/file/entries.py)
        self.entries: FileEntries | None = None
        self.limiter: TokenBucket | None = None  # the source's rate_limit

    def rename(self, path: str) -> None:
        """The file is now known under ``path`` (renamed, or rotated away)."""
        self.path = path
        self.path_bytes = os.fsencode(path)[:4096]

    def size(self) -> int:
        """Current size of the open file."""
        return os.fstat(self.fd).st_size

    def at_end(self) -> bool:
        """Every complete line has been published."""
        return self.size() <= self.position or (
            self._scan_at is not None and self.size() <= self._scan_at
        )

    def read_block(self, producer: Producer, max_line_bytes: int, counters: CounterBlock) -> bool:
        """Publish the next block of whole lines; False if there is nothing to publish."""
        size = self.size()
        # truncated in place (copytruncate, "> file"); if it was written again past our
        # position before we looked, only its changed first bytes tell
        rewritten = size > self.position > 0 and not starts_as(self.fd, self.fingerprint)
        if size < self.position or rewritten:
            self.position, self._scan_at = 0, None
            self.fingerprint = fingerprint(self.fd, self.fingerprint_bytes)
            counters.add(Counter.FILE_RESETS)
        if covered(self.fingerprint) < min(size, self.fingerprint_bytes):  # a young file grew
            self.fingerprint = fingerprint(self.fd, self.fingerprint_bytes)
        if size <= self.position:
            if self.unrecorded:
                self._publish(
                    producer,
                    BlockHeader(
                        time.time_ns(),
                        self.position,
                        self.position,
                        self.dev,
                        self.ino,
                        self.fingerprint,
                        0,
                        len(self.path_bytes),
                        0,
                    ),
                    memoryview(b""),
                )
            return False
        if self._scan_at is not None:
            return self._skip_long_line(producer, max_line_bytes, counters, size)
        held = self._held
        if held is not None and held[0] == size and self.clock() - held[1] < self.multiline_timeout:
            return False  # an unfinished event waits in the file; nothing new yet
        room = producer.ring.slot_capacity - HEADER_SIZE - len(self.path_bytes)
        room -= room % self.codec.unit  # reads stay aligned to the encoding's code units
        read_ns = time.time_ns()
        data = os.pread(self.fd, room, self.position)
        cut = self.codec.rfind(data)
        if cut and self.multiline is not None:
            cut = self._complete_events(data, cut, room, size)
            if not cut:
                return False
        if cut == 0:
            if len(data) == room or len(data) > max_line_bytes:
                self._scan_at = self.position + len(data)  # over-long: find its end first
                return self._skip_long_line(producer, max_line_bytes, counters, size)
            return False  # a partial last line: wait for its newline
        sent = cut  # bytes of lines published; the rest of the block dropped by the limit
        if self.limiter is not None:
            cut, sent = self._limit(self.limiter, data, cut, counters)
            if not cut:
                return False  # held back: the lines stay in the file
        if not self._publish(
            producer,
            BlockHeader(
                read_ns,
                self.position,
                self.position + cut,
                self.dev,
                self.ino,
                self.fingerprint,
                sent,
                len(self.path_bytes),
                0,
            ),
            memoryview(data)[:sent],
        ):
            return False
        self.position += cut
        counters.add(Counter.BYTES_IN, cut)
        return True

    def _limit(
        self, limiter: TokenBucket, data: bytes, cut: int, counters: CounterBlock
    ) -> tuple[int, int]:
        """(where the block ends, bytes of it published) under the source's rate_limit:
        cut after the lines there are tokens for (``wait``: the rest is read later), or
        with ``drop`` all read, the lines over the limit dropped and counted. Multiline
        events are never split: a block of them goes whole or waits."""
        newline = self.codec.newline
        lines = self.codec.count(data, cut)
        if self.multiline is not None and not limiter.drop:
            return (cut, cut) if limiter.take_all(lines) else (0, 0)
        granted = limiter.take_up_to(lines)
        if granted == lines:
            return cut, cut
        end = 0
        for _ in range(granted):
            end = self.codec.find(data, end) + len(newline)
        if limiter.drop:
            counters.add(Counter.RATE_LIMIT_DROPPED, lines - granted)
            return cut, end
        return end, end

    def _complete_events(self, data: bytes, cut: int, room: int, size: int) -> int:
        """Where to cut ``data`` so no event is split: before the last event's first line,
        unless it timed out, or fills a whole slot (then it is split, as it must be)."""
        assert self.multiline is not None
        hold_from = self.multiline.last_event_start(data[:cut], self.codec)
        timed_out = self._held is not None and (
            self.clock() - self._held[1] >= self.multiline_timeout
        )
        if hold_from == 0 and not timed_out and len(data) < room:
            if self._held is None or self._held[0] != size:
                self._held = (size, self.clock())  # the timeout runs from the last growth
            return 0
        self._held = None
        return cut if hold_from == 0 or timed_out else hold_from

    def _skip_long_line(
        self, producer: Producer, max_line_bytes: int, counters: CounterBlock, size: int
    ) -> bool:
        assert self._scan_at is not None
        while self._scan_at < size:
            chunk = os.pread(self.fd, SCAN_CHUNK, self._scan_at)
            if not chunk:
                return False
            newline = self.codec.find(chunk)
            if newline < 0:
                self._scan_at += len(chunk) - len(chunk) % self.codec.unit
                continue
            end = self._scan_at + newline + len(self.codec.newline)
            # the head of the line, cut to max_line_bytes; nothing when long lines are skipped
            # (the record still carries the position past the line, to be checkpointed)
            keep = max_line_bytes - max_line_bytes % self.codec.unit
            head = (
                b""
                if self.skip_long_lines
                else (os.pread(self.fd, keep, self.position) + self.codec.newline)
            )
            if not self._publish(
                producer,
                BlockHeader(
                    time.time_ns(),
                    self.position,
                    end,
                    self.dev,
                    self.ino,
                    self.fingerprint,
                    len(head),
                    len(self.path_bytes),
                    FLAG_TRUNCATED,
                ),
                memoryview(head),
            ):
                return False
            counters.add(Counter.BYTES_IN, end - self.position)
            self.position, self._scan_at = end, None
            return True
        return False

    def flush_tail(self, producer: Producer, max_line_bytes: int, counters: CounterBlock) -> bool:
        """Publish an unterminated last line as a line of its own.

        Only for a file that was rotated away or deleted and has stopped growing: no
        newline will ever come, and holding the tail forever would lose it (and keep the
        file open). Over-long tails are cut to ``max_line_bytes`` like any line.
        """
        size = self.size()
        if size <= self.position:
            return False
        keep = min(size - self.position, max_line_bytes)
        keep -= keep % self.codec.unit
        tail = os.pread(self.fd, keep, self.position) + self.codec.newline
        flags = FLAG_TRUNCATED if size - self.position > max_line_bytes else 0
        header = BlockHeader(
            time.time_ns(),
            self.position,
            size,
            self.dev,
            self.ino,
            self.fingerprint,
            len(tail),
            len(self.path_bytes),
            flags,
        )
        if not self._publish(producer, header, memoryview(tail)):
            return False
        counters.add(Counter.BYTES_IN, size - self.position)
        self.position, self._scan_at, self._held = size, None, None
        return True

    def _publish(self, producer: Producer, header: BlockHeader, data: memoryview) -> bool:
        if self.entries is not None:
            taken = self.entries.publish(producer, header, data, self.path, self.path_bytes)
            self.unrecorded = self.unrecorded and not taken
            return taken
        try:
            seq = producer.claim(1, timeout=0.2)
        except BufferFull:
            return False  # dispatcher is behind: the bytes stay in the file
        slot = producer.payload(seq)
        at = write_header(slot, header, self.path_bytes)
        slot[at : at + len(data)] = data
        producer.commit(seq, at + len(data))
        producer.publish(seq)
        self.unrecorded = False
        return True

    def close(self) -> None:
        """Close the file descriptor."""
        os.close(self.fd)
