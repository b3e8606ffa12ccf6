"""Entry point of the dispatcher process, including its part of a graceful drain."""

from __future__ import annotations

import logging
import socket

from logcap.child import ChildContext
from logcap.dispatch.checkpoint import CheckpointStore
from logcap.dispatch.dispatcher import Dispatcher, SourceInput
from logcap.metrics import Counter
from logcap.plan import DISPATCHER

log = logging.getLogger(__name__)


def run_dispatcher(ctx: ChildContext) -> None:
    """Batch until every collector has finished, then deliver, checkpoint and exit."""
    plan = ctx.plan
    host = socket.gethostname()
    inputs = [
        SourceInput(
            name=name,
            consumer=ctx.collector_consumer(name),
            counters=ctx.table.block(plan.counter_index(name)),
            max_line_bytes=plan.config.sources[name].max_line_bytes,
            host=host,
        )
        for name in plan.sources
    ]
    dispatcher = Dispatcher(
        plan.config.dispatcher,
        inputs,
        ctx.batch_producer(),
        ctx.table.block(plan.counter_index(DISPATCHER)),
        CheckpointStore(plan.config.data_dir),
        ctx.bell,
    )
    while True:
        moved = dispatcher.step()
        if ctx.state.inputs_closed and all(
            i.consumer.next_sequence > i.consumer.ring.published for i in inputs
        ):
            break
        if not moved:
            ctx.bell.wait(dispatcher.idle_timeout())
    dispatcher.flush()
    dispatcher.output.close()
    while not dispatcher.all_delivered():
        ctx.bell.wait(0.2)
        dispatcher.step()
    dispatcher.step()
    dispatcher.save_checkpoint()
    log.info("drained: every batch delivered, checkpoint saved")
