"""Entry point of a sink process."""

from __future__ import annotations

from logcap.child import ChildContext
from logcap.sinks.base import SinkRunner
from logcap.sinks.registry import build_sink


def run_sink(ctx: ChildContext, name: str) -> None:
    """Deliver batches until the dispatcher has closed the ring and all are delivered."""
    sink = build_sink(ctx.plan.config.sinks[name], ctx.counters)
    SinkRunner(
        name,
        sink,
        ctx.batch_consumer(name),
        ctx.counters,
        failures=ctx.failure_producer(name),
        redeliveries=ctx.redelivery_consumer(name),
        wait=ctx.bell,
    ).run()
