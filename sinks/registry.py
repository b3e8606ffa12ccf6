"""Builds a sink object from its validated config."""

from __future__ import annotations

from logcap.metrics import CounterBlock
from logcap.sinks.base import Sink
from logcap.sinks.blackhole import BlackholeSink
from logcap.sinks.config import BlackholeSinkConfig, ConsoleSinkConfig, SinkConfig
from logcap.sinks.console import ConsoleSink
from logcap.sinks.file.sink import FileSink
from logcap.sinks.http.config import HttpSinkConfig
from logcap.sinks.kafka.config import KafkaSinkConfig
from logcap.sinks.loki.config import LokiSinkConfig


def build_sink(config: SinkConfig, counters: CounterBlock) -> Sink:
    """Open the sink described by ``config`` (this is where files and sockets open)."""
    if isinstance(config, BlackholeSinkConfig):
        return BlackholeSink(config)
    if isinstance(config, ConsoleSinkConfig):
        return ConsoleSink(config)
    if isinstance(config, KafkaSinkConfig):
        from logcap.sinks.kafka.sink import KafkaSink  # librdkafka loads only where used

        return KafkaSink(config, counters)
    if isinstance(config, LokiSinkConfig):
        from logcap.sinks.loki.sink import LokiSink  # http.client, ssl: loaded only where used

        return LokiSink(config)
    if isinstance(config, HttpSinkConfig):
        from logcap.sinks.http.sink import HttpSink  # http.client, ssl: loaded only where used

        return HttpSink(config)
    return FileSink(config, counters)
