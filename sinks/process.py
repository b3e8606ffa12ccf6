"""Entry point of a sink process."""

from __future__ import annotations

from logcap.child import ChildContext
from logcap.memory import set_malloc_thresholds
from logcap.metrics import Counter, CounterBlock
from logcap.metrics.histogram import SINK_WORDS
from logcap.sinks.base import SinkRunner
from logcap.sinks.breaker import CircuitBreaker, State
from logcap.sinks.registry import build_sink


def run_sink(ctx: ChildContext, name: str) -> None:
    """Deliver batches until the dispatcher has closed the ring and all are delivered."""
    # request bodies and redelivered batches (up to 1 MiB) come and go: give them their
    # own mappings, returned on free, so a catch-up after an outage leaves no bloat
    set_malloc_thresholds(64 * 1024, 1024 * 1024)
    config = ctx.plan.config.sinks[name]
    inputs, skip_bit = ctx.plan.routes()[ctx.plan.sinks.index(name)]
    sink = build_sink(config, ctx.counters)
    counters = ctx.counters
    counters.set(Counter.CIRCUIT_STATE, 0)  # a restarted sink process starts closed
    breaker = CircuitBreaker(
        name,
        config.circuit_breaker,
        on_change=lambda state: _breaker_changed(counters, state),
    )
    consumer = ctx.batch_consumer(name)
    # a sink a reload added: its cursor starts when the dispatcher takes the new plan
    while not consumer.ring.active(consumer.index):
        ctx.bell.wait(0.05)
    consumer.next_sequence = consumer.ring.consumer_cursor(consumer.index) + 1
    SinkRunner(
        name,
        sink,
        consumer,
        ctx.counters,
        failures=ctx.failure_producer(name),
        redeliveries=ctx.redelivery_consumer(name),
        wait=ctx.bell,
        breaker=breaker,
        inputs=inputs,
        skip_bit=skip_bit,
        histograms=ctx.table.area_block(ctx.plan.histogram_offset(name), SINK_WORDS),
    ).run()


def _breaker_changed(counters: CounterBlock, state: State) -> None:
    counters.set(Counter.CIRCUIT_STATE, int(state))
    if state is State.OPEN:
        counters.add(Counter.CIRCUIT_OPENINGS)
