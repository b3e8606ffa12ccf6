"""Entry point of the dispatcher process, including its part of a graceful drain."""

from __future__ import annotations

import logging
import socket

from logcap.capture.file.config import multiline_rule
from logcap.capture.file.encoding import line_codec
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
            skip_long_lines=plan.config.sources[name].long_lines == "skip",
            encoding=line_codec(plan.config.sources[name].encoding).name,
            multiline=multiline_rule(plan.config.sources[name]),
        )
        for name in plan.sources
    ]
    output = ctx.batch_producer()
    sink_blocks = [ctx.table.block(plan.counter_index(sink)) for sink in plan.sinks]

    def frontier() -> int:
        # Cursors first, then what the retry process holds: it records a failed batch as
        # held before the sink may release the slot, so read in this order no failed batch
        # can be in neither place (see retry/service.py).
        delivered = output.ring.min_consumer_cursor()
        held = min(block.get(Counter.OWNED_LOW) for block in sink_blocks)
        return min(delivered, held - 1)

    dispatcher = Dispatcher(
        plan.config.dispatcher,
        inputs,
        output,
        ctx.table.block(plan.counter_index(DISPATCHER)),
        CheckpointStore(plan.config.data_dir),
        ctx.bell,
        frontier=frontier,
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
