"""A source's ``rate_limit``: a token bucket of ``events_per_second`` and ``burst``.

Lossless by default (``when_exceeded: wait``): a file source reads its files no faster
(the lines stay in the files), a docker source reads its containers' streams no faster
(the daemon keeps them), an HTTP source answers 429 with ``Retry-After`` (the client
sends again). With ``when_exceeded: drop`` the entries over the limit are dropped and
counted instead. A request or read larger than ``burst`` is let through when the bucket
is full and paid for afterwards (the bucket goes into debt), so nothing is refused
forever. The time a source was held back is counted (``logcap_source_rate_limited_
seconds_total``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated, Literal

import msgspec

from logcap.config._base import StrictStruct, doc

RATE_LIMIT_DOC = (
    "At most events_per_second entries a second (burst at once); by default the source "
    "reads slower or answers 429, so nothing is lost (see capture/ratelimit.py)."
)


class RateLimitConfig(StrictStruct, frozen=True):
    """At most ``events_per_second`` entries a second, in bursts of at most ``burst``."""

    events_per_second: Annotated[float, doc("The sustained rate, entries a second.", gt=0)]
    burst: Annotated[
        Annotated[int, msgspec.Meta(ge=1)] | None,
        doc("Entries that may come at once (at least 1; default: one second's worth)."),
    ] = None
    when_exceeded: Annotated[
        Literal["wait", "drop"],
        doc("wait: read slower, or answer 429 (nothing lost); drop: drop and count."),
    ] = "wait"


class TokenBucket:
    """Tokens refill at ``rate`` a second up to ``burst``; thread-safe."""

    def __init__(self, config: RateLimitConfig, clock: Callable[[], float] = time.monotonic):
        self.rate = float(config.events_per_second)
        self.burst = float(config.burst if config.burst is not None else max(1.0, self.rate))
        self.drop = config.when_exceeded == "drop"
        self.clock = clock
        self.tokens = self.burst
        self.at = clock()
        self.lock = threading.Lock()
        self.held_s = 0.0  # total time callers were held back
        self._held_since: float | None = None

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take_up_to(self, wanted: int) -> int:
        """Take as many of ``wanted`` tokens as there are (0 while held back)."""
        with self.lock:
            now = self.clock()
            self._refill(now)
            granted = max(0, min(wanted, int(self.tokens)))
            self.tokens -= granted
            self._account(now, granted < wanted)
            return granted

    def take_all(self, wanted: int) -> bool:
        """Take ``wanted`` tokens at once, or none; more than ``burst`` only from a full
        bucket (its debt is paid by the next callers)."""
        with self.lock:
            now = self.clock()
            self._refill(now)
            ok = self.tokens >= min(wanted, self.burst)
            if ok:
                self.tokens -= wanted
            self._account(now, not ok)
            return ok

    def wait(self, wanted: int, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Block until ``wanted`` tokens are taken (the bucket may go into debt)."""
        while not self.take_all(wanted) and not should_stop():
            time.sleep(min(0.1, self.retry_after(wanted)))

    def retry_after(self, wanted: int) -> float:
        """Seconds until ``wanted`` tokens (at most a full bucket) could be taken."""
        with self.lock:
            self._refill(self.clock())
            missing = min(wanted, self.burst) - self.tokens
            return max(0.0, missing / self.rate)

    def _account(self, now: float, held: bool) -> None:
        if held and self._held_since is None:
            self._held_since = now
        elif not held and self._held_since is not None:
            self.held_s += now - self._held_since
            self._held_since = None

    def held_ms(self) -> int:
        """Milliseconds callers were held back so far (the current hold included)."""
        with self.lock:
            ongoing = 0.0 if self._held_since is None else self.clock() - self._held_since
            return int((self.held_s + ongoing) * 1000)
