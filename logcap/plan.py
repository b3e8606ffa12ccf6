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


def sink_series_words() -> int:
    """Words of one sink slot's histograms in the counter table's area."""
    from logcap.metrics.histogram import SINK_WORDS

    return SINK_WORDS


class Capacity(msgspec.Struct, frozen=True):
    """What the run's fixed-size segments leave for components a reload adds: counter
    blocks, batch-ring cursors (sink slots) and step-area words. A reload that needs more
    is refused ("restart to apply"); slots and words are never reused within a run, so a
    new component never inherits another's counters."""

    blocks: int
    sink_slots: int
    step_words: int


RESERVED_BLOCKS = 64  # components a run's reloads may add
RESERVED_SINK_SLOTS = 16  # sinks a run's reloads may add
RESERVED_STEP_WORDS = 4096  # pipeline-step series a run's reloads may add
MAX_SINK_SLOTS = 63  # a sink's slot is its bit in a group's 64-bit skip mask


def capacity_for(config: Config) -> Capacity:
    """The capacities of a run started with ``config``."""
    return Capacity(
        blocks=len(config.sources) + len(config.sinks) + 2 + RESERVED_BLOCKS,
        sink_slots=min(MAX_SINK_SLOTS, max(len(config.sinks), 1) + RESERVED_SINK_SLOTS),
        step_words=step_words(config, list(config.sources)) + RESERVED_STEP_WORDS,
    )


def area_words(capacity: Capacity) -> int:
    """Words of the counter table's areas: the step area, then every sink slot's
    histograms."""
    return capacity.step_words + capacity.sink_slots * sink_series_words()


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

    capacity: Capacity
    # where each component lives in the fixed-size segments: its counter block, a sink's
    # batch-ring cursor (also its skip bit and histogram slot), a source's first step
    # word; a component keeps them for the whole run, reloads included
    blocks: dict[str, int]
    slots: dict[str, int]
    step_offsets: dict[str, int]
    generation: int = 0  # 0 at start; each applied reload adds one
    # sinks this generation removes or changes, with their counter blocks: the dispatcher
    # tells each its last batch (Counter.RETIRE) before it publishes under this plan
    retiring: dict[str, int] = {}

    def counter_index(self, component: str) -> int:
        """Block index of ``component`` in the counter table."""
        return self.blocks[component]

    @property
    def components(self) -> list[str]:
        """Every component in plan order: sources, dispatcher, sinks, retry."""
        return [*self.sources, DISPATCHER, *self.sinks, RETRY]

    def step_area(self, source: str) -> tuple[int, list[Series]]:
        """Where ``source``'s words start in the counter table's step area, and the
        (pipeline, step, outcome) of each."""
        from logcap.capture.pipeline.engine import step_series

        pipelines = self.config.sources[source].pipelines
        series = step_series([(p, self.config.pipelines[p]) for p in pipelines])
        return self.step_offsets[source], series

    def histogram_offset(self, sink: str) -> int:
        """Where ``sink``'s histograms start in the counter table's areas (after the
        step area, by sink slot)."""
        return self.capacity.step_words + self.slots[sink] * sink_series_words()

    def routes(self) -> list[tuple[frozenset[str] | None, int]]:
        """Each sink's (inputs, skip bit), in ``sinks`` order."""
        from logcap.sinks.routing import sink_routes

        return sink_routes(self.config, self.sinks, self.slots)

    def encode(self) -> bytes:
        """Bytes for a child's stdin."""
        return msgspec.msgpack.encode(self, enc_hook=enc_hook)

    @classmethod
    def decode(cls, data: bytes) -> RunPlan:
        """Inverse of :meth:`encode`."""
        return msgspec.msgpack.decode(data, type=cls, dec_hook=dec_hook)


def initial_layout(
    config: Config,
) -> tuple[Capacity, dict[str, int], dict[str, int], dict[str, int]]:
    """Capacity, counter blocks, sink slots and step offsets of a run's start."""
    sources, sinks = list(config.sources), list(config.sinks)
    components = [*sources, DISPATCHER, *sinks, RETRY]
    areas = step_areas(config, sources)
    return (
        capacity_for(config),
        {name: i for i, name in enumerate(components)},
        {name: i for i, name in enumerate(sinks)},
        {name: offset for name, (offset, _) in areas.items()},
    )


def plan_segment(run_prefix: str, generation: int) -> str:
    """Name of the shared segment holding generation ``generation``'s run plan."""
    return f"{run_prefix}plan-{generation}"


def publish_plan(plan: RunPlan) -> str:
    """Write ``plan`` into its own segment (int64 length, then the msgpack bytes) for the
    children that take a reload without a restart (the dispatcher); returns its name."""
    from logcap.ringbuf import _shm

    data = plan.encode()
    name = plan_segment(plan.run_prefix, plan.generation)
    shm = _shm.create(name, 8 + len(data))
    buf = _shm.buffer(shm)
    buf[8 : 8 + len(data)] = data
    buf[:8] = len(data).to_bytes(8, "little")
    buf.release()
    shm.close()
    return name


def read_plan(run_prefix: str, generation: int) -> RunPlan:
    """The run plan :func:`publish_plan` wrote for ``generation``."""
    from logcap.ringbuf import _shm

    shm = _shm.attach(plan_segment(run_prefix, generation))
    try:
        buf = _shm.buffer(shm)
        size = int.from_bytes(buf[:8], "little")
        plan = RunPlan.decode(bytes(buf[8 : 8 + size]))
        buf.release()
        return plan
    finally:
        shm.close()
