"""Re-offering dead-lettered batches by themselves (``dlq.reprocess``).

Records the DLQ holds because retrying stopped — ``overflow`` (the spool was full) and
``exhausted`` (max_attempts or max_retry_duration) — are moved back into the retry spool
every ``interval``, to their own sink only, once that sink's circuit is closed again;
``permanent`` records wait for ``logcap dlq replay``, since the destination refused them.

A record is put in the spool (forced to disk) *before* it is marked replayed in the DLQ:
a crash between the two re-offers it once more (a duplicate), never loses it. A re-offered
batch starts its retries afresh (attempts 0, a new first failure time); if it fails for
good again it comes back to the DLQ as a new record and is re-offered a pass later, so the
interval is the backoff between rounds. A pass takes at most ``MAX_PER_PASS`` batches and
never fills the spool past its bound, so new entries are not starved; afterwards the DLQ
segments whose every record was re-offered (or replayed by hand) are deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from logcap.dlq.reader import Position, StoredRecord, mark, scan
from logcap.dlq.record import Problem
from logcap.metrics import Counter
from logcap.retry.heap import RetryItem
from logcap.retry.service import RetryService, SinkLane

log = logging.getLogger(__name__)
MAX_PER_PASS = 256
REOFFERED_KINDS = ("overflow", "exhausted")


class DlqReprocessor:
    """One pass every ``interval`` seconds over the DLQ, from where the last one stopped."""

    def __init__(
        self,
        directory: Path,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = directory
        self.interval = interval
        self.clock = clock
        self.wall_ns = wall_ns
        self.next_pass = clock() + interval
        # records up to here need no second look (permanent, replayed, or re-offered)
        self.done_up_to: Position | None = None

    def step(self, service: RetryService) -> int:
        """Run a pass if one is due; return how many batches were re-offered."""
        if self.clock() < self.next_pass:
            return 0
        self.next_pass = self.clock() + self.interval
        if not self.directory.is_dir():
            return 0
        lanes = {lane.name: lane for lane in service.lanes}
        problems: list[Problem] = []
        offered = 0
        skipped = False  # a record that may be re-offered later was left behind
        for stored in scan(self.directory, problems, after=self.done_up_to):
            lane = lanes.get(stored.record.sink)
            if stored.replayed or stored.kind not in REOFFERED_KINDS or lane is None:
                if not skipped:
                    self.done_up_to = stored.position
                continue
            if offered >= MAX_PER_PASS or not service.spool.fits(len(stored.record.batch)):
                break
            if lane.counters.get(Counter.CIRCUIT_STATE) != 0:  # not healthy yet
                skipped = True
                continue
            if not self._offer(service, lane, stored):
                break
            offered += 1
            if not skipped:
                self.done_up_to = stored.position
        for problem in problems:
            log.warning("dlq reprocess: %s", problem)
        if offered:
            log.info("dlq reprocess: %d dead-lettered batches re-offered to their sinks", offered)
            # their records now live in the spool: segments wholly replayed are freed
            service.dlq.delete_replayed()
        return offered

    def _offer(self, service: RetryService, lane: SinkLane, stored: StoredRecord) -> bool:
        record = stored.record
        now_ns = self.wall_ns()
        item = RetryItem(
            lane.index,
            record.batch_seq,
            0,
            service.clock(),
            now_ns,
            f"re-offered from the dead letter queue ({record.kind}: {record.reason})",
            bytes(record.batch),
            record.entries,
        )
        if not service.spool_item(lane, item):
            return False
        service.spool.sync()  # durable in the spool before the DLQ forgets it
        mark(stored)
        service.schedule(item)
        lane.counters.add(Counter.DLQ_REPROCESSED)
        # in flight again: held first, then counted as published again (the ledger reads
        # the published side first, so the entries are never in neither)
        service.publish_held(lane)
        lane.counters.add(Counter.DLQ_REPROCESSED_ENTRIES, record.entries)
        return True
