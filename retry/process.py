"""Entry point of the retry process."""

from __future__ import annotations

import logging
from functools import partial

from logcap.child import ChildContext
from logcap.dlq.writer import DlqWriter, dlq_directory
from logcap.metrics import Counter
from logcap.retry.heap import DelayHeap
from logcap.retry.policy import BackoffPolicy
from logcap.retry.service import RetryService, SinkLane
from logcap.ringbuf import Ring

log = logging.getLogger(__name__)


def run_retry(ctx: ChildContext) -> None:
    """Serve every sink's failures until the pipeline has drained."""
    plan, config = ctx.plan, ctx.plan.config
    lanes = []
    for index, sink in enumerate(plan.sinks):
        block = ctx.table.block(plan.counter_index(sink))
        lanes.append(
            SinkLane(
                index,
                sink,
                ctx.failure_consumer(sink),
                ctx.redelivery_producer(sink),
                block,
                publish_low=partial(block.set, Counter.OWNED_LOW),
            )
        )
    retry = config.retry
    service = RetryService(
        BackoffPolicy(
            retry.initial_backoff, retry.max_backoff, retry.max_attempts, retry.max_retry_duration
        ),
        DelayHeap(retry.max_entries, retry.max_bytes),
        DlqWriter(dlq_directory(config.data_dir), config.dlq),
        lanes,
        ctx.counters,
    )
    batches = Ring.attach(plan.batch_ring)
    try:
        while True:
            # draining: the sinks are finishing; nothing new goes back to them, and this
            # process stays until every redelivery they hold has been reported on
            draining = ctx.state.inputs_closed and _batches_delivered(batches)
            moved = service.step(redeliver=not draining)
            if draining and _exchanges_empty(lanes):
                break
            if not moved:
                ctx.bell.wait(service.next_timeout())
    finally:
        service.dlq.close()
    if not service.idle():
        log.warning(
            "stopping with %d batches still waiting for a retry; their lines were "
            "not checkpointed and will be read again",
            len(service.heap),
        )


def _batches_delivered(batches: Ring) -> bool:
    """The dispatcher closed the batch ring and every sink released all of it."""
    return batches.closed and batches.min_consumer_cursor() >= batches.published


def _exchanges_empty(lanes: list[SinkLane]) -> bool:
    """Every failure record taken in, every redelivery taken and reported on by its sink."""
    return all(
        lane.failures.next_sequence > lane.failures.ring.published
        and lane.redeliveries.ring.consumer_cursor(0) >= lane.redeliveries.ring.published
        for lane in lanes
    )
