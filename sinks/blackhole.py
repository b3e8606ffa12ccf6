"""The ``blackhole`` sink: counts and discards (the runner does the counting)."""

from __future__ import annotations

from logcap.dispatch.batch import Batch
from logcap.sinks.config import BlackholeSinkConfig


class BlackholeSink:
    """Accepts every batch and keeps nothing."""

    def __init__(self, config: BlackholeSinkConfig) -> None:
        self.config = config
        self.entries = 0

    def write(self, batch: Batch) -> None:
        self.entries += batch.meta.count

    def flush(self) -> None:
        """Nothing buffered."""

    def close(self) -> None:
        """Nothing to release."""
