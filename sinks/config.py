"""Configs of the small sinks, and the union of every sink type."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from logcap.config._base import StrictStruct, doc
from logcap.sinks.file.config import FileSinkConfig


class ConsoleSinkConfig(StrictStruct, tag_field="type", tag="console", frozen=True):
    """Write entries as JSON lines to the agent's stdout or stderr."""

    stream: Annotated[
        Literal["stdout", "stderr"], doc("Which standard stream receives the entries.")
    ] = "stdout"

    def with_base(self, base: Path) -> ConsoleSinkConfig:
        """No paths to resolve."""
        return self


class BlackholeSinkConfig(StrictStruct, tag_field="type", tag="blackhole", frozen=True):
    """Count and discard entries (benchmarks, smoke tests)."""

    def with_base(self, base: Path) -> BlackholeSinkConfig:
        """No paths to resolve."""
        return self


SinkConfig = FileSinkConfig | ConsoleSinkConfig | BlackholeSinkConfig
