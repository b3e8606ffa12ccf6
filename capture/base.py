"""What a source is to the rest of logcap: a config that checks itself and builds a
:class:`Collector`, run in the source's own collector process.

Every source type keeps its knowledge in its config Struct (``capture/<type>/config.py``):
``check`` (cross-field rules, pure), ``build`` (opens files and sockets),
``line_rules`` (how the dispatcher cuts its data into entries) and
``longest_entry_bytes`` (what bounds a batch). Adding a type is one folder plus one
member of the union in ``capture/config.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from logcap.capture.pipeline.config import PipelineConfig
    from logcap.capture.pipeline.engine import Processor
    from logcap.dispatch.checkpoint import FilePosition
    from logcap.metrics import CounterBlock
    from logcap.ringbuf import Producer

Problems = list[tuple[tuple[str, ...], str]]  # (key path inside the component, reason)
PATH_ROOM = 4096 + 128  # a collector slot holds a block header and a path of <= 4 KiB


class Collector(Protocol):
    """Reads a source's inputs into its collector ring until told to stop."""

    def run(self) -> None:
        """Read until ``should_stop`` (given at build time) says so."""


@dataclass(frozen=True)
class CollectorEnv:
    """What the collector process hands a source's ``build``."""

    name: str
    producer: Producer
    counters: CounterBlock
    data_dir: str
    should_stop: Callable[[], bool]
    # the pipelines the source names, in its order, with their configs
    pipelines: tuple[tuple[str, PipelineConfig], ...] = ()
    # its words of the counter table's step area (per pipeline step and outcome)
    steps: CounterBlock | None = None

    def processor(self) -> Processor | None:
        """The source's pipelines, compiled; None if it names none."""
        if not self.pipelines:
            return None
        from logcap.capture.pipeline.engine import Processor

        return Processor(self.name, list(self.pipelines), self.counters, steps=self.steps)

    @property
    def started_marker(self) -> Path:
        """``data_dir/started/<source>``: written once the source has first run."""
        return Path(self.data_dir) / "started" / self.name

    def checkpoints(self) -> dict[tuple[int, int], FilePosition]:
        """This source's committed positions."""
        from logcap.dispatch.checkpoint import CheckpointStore

        return CheckpointStore(self.data_dir).positions_for(self.name)


def line_fits_slot(max_line_bytes: int, collector_slot_bytes: int) -> Problems:
    """A line source's longest line must fit one collector slot beside its path."""
    if max_line_bytes + PATH_ROOM <= collector_slot_bytes:
        return []
    return [
        (
            ("max_line_bytes",),
            f"{max_line_bytes} bytes does not fit a collector ring slot of "
            f"{collector_slot_bytes} bytes (buffer.collector_slot_bytes) with room for the path",
        )
    ]
