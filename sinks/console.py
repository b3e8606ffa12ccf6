"""The ``console`` sink: entries as JSON lines on stdout or stderr."""

from __future__ import annotations

import sys

from logcap.dispatch.batch import Batch
from logcap.sinks._io import classify, write_all
from logcap.sinks.base import Failures
from logcap.sinks.config import ConsoleSinkConfig


class ConsoleSink:
    """Writes each batch's payload with one write call (it already is NDJSON)."""

    def __init__(self, config: ConsoleSinkConfig) -> None:
        self.config = config
        stream = sys.stdout if config.stream == "stdout" else sys.stderr
        self.fd = stream.fileno()

    def write(self, batch: Batch) -> None:
        try:
            for chunk in batch.chunks():
                write_all(self.fd, chunk)
        except OSError as exc:
            raise classify(exc, f"writing to {self.config.stream}") from exc

    def flush(self) -> Failures:
        """Unbuffered: nothing to do."""
        return []

    def close(self) -> None:
        """The stream belongs to the process."""
