"""Run-wide flags in a small shared segment, written by the supervisor (words 1-4) and
the dispatcher (words 5-6).

Layout (int64 words)::

    0   magic            0x4C4F47434150525354 truncated to int64 ("LOGCAPRS")
    1   draining         1 once SIGTERM/SIGINT arrived: collectors stop reading
    2   inputs_closed    1 once every collector has exited: the dispatcher may finish
    3   sinks_finished   1 once every sink has exited: the retry process takes in what they
                         handed over last and ends
    4   generation       the run plan's generation (0 at start, +1 per reload): a newer one
                         is in the segment ``<run prefix>plan-<generation>``
    5   applied          the generation the dispatcher runs (written by the dispatcher,
                         after word 6)
    6   switch_seq       the last batch it published under the plan before ``applied``
"""

from __future__ import annotations

from multiprocessing.shared_memory import SharedMemory

from logcap.errors import RingCorrupt
from logcap.ringbuf import _shm

MAGIC = 0x4C4F474341505253
SIZE = 64
_DRAINING, _INPUTS_CLOSED, _SINKS_FINISHED, _GENERATION, _APPLIED, _SWITCH = 1, 2, 3, 4, 5, 6


class RunState:
    """Flags shared by every process of one run."""

    def __init__(self, shm: SharedMemory) -> None:
        self.shm = shm
        self._words = _shm.buffer(shm).cast("q")
        if self._words[0] != MAGIC:
            raise RingCorrupt(f"segment {shm.name!r} is not a logcap run state")

    @classmethod
    def create(cls, name: str) -> RunState:
        """A fresh state: running, inputs open."""
        shm = _shm.create(name, SIZE)
        words = _shm.buffer(shm).cast("q")
        words[0] = MAGIC
        words.release()
        return cls(shm)

    @classmethod
    def attach(cls, name: str) -> RunState:
        """Open the state of a running supervisor."""
        return cls(_shm.attach(name))

    @property
    def draining(self) -> bool:
        """Shutdown was requested."""
        return self._words[_DRAINING] == 1

    @property
    def inputs_closed(self) -> bool:
        """Every collector has finished; nothing new will enter the collector rings."""
        return self._words[_INPUTS_CLOSED] == 1

    @property
    def sinks_finished(self) -> bool:
        """Every sink has exited; nothing new reaches the failure rings."""
        return self._words[_SINKS_FINISHED] == 1

    def start_draining(self) -> None:
        """Ask collectors to stop reading."""
        self._words[_DRAINING] = 1

    def close_inputs(self) -> None:
        """Tell the dispatcher that the collector rings will receive nothing more."""
        self._words[_INPUTS_CLOSED] = 1

    def finish_sinks(self) -> None:
        """Tell the retry process that no sink will hand it anything more."""
        self._words[_SINKS_FINISHED] = 1

    @property
    def generation(self) -> int:
        """The newest run plan's generation."""
        return self._words[_GENERATION]

    def announce(self, generation: int) -> None:
        """A new run plan is in its segment (written before this)."""
        self._words[_GENERATION] = generation

    @property
    def applied(self) -> tuple[int, int]:
        """(generation the dispatcher runs, last batch published before it)."""
        generation = self._words[_APPLIED]
        return generation, self._words[_SWITCH]

    def apply(self, generation: int, switch_seq: int) -> None:
        """The dispatcher runs ``generation`` from the batch after ``switch_seq`` on."""
        self._words[_SWITCH] = switch_seq
        self._words[_APPLIED] = generation

    def close(self) -> None:
        """Unmap."""
        self._words.release()
        self.shm.close()
