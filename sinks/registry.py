"""Builds a sink object from its validated config: each config type builds its own."""

from __future__ import annotations

from logcap.metrics import CounterBlock
from logcap.sinks.base import Sink
from logcap.sinks.config import SinkConfig


def build_sink(config: SinkConfig, counters: CounterBlock) -> Sink:
    """Open the sink described by ``config`` (this is where files and sockets open)."""
    return config.build(counters)
