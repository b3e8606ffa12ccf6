"""Builds a sink object from its validated config."""

from __future__ import annotations

from logcap.metrics import CounterBlock
from logcap.sinks.base import Sink
from logcap.sinks.blackhole import BlackholeSink
from logcap.sinks.config import BlackholeSinkConfig, ConsoleSinkConfig, SinkConfig
from logcap.sinks.console import ConsoleSink
from logcap.sinks.file.sink import FileSink


def build_sink(config: SinkConfig, counters: CounterBlock) -> Sink:
    """Open the sink described by ``config`` (this is where files and sockets open)."""
    if isinstance(config, BlackholeSinkConfig):
        return BlackholeSink(config)
    if isinstance(config, ConsoleSinkConfig):
        return ConsoleSink(config)
    return FileSink(config, counters)
