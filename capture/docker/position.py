"""Where a container's logs have been read to: one position per stream.

Docker's two copier goroutines (stdout, stderr) each stamp a line and only then take
the log driver's lock to write it, so the log file can hold, microseconds apart, a
stderr line stamped *before* the stdout line written ahead of it (and the other way
round). Within one stream stamps never go back: one goroutine stamps and writes them in
turn. A container's position is therefore kept per stream: the event time of the newest
line of that stream taken, and how many lines of that stream had exactly that time
(Docker stamps in nanoseconds, but two lines can share one). A resume asks Docker for
the logs ``since`` the earlier of the two times and drops, stream by stream, the lines
the position covers (:class:`Reading`): nothing skipped, no duplicate at the boundary.

A stream that stays quiet must not hold ``since`` back for ever (a container that never
writes stderr would be read again from its first line at every start), so a stream's
time is taken as at least ``STREAM_SKEW_NS`` before the newest line of either stream
(:meth:`ContainerPosition.clamped`): a line that reaches the log file more than that
long after Docker stamped it, behind a line of the other stream, is the one case a
resume can still skip. A resume costs at most that much of the busy stream read again
and dropped.

Encoding. A position travels in a collector record's ``end`` (int64) and
``fingerprint`` (uint64) fields (capture/_record.py), which the dispatcher checkpoints
unchanged as ``offset`` and ``fingerprint`` (dispatch/checkpoint.py)::

    offset       int64    the earlier stream's time (ns since the epoch): the ``since``
    fingerprint  uint64   bits  0-13  lines of stdout at its time already sent
                          bits 14-27  lines of stderr at its time already sent
                          bits 28-61  ns by which the later stream's time is after
                                      ``offset`` (at most STREAM_SKEW_NS < 2**34)
                          bit  62     the later stream: 0 stdout, 1 stderr
                          bit  63     1: this layout

A count beyond 16383 lines at one nanosecond is stored as 16383: a resume then sends
the rest again (duplicates, never a loss). A checkpoint written before this layout (bit
63 clear: one time and a count of lines over both streams) resumes both streams at its
time with nothing counted, so the lines of exactly that time (usually one) are sent
again.
"""

from __future__ import annotations

from typing import NamedTuple

from logcap.capture.docker.stream import STDERR, STDOUT

STREAM_SKEW_NS = 10_000_000_000  # must stay below 2**AHEAD_BITS ns (about 17 s)
COUNT_BITS = 14
AHEAD_BITS = 34
MAX_COUNT = (1 << COUNT_BITS) - 1
_COUNT_MASK = MAX_COUNT
_AHEAD_SHIFT = 2 * COUNT_BITS
_AHEAD_MASK = (1 << AHEAD_BITS) - 1
_LATER_STDERR = 1 << 62
_PER_STREAM = 1 << 63

StreamPosition = tuple[int, int]  # (event time ns, lines of the stream with that time sent)


class ContainerPosition(NamedTuple):
    """How far each of a container's streams has been taken (see the module docstring)."""

    stdout: StreamPosition = (0, 0)
    stderr: StreamPosition = (0, 0)

    @classmethod
    def at(cls, stamp: int) -> ContainerPosition:
        """Both streams just before event time ``stamp``."""
        return cls((stamp, 0), (stamp, 0))

    def newest(self) -> int:
        """Event time of the newest line taken, of either stream."""
        return max(self.stdout[0], self.stderr[0])

    def since(self) -> int:
        """Where a resume asks Docker to start: the earlier stream's time."""
        return min(self.stdout[0], self.stderr[0])

    def clamped(self) -> ContainerPosition:
        """The same position with a stream left behind moved up to ``STREAM_SKEW_NS``
        before the newest line (nothing counted there)."""
        floor = self.newest() - STREAM_SKEW_NS
        stdout = self.stdout if self.stdout[0] >= floor else (floor, 0)
        stderr = self.stderr if self.stderr[0] >= floor else (floor, 0)
        return ContainerPosition(stdout, stderr)

    def encode(self) -> tuple[int, int]:
        """``(offset, fingerprint)`` of the clamped position (module docstring)."""
        (out_time, out_count), (err_time, err_count) = self.clamped()
        later_stderr = err_time > out_time
        fingerprint = (
            _PER_STREAM
            | (_LATER_STDERR if later_stderr else 0)
            | abs(err_time - out_time) << _AHEAD_SHIFT
            | min(err_count, MAX_COUNT) << COUNT_BITS
            | min(out_count, MAX_COUNT)
        )
        return min(out_time, err_time), fingerprint

    @classmethod
    def decode(cls, offset: int, fingerprint: int) -> ContainerPosition:
        """The position a checkpoint entry's ``offset`` and ``fingerprint`` hold."""
        if not fingerprint & _PER_STREAM:  # the layout of one time for both streams
            return cls.at(offset)
        ahead = fingerprint >> _AHEAD_SHIFT & _AHEAD_MASK
        out_count = fingerprint & _COUNT_MASK
        err_count = fingerprint >> COUNT_BITS & _COUNT_MASK
        if fingerprint & _LATER_STDERR:
            return cls((offset, out_count), (offset + ahead, err_count))
        return cls((offset + ahead, out_count), (offset, err_count))


NOTHING_READ = ContainerPosition()


class Reading:
    """One read of a container's logs from a position: tells, line by line, whether the
    position covers it already, and where the read has got to."""

    __slots__ = ("counts", "skip", "start", "times")

    def __init__(self, position: ContainerPosition) -> None:
        # indexed by stream (STDOUT 1, STDERR 2); lists, not tuples: this is per line
        (out_time, out_count), (err_time, err_count) = position
        self.start = [0, out_time, err_time]
        self.skip = [0, out_count, err_count]  # lines at the start time still to drop
        self.times = [0, out_time, err_time]
        self.counts = [0, out_count, err_count]

    def take(self, stream: int, stamp: int) -> bool:
        """Whether the line of ``stream`` stamped ``stamp`` is new (and then counts it);
        call once per line, in the order Docker sends them."""
        start = self.start[stream]
        if stamp <= start:
            if stamp < start:
                return False  # before the position
            if self.skip[stream]:
                self.skip[stream] -= 1
                return False  # counted in the position
        time = self.times[stream]
        if stamp > time:
            self.times[stream] = stamp
            self.counts[stream] = 1
        elif stamp == time:
            self.counts[stream] += 1
        # else the host's clock went back: the line is new, the position stays ahead
        return True

    def position(self) -> ContainerPosition:
        """Every line taken so far, per stream."""
        times, counts = self.times, self.counts
        return ContainerPosition((times[STDOUT], counts[STDOUT]), (times[STDERR], counts[STDERR]))
