"""Entry point of a collector process."""

from __future__ import annotations

from logcap.capture.base import CollectorEnv
from logcap.child import ChildContext


def run_collector(ctx: ChildContext, source: str) -> None:
    """Read the source's inputs until draining starts."""
    config = ctx.plan.config.sources[source]
    env = CollectorEnv(
        source,
        ctx.collector_producer(source),
        ctx.counters,
        ctx.plan.config.data_dir,
        should_stop=lambda: ctx.stop.is_set() or ctx.state.draining,
        pipelines=tuple(
            (name, ctx.plan.config.pipelines[name]) for name in getattr(config, "pipelines", [])
        ),
    )
    config.build(env).run()
