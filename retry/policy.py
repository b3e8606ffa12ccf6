"""When to try a failed batch again: exponential backoff with full jitter, and when to stop.

Full jitter (delay drawn uniformly from ``[0, min(max_backoff, initial * 2**n))``) spreads
the retries of many batches that failed together, so a recovering destination is not hit
by all of them at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """The retry settings of one run (``retry:`` in the config)."""

    initial_backoff: float
    max_backoff: float
    max_attempts: int
    max_retry_duration: float
    uniform: Callable[[float, float], float] = random.uniform

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure (1 = the first)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** min(attempts - 1, 62))
        return self.uniform(0.0, ceiling)

    def exhausted(self, attempts: int, first_failure: float, now: float) -> str | None:
        """Why no further attempt should be made, or None to keep trying."""
        if attempts >= self.max_attempts:
            return f"gave up after {attempts} attempts"
        if now - first_failure >= self.max_retry_duration:
            return f"gave up after retrying for {now - first_failure:.0f}s"
        return None
