"""The run plan: everything a child process needs, computed once by the supervisor.

It is sent to each child on stdin as msgpack, so a child never re-reads a config file
that may have changed since the run started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from logcap.config import Config
from logcap.config._units import dec_hook, enc_hook

if TYPE_CHECKING:
    from logcap.capture.pipeline.engine import Series

DISPATCHER = "dispatcher"
RETRY = "retry"


def batch_slot_bytes(config: Config) -> int:
    """Bytes of a batch-ring slot: the largest batch the dispatcher can ever write
    (dispatch/bounds.py; the dispatcher refuses an entry that would need more)."""
    from logcap.dispatch.bounds import largest_batch_bytes

    return largest_batch_bytes(config)


def step_areas(config: Config, sources: list[str]) -> dict[str, tuple[int, list[Series]]]:
    """Per source, where its words start in the counter table's step area and the
    (pipeline, step, outcome) of each: sources in plan order, each after the last."""
    from logcap.capture.pipeline.engine import step_series

    areas: dict[str, tuple[int, list[Series]]] = {}
    offset = 0
    for name in sources:
        series = step_series([(p, config.pipelines[p]) for p in config.sources[name].pipelines])
        areas[name] = (offset, series)
        offset += len(series)
    return areas


def step_words(config: Config, sources: list[str]) -> int:
    """Words of the counter table's step area (every source's series)."""
    return sum(len(series) for _, series in step_areas(config, sources).values())


def area_words(config: Config, sources: list[str], sinks: list[str]) -> int:
    """Words of the counter table's areas: the step area, then every sink's histograms."""
    from logcap.metrics.histogram import SINK_WORDS

    return step_words(config, sources) + len(sinks) * SINK_WORDS


class RunPlan(msgspec.Struct, kw_only=True):
    """Names of the shared segments, doorbell fds and component order of one run."""

    run_prefix: str
    supervisor_pid: int
    config: Config
    sources: list[str]
    sinks: list[str]
    collector_rings: dict[str, str]
    batch_ring: str
    failure_rings: dict[str, str]  # per sink: sink -> retry
    redelivery_rings: dict[str, str]  # per sink: retry -> sink
    counters: str
    runstate: str
    doorbells: dict[str, int]

    def counter_index(self, component: str) -> int:
        """Block index in the counter table: sources, dispatcher, sinks, then retry."""
        return self.components.index(component)

    @property
    def components(self) -> list[str]:
        """Every component in counter-table order."""
        return [*self.sources, DISPATCHER, *self.sinks, RETRY]

    def step_area(self, source: str) -> tuple[int, list[Series]]:
        """Where ``source``'s words start in the counter table's step area, and the
        (pipeline, step, outcome) of each."""
        return step_areas(self.config, self.sources)[source]

    def histogram_offset(self, sink: str) -> int:
        """Where ``sink``'s histograms start in the counter table's areas (after the
        step area, sinks in plan order)."""
        from logcap.metrics.histogram import SINK_WORDS

        return step_words(self.config, self.sources) + self.sinks.index(sink) * SINK_WORDS

    def encode(self) -> bytes:
        """Bytes for a child's stdin."""
        return msgspec.msgpack.encode(self, enc_hook=enc_hook)

    @classmethod
    def decode(cls, data: bytes) -> RunPlan:
        """Inverse of :meth:`encode`."""
        return msgspec.msgpack.decode(data, type=cls, dec_hook=dec_hook)
