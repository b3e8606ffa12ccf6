"""End-to-end acknowledgement of HTTP ingest requests: a 200 is a promise.

Each accepted request gets a *position*, ``max(last + 1, CLOCK_MONOTONIC ns)``: it grows
in the order requests are published to the ring, and a restarted collector never reuses
one (the clock is system-wide and never goes back). The request's last record carries it
(capture/_entries.py ``write_entries``, with ``ino == 0``); the dispatcher hands it on
with the batch holding the request's last entries and, once every sink delivered that
batch or the retry spool or the DLQ holds it (dispatch/acks.py), writes the highest
acknowledged position of the source to its ``HTTP_ACKED`` counter word.

A request thread answers 200 only once that word has reached its position: a ``kill -9``
of the whole tree after it loses nothing. If it does not come in time the client gets
503 with ``Retry-After``; the entries may still be delivered later, so a retry can give
duplicates, never a loss. One poller thread reads the word every millisecond, only while
some request waits, and wakes the waiters; an idle source costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from logcap.metrics import Counter, CounterBlock

ACK_TIMEOUT = 10.0  # seconds a request waits for its acknowledgement before a 503
SETTLE_TIMEOUT = 5.0  # on stop, how long answered-to-be requests may hold the drain up
POLL_INTERVAL = 0.001


class Positions:
    """Hands out request positions (call under the collector's publish lock)."""

    def __init__(self, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock_ns = clock_ns
        self.last = 0

    def next(self) -> int:
        """A position larger than every one handed out before, by any incarnation."""
        self.last = max(self.last + 1, self.clock_ns())
        return self.last


class AckWaiter:
    """Lets request threads wait until the dispatcher acknowledged their position."""

    def __init__(self, counters: CounterBlock, poll_interval: float = POLL_INTERVAL) -> None:
        self.counters = counters
        self.poll_interval = poll_interval
        self._cond = threading.Condition()
        self._waiting = 0
        self._poller: threading.Thread | None = None

    def acknowledged(self) -> int:
        """The highest acknowledged position."""
        return self.counters.get(Counter.HTTP_ACKED)

    @property
    def waiting(self) -> int:
        """Requests waiting now."""
        return self._waiting

    def wait(self, position: int, timeout: float = ACK_TIMEOUT) -> bool:
        """True once ``position`` is acknowledged; False if ``timeout`` passed first."""
        if self.acknowledged() >= position:
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll, name="http-acks", daemon=True)
                self._poller.start()
            self._cond.notify_all()  # the poller may be parked
            try:
                while self.acknowledged() < position:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    # woken by the poller on a change; the bound is a safety net only
                    self._cond.wait(min(left, 0.05))
                return True
            finally:
                self._waiting -= 1

    def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until no request waits any more: on stop."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._waiting and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def _poll(self) -> None:
        seen = -1  # the first read always wakes the waiters: it may already be their value
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
            time.sleep(self.poll_interval)
            now = self.acknowledged()
            if now != seen:
                seen = now
                with self._cond:
                    self._cond.notify_all()
