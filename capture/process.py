"""Entry point of a collector process."""

from __future__ import annotations

from pathlib import Path

from logcap.capture.docker.config import DockerSourceConfig
from logcap.capture.file.collector import FileCollector
from logcap.capture.http.collector import HttpCollector
from logcap.capture.http.config import HttpSourceConfig
from logcap.child import ChildContext
from logcap.dispatch.checkpoint import CheckpointStore


def run_collector(ctx: ChildContext, source: str) -> None:
    """Read the source's inputs until draining starts."""
    config = ctx.plan.config.sources[source]
    should_stop = lambda: ctx.stop.is_set() or ctx.state.draining  # noqa: E731
    if isinstance(config, HttpSourceConfig):
        HttpCollector(source, config, ctx.collector_producer(source), ctx.counters).run(should_stop)
        return
    checkpoints = CheckpointStore(ctx.plan.config.data_dir).positions_for(source)
    started = Path(ctx.plan.config.data_dir) / "started" / source
    if isinstance(config, DockerSourceConfig):
        # the docker SDK (requests, urllib3: ~70 ms, some MiB) loads only where it is used
        from logcap.capture.docker.collector import DockerCollector

        DockerCollector(
            source,
            config,
            ctx.collector_producer(source),
            ctx.counters,
            checkpoints,
            should_stop=should_stop,
            started_marker=started,
        ).run()
        return
    collector = FileCollector(
        source,
        config,
        ctx.collector_producer(source),
        ctx.counters,
        checkpoints,
        should_stop=should_stop,
        started_marker=started,
    )
    collector.run()
