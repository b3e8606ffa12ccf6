"""Entry point of the retry process."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from logcap.child import ChildContext
from logcap.config import RetryConfig
from logcap.dlq.writer import DlqWriter, dlq_directory
from logcap.memory import set_malloc_thresholds
from logcap.metrics import Counter
from logcap.retry.heap import DelayHeap
from logcap.retry.policy import BackoffPolicy
from logcap.retry.reprocess import DlqReprocessor
from logcap.retry.service import RetryService, SinkLane
from logcap.retry.spool import Spool

log = logging.getLogger(__name__)


def run_retry(ctx: ChildContext) -> None:
    """Serve every sink's failures until the pipeline has drained."""
    # batches (up to 1 MiB each) are copied in and read back from the spool at the pace
    # of failures: each gets its own mapping, returned on free, so however long a sink
    # is down this process stays near retry.max_bytes plus its code
    set_malloc_thresholds(64 * 1024, 1024 * 1024)
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
        Spool(spool_directory(config.data_dir), retry.spool_max_bytes, spool_segment_bytes(retry)),
    )
    reprocess = config.dlq.reprocess
    reprocessor = (
        DlqReprocessor(dlq_directory(config.data_dir), reprocess.interval)
        if reprocess.enabled
        else None
    )
    try:
        while True:
            # draining: nothing goes back to the sinks; once every sink has exited, what
            # they handed over is taken in and this process ends (the spool keeps it)
            sinks_done = ctx.state.sinks_finished
            moved = service.step(redeliver=not ctx.state.inputs_closed)
            if reprocessor is not None and not ctx.state.draining:
                moved |= reprocessor.step(service) > 0
            if sinks_done and _failures_taken(lanes):
                break
            if ctx.counters.get(Counter.RETIRE):
                # a reload changed the sinks or retrying: the spool holds every batch,
                # and a successor with the new plan takes it over (its failure records
                # not yet released and redeliveries in the rings as well)
                log.info("retired by a reload: a retry process with the new config follows")
                return
            if not moved:
                ctx.bell.wait(min(service.next_timeout(), 0.1 if ctx.state.draining else 0.5))
    finally:
        service.close()
    if not service.idle():
        log.warning(
            "stopping with %d batches waiting for a retry in %s; they are retried after "
            "the next start",
            len(service.spool.live),
            service.spool.directory,
        )


def spool_directory(data_dir: str) -> Path:
    """Where the retry spool of a data_dir lives."""
    return Path(data_dir) / "spool"


def spool_segment_bytes(retry: RetryConfig) -> int:
    """Spool segment size: small enough that done segments are freed early."""
    return max(16 << 10, min(64 << 20, retry.spool_max_bytes // 8))


def _failures_taken(lanes: list[SinkLane]) -> bool:
    """Every failure record a sink published has been taken in."""
    return all(lane.failures.next_sequence > lane.failures.ring.published for lane in lanes)
