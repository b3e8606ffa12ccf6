"""Entry point of a collector process."""

from __future__ import annotations

from logcap.capture.file.collector import FileCollector
from logcap.child import ChildContext
from logcap.dispatch.checkpoint import CheckpointStore


def run_collector(ctx: ChildContext, source: str) -> None:
    """Tail the source's inputs until draining starts."""
    config = ctx.plan.config.sources[source]
    checkpoints = CheckpointStore(ctx.plan.config.data_dir).positions_for(source)
    collector = FileCollector(
        source,
        config,
        ctx.collector_producer(source),
        ctx.counters,
        checkpoints,
        should_stop=lambda: ctx.stop.is_set() or ctx.state.draining,
    )
    collector.run()
