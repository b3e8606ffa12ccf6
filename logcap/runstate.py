"""Run-wide flags in a small shared segment, written only by the supervisor.

Layout (int64 words)::

    0   magic            0x4C4F47434150525354 truncated to int64 ("LOGCAPRS")
    1   draining         1 once SIGTERM/SIGINT arrived: collectors stop reading
    2   inputs_closed    1 once every collector has exited: the dispatcher may finish
    3   sinks_finished   1 once every sink has exited: the retry process takes in what they
                         handed over last and ends
"""

from __future__ import annotations

from multiprocessing.shared_memory import SharedMemory

from logcap.errors import RingCorrupt
from logcap.ringbuf import _shm

MAGIC = 0x4C4F474341505253
SIZE = 64
_DRAINING, _INPUTS_CLOSED, _SINKS_FINISHED = 1, 2, 3


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

    def close(self) -> None:
        """Unmap."""
        self._words.release()
        self.shm.close()
