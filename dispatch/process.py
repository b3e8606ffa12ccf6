"""Entry point of the dispatcher process, including its part of a graceful drain."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from logcap.child import ChildContext
from logcap.dispatch.bounds import largest_batch_bytes
from logcap.dispatch.checkpoint import CheckpointStore
from logcap.dispatch.dispatcher import Dispatcher, SourceInput
from logcap.memory import set_malloc_thresholds
from logcap.metrics import Counter
from logcap.plan import DISPATCHER, RunPlan, read_plan
from logcap.ringbuf import Ring

log = logging.getLogger(__name__)
RETIRE_SETTLE = 5.0  # seconds a retired dispatcher waits for the sinks before it exits


def keep_freed_memory() -> None:
    """Let glibc reuse freed buffers instead of unmapping them: the dispatcher allocates
    and frees a few hundred KiB per batch (a block's text, its encoded entries), and each
    fresh mapping costs a page fault per 4 KiB on first touch (measured: 470 → 330 ns a
    line at 1000-entry batches). Freed memory beyond 64 MiB is still returned."""
    set_malloc_thresholds(4 * 1024 * 1024, 64 * 1024 * 1024)


def run_dispatcher(ctx: ChildContext) -> None:
    """Batch until every collector has finished, then deliver, checkpoint and exit; or,
    retired by a reload, publish what it holds and exit for a successor."""
    keep_freed_memory()
    plan = ctx.plan
    host = socket.gethostname()
    inputs = [
        SourceInput(
            name=name,
            consumer=ctx.collector_consumer(name),
            counters=ctx.table.block(plan.counter_index(name)),
            host=host,
            **plan.config.sources[name].line_rules(plan.config.buffer.collector_slot_bytes),
        )
        for name in plan.sources
    ]
    output = ctx.batch_producer()
    sinks = SinkSide(ctx, plan, output.ring)

    def frontier() -> int:
        # Cursors first, then what the retry process holds: it records a failed batch as
        # held before the sink may release the slot, so read in this order no failed batch
        # can be in neither place (see retry/service.py).
        delivered = output.ring.min_consumer_cursor()
        held = min(block.get(Counter.OWNED_LOW) for block in sinks.blocks)
        return min(delivered, held - 1)

    dispatcher = Dispatcher(
        plan.config.dispatcher,
        inputs,
        output,
        ctx.table.block(plan.counter_index(DISPATCHER)),
        CheckpointStore(plan.config.data_dir),
        frontier=frontier,
        largest_batch=largest_batch_bytes(plan.config),
        **sinks.targets(),
    )
    applied = plan.generation
    if ctx.state.applied[0] != applied:  # started for a reload: its switch is here
        tell_retiring(ctx, plan, output.ring.published)
    ctx.state.apply(applied, output.ring.published)
    while True:
        moved = dispatcher.step()
        if ctx.state.generation != applied:
            applied = ctx.state.generation
            new_plan = read_plan(plan.run_prefix, applied)
            if ctx.counters.get(Counter.RETIRE):
                # the reload changed a source or batching: publish what is held, let the
                # sinks deliver it (briefly) and commit it, so a changed collector resumes
                # where its lines were delivered, not at an older checkpoint (duplicates)
                dispatcher.flush()
                tell_retiring(ctx, new_plan, output.ring.published)
                settle = min(RETIRE_SETTLE, float(plan.config.supervisor.shutdown_timeout) / 2)
                deadline = time.monotonic() + settle
                while not dispatcher.all_delivered() and time.monotonic() < deadline:
                    ctx.bell.wait(0.02)
                    dispatcher.acks.acknowledge()
                dispatcher.acks.acknowledge()
                dispatcher.save_checkpoint()
                log.info("retired by a reload: a dispatcher with the new config follows")
                return
            dispatcher.flush()  # before a new sink's cursor starts: cut for the old sinks
            tell_retiring(ctx, new_plan, output.ring.published)
            sinks = SinkSide(ctx, new_plan, output.ring)
            dispatcher.retarget(**sinks.targets())
            output.wake_only([ctx.bell_of(s, sinks.plan) for s in sinks.plan.sinks])
            ctx.state.apply(applied, output.ring.published)
            moved = True
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
    # the sinks released every batch: delivered, or handed to the retry process (whose
    # spool and DLQ the supervisor's drain summary reports); this process knows no more
    log.info("every batch released by the sinks (delivered or handed to retry), checkpoint saved")


def tell_retiring(ctx: ChildContext, plan: RunPlan, switch: int) -> None:
    """Tell the sinks ``plan`` removes or changes that ``switch`` is their last batch,
    before anything later is published: a sink reads the cursor before this word, so it
    never takes a later batch under its old config (sinks/base.py ``stop_after``)."""
    for name, block in plan.retiring.items():
        ctx.table.block(block).set(Counter.RETIRE, switch + 2)
        bell = ctx.bells.get(name)
        if bell is not None:
            bell.signal()


class SinkSide:
    """What the dispatcher needs of the sinks of one run plan; a new sink's batch-ring
    cursor starts here, at the current batch (it gets every batch after it)."""

    def __init__(self, ctx: ChildContext, plan: RunPlan, ring: Ring) -> None:
        self.plan = plan
        self.blocks = [ctx.table.block(plan.counter_index(sink)) for sink in plan.sinks]
        for sink in plan.sinks:
            if not ring.active(plan.slots[sink]):
                ring.activate(plan.slots[sink])

    def targets(self) -> dict[str, Any]:
        """Keyword arguments of Dispatcher and Dispatcher.retarget."""
        plan, config = self.plan, self.plan.config
        return {
            "routes": {
                plan.slots[name]: sink.when
                for name in plan.sinks
                if (sink := config.sinks[name]).when is not None
            },
            "ledger": [
                (block, inputs, skip_bit)
                for block, (inputs, skip_bit) in zip(self.blocks, plan.routes(), strict=True)
            ],
            "by_level": any(config.sinks[name].routes_by_level() for name in plan.sinks),
            "routed": tuple(
                sorted(set().union(*(config.sinks[name].routed_fields() for name in plan.sinks)))
            ),
        }
