"""Configs of the small sinks, and the union of every sink type."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from logcap.config._base import doc
from logcap.sinks.breaker import SinkConfigBase
from logcap.sinks.file.config import FileSinkConfig
from logcap.sinks.http.config import HttpSinkConfig
from logcap.sinks.kafka.config import KafkaSinkConfig
from logcap.sinks.loki.config import LokiSinkConfig

if TYPE_CHECKING:
    from logcap.metrics import CounterBlock
    from logcap.sinks.base import Sink


class ConsoleSinkConfig(SinkConfigBase, tag_field="type", tag="console", frozen=True):
    """Write entries as JSON lines to the agent's stdout or stderr."""

    stream: Annotated[
        Literal["stdout", "stderr"], doc("Which standard stream receives the entries.")
    ] = "stdout"

    def with_base(self, base: Path) -> ConsoleSinkConfig:
        """No paths to resolve."""
        return self

    def build(self, counters: CounterBlock) -> Sink:
        """The sink this config describes. Writes entries to standard output."""
        from logcap.sinks.console import ConsoleSink

        return ConsoleSink(self)


class BlackholeSinkConfig(SinkConfigBase, tag_field="type", tag="blackhole", frozen=True):
    """Count and discard entries (benchmarks, smoke tests)."""

    def with_base(self, base: Path) -> BlackholeSinkConfig:
        """No paths to resolve."""
        return self

    def build(self, counters: CounterBlock) -> Sink:
        """The sink this config describes. Counts and discards."""
        from logcap.sinks.blackhole import BlackholeSink

        return BlackholeSink(self)


SinkConfig = (
    FileSinkConfig
    | ConsoleSinkConfig
    | BlackholeSinkConfig
    | KafkaSinkConfig
    | LokiSinkConfig
    | HttpSinkConfig
)
