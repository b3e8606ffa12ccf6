"""The ``blackhole`` sink: counts and discards (the runner does the counting)."""

from __future__ import annotations

from logcap.dispatch.batch import Batch
from logcap.sinks.base import Failures
from logcap.sinks.config import BlackholeSinkConfig


class BlackholeSink:
    """Accepts every batch and keeps nothing."""

    def __init__(self, config: BlackholeSinkConfig) -> None:
        self.config = config
        self.entries = 0

    def write(self, batch: Batch) -> None:
        self.entries += batch.meta.count

    def flush(self) -> Failures:
        """Nothing buffered."""
        return []

    def close(self) -> None:
        """Nothing to release."""
