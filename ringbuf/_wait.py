"""Wait strategies: how a process parks when its ring has nothing for it.

A parked Python loop that sleeps 1 ms still costs ~7 % of a core, so logcap parks on
an ``eventfd`` doorbell instead: the waiting process blocks in ``poll`` and whoever
makes progress for it (a producer publishing, a consumer releasing slots) writes to
its doorbell. Producers ring after every publish, which is one syscall per *batch*
or per *block of lines*, never per line.

No wake-up can be lost: the doorbell is a counter, and a waiter drains it *before*
re-checking the ring (``wait`` drains after ``poll`` returns, and callers always
re-check after ``wait``), so a publish that lands between the check and ``poll`` leaves
the counter non-zero and ``poll`` returns at once. A timeout bounds every wait so a
process still notices shutdown flags and dead peers.
"""

from __future__ import annotations

import math
import os
import select
import time
from typing import Protocol


class WaitStrategy(Protocol):
    """Parks a waiter until it is signalled or ``timeout`` seconds pass."""

    def wait(self, timeout: float) -> None:
        """Block until signalled or until ``timeout`` (seconds) has passed."""

    def signal(self) -> None:
        """Wake the waiter (may be called from another process)."""


class Doorbell:
    """An ``eventfd`` shared by fd number with child processes (``pass_fds``)."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) if fd is None else fd
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def signal(self) -> None:
        try:  # noqa: SIM105 (one call per batch; suppress() costs a context manager)
            os.eventfd_write(self.fd, 1)
        except BlockingIOError:  # counter saturated: the waiter is already due to wake
            pass

    def _drain(self) -> None:
        try:  # noqa: SIM105 (as above)
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> None:
        self._poll.poll(max(0, math.ceil(timeout * 1000)))
        self._drain()

    def close(self) -> None:
        os.close(self.fd)


class SleepWait:
    """Sleeps a fixed short interval; for rings used without doorbells (tools, tests)."""

    def __init__(self, interval: float = 0.0005) -> None:
        self._interval = interval

    def wait(self, timeout: float) -> None:
        time.sleep(min(self._interval, timeout))

    def signal(self) -> None:
        """Sleepers poll; there is no one to wake."""
