"""The retry process (retry/) and the sink's side of the hand-off (sinks/base.py).

Covers: full-jitter backoff and when to give up (max_attempts, max_retry_duration); the
bounded delay heap (due order, bounds on entries and bytes, exact counts); RetryService
over real failure / redelivery rings, a real DLQ writer and a real counter table — a
failed batch goes back to its own sink only once due, OWNED_LOW covers it until the sink
reports it delivered and is stored before the failure slot is released, permanent /
exhausted / overflow batches go to the DLQ, a full DLQ (``block``) holds the pipeline,
one timer for the whole heap, no threads; and SinkRunner with the retry rings — a failed
batch is handed off and the runner moves on, redeliveries are reported delivered or go
back with one more attempt and their first failure time.

Nothing sleeps: the service reads an injected clock and wall clock, and the runner's
hand-off wait steps the real service (what the retry process does meanwhile).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _component_helpers import RingFactory, publish_batch, ring_fixture
from _retry_helpers import (
    ENTRIES,
    Redelivery,
    RetryRig,
    RigFactory,
    SinkEnd,
    policy_of,
    rig_fixture,
    run_config,
    sample_batch,
)

from logcap.dispatch.batch import Batch
from logcap.dlq.record import encode_record
from logcap.errors import REASON_CODES, DeliveryError, Permanent, Retryable
from logcap.metrics import NOTHING, Counter
from logcap.retry.heap import DelayHeap, RetryItem
from logcap.retry.messages import (
    DELIVERED,
    PERMANENT,
    REDELIVER,
    RETRYABLE,
    Message,
    read_message,
)
from logcap.retry.policy import BackoffPolicy
from logcap.retry.service import RetryService
from logcap.retry.spool import Spool
from logcap.ringbuf import Consumer, Producer, Ring
from logcap.sinks.base import SinkRunner


@pytest.fixture
def rings() -> Iterator[RingFactory]:
    yield from ring_fixture()


@pytest.fixture
def make_rig(rings: RingFactory, tmp_path: Path) -> Iterator[RigFactory]:
    yield from rig_fixture(rings, tmp_path)


def code(name: str) -> int:
    return REASON_CODES.index(name)


# -- backoff policy ----------------------------------------------------------------------


def test_backoff_ceiling_doubles_per_attempt_from_initial_backoff_up_to_max_backoff(
    tmp_path: Path,
) -> None:
    drawn: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        drawn.append((low, high))
        return high

    config = run_config(tmp_path, "initial_backoff: 500ms, max_backoff: 5s")
    policy = policy_of(config, uniform)
    delays = [policy.delay(attempts) for attempts in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    assert all(low == 0.0 for low, _ in drawn)  # full jitter: always from zero
    # a batch that failed a very long time keeps the cap (no overflow of 2**n)
    assert policy.delay(10_000) == 5.0


def test_backoff_delays_are_spread_below_the_ceiling_with_real_random(tmp_path: Path) -> None:
    config = run_config(tmp_path, "initial_backoff: 1s, max_backoff: 8s")
    r = config.retry
    policy = BackoffPolicy(r.initial_backoff, r.max_backoff, r.max_attempts, r.max_retry_duration)
    for attempts, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [policy.delay(attempts) for _ in range(2000)]
        assert all(0.0 <= d < ceiling for d in delays)
        # jitter, not a fixed delay: batches that failed together spread out
        assert min(delays) < ceiling / 4 and max(delays) > ceiling * 3 / 4


def test_retrying_is_exhausted_after_max_attempts_counting_the_first(tmp_path: Path) -> None:
    policy = policy_of(run_config(tmp_path, "max_attempts: 3, max_retry_duration: 1h"))
    assert policy.exhausted(1, first_failure=100.0, now=100.0) is None
    assert policy.exhausted(2, first_failure=100.0, now=100.0) is None
    why = policy.exhausted(3, first_failure=100.0, now=100.0)
    assert why is not None and "3 attempts" in why


def test_retrying_is_exhausted_after_max_retry_duration_since_the_first_failure(
    tmp_path: Path,
) -> None:
    policy = policy_of(run_config(tmp_path, "max_attempts: 100, max_retry_duration: 1m"))
    assert policy.exhausted(2, first_failure=100.0, now=159.5) is None
    why = policy.exhausted(2, first_failure=100.0, now=160.0)
    assert why is not None and "60s" in why


# -- delay heap --------------------------------------------------------------------------


def item(seq: int, size: int = 10, entries: int = 1) -> RetryItem:
    return RetryItem(0, seq, 1, 0.0, 0, "boom", bytes(size), entries)


def test_heap_pops_by_due_time_and_ties_keep_insertion_order() -> None:
    heap = DelayHeap(max_entries=100, max_bytes=10_000)
    for seq, due in [(0, 5.0), (1, 1.0), (2, 3.0), (3, 1.0), (4, 5.0), (5, 1.0)]:
        heap.push(due, item(seq))
    assert heap.next_due() == 1.0
    popped = []
    while (got := heap.pop_due(100.0)) is not None:
        popped.append(got.batch_seq)
    assert popped == [1, 3, 5, 2, 0, 4]
    assert heap.next_due() is None and len(heap) == 0


def test_heap_pop_due_returns_nothing_before_the_earliest_due_time() -> None:
    heap = DelayHeap(max_entries=100, max_bytes=10_000)
    heap.push(10.0, item(1))
    heap.push(20.0, item(2))
    assert heap.pop_due(9.999) is None
    assert len(heap) == 2
    first = heap.pop_due(10.0)  # due exactly now counts as due
    assert first is not None and first.batch_seq == 1
    assert heap.pop_due(19.0) is None
    assert heap.next_due() == 20.0


@pytest.mark.parametrize(
    ("bound", "uncached"),
    [("entries", item(9, size=10, entries=3)), ("bytes", item(9, size=31, entries=1))],
)
def test_heap_keeps_no_copy_of_an_item_past_a_memory_bound_but_still_schedules_it(
    bound: str, uncached: RetryItem
) -> None:
    heap = DelayHeap(max_entries=5, max_bytes=100)
    heap.push(1.0, item(1, size=40, entries=2))
    heap.push(2.0, item(2, size=30, entries=1))
    before = (heap.entries, heap.bytes)
    assert not heap.fits(uncached.entries, uncached.size)
    heap.push(0.5, uncached)
    assert uncached.batch is None  # the spool has it; it is read back when due
    assert (heap.entries, heap.bytes) == before
    assert heap.next_due() == 0.5 and len(heap) == 3
    # exactly at the bound is still cached
    cached = item(3, size=30, entries=2)
    heap.push(3.0, cached)
    assert cached.batch is not None and (heap.entries, heap.bytes) == (5, 100)
    assert [heap.pop_due(10.0).batch_seq for _ in range(4)] == [9, 1, 2, 3]  # type: ignore[union-attr]
    assert (heap.entries, heap.bytes) == (0, 0)


def test_heap_entry_and_byte_counts_stay_exact_through_pushes_and_pops() -> None:
    rng = random.Random(7)
    heap = DelayHeap(max_entries=50, max_bytes=2_000)
    model: dict[int, RetryItem] = {}
    now = 0.0
    for seq in range(500):
        if rng.random() < 0.6:
            candidate = item(seq, size=rng.randrange(1, 200), entries=rng.randrange(1, 8))
            fits = heap.fits(candidate.entries, candidate.size)
            heap.push(now + rng.uniform(0, 5), candidate)
            assert (candidate.batch is not None) is fits
            model[seq] = candidate
        else:
            now += rng.uniform(0, 2)
            while (got := heap.pop_due(now)) is not None:
                del model[got.batch_seq]
        assert heap.entries == sum(i.cached_entries for i in model.values()) <= 50
        assert heap.bytes == sum(i.size for i in model.values()) <= 2_000
        assert len(heap) == len(model)
    while heap.pop_due(float("inf")) is not None:
        pass
    assert (heap.entries, heap.bytes, len(heap)) == (0, 0, 0)


# -- retry service -----------------------------------------------------------------------


def test_due_batch_goes_back_on_its_own_sinks_redelivery_ring_only(make_rig: RigFactory) -> None:
    rig = make_rig("initial_backoff: 2s")
    a, b = rig.sinks["a"], rig.sinks["b"]
    batch = sample_batch("b")
    first_ns = rig.clock.wall_ns()
    start = rig.clock.now
    seq = b.report(RETRYABLE, 7, first_ns=first_ns, batch=batch, reason="503", code=6)
    rig.step()
    assert b.taken_in() == seq
    rig.clock.now = start + 1.999
    rig.step()
    assert b.redelivered() == [] and a.redelivered() == []
    rig.clock.now = start + 2.0
    rig.step()
    assert b.redelivered() == [Redelivery(REDELIVER, 7, 1, first_ns, ENTRIES, "503", batch)]
    assert a.redelivered() == []
    assert b.block.get(Counter.RETRY_SCHEDULED) == 1
    assert a.block.get(Counter.RETRY_SCHEDULED) == 0
    assert rig.dlq_records() == []


def test_spool_holds_failed_batches_until_each_is_reported_delivered(
    make_rig: RigFactory,
) -> None:
    rig = make_rig("initial_backoff: 1s")
    a, b = rig.sinks["a"], rig.sinks["b"]
    ns5, ns9 = rig.clock.wall_ns(), rig.clock.wall_ns() + 1
    a.report(RETRYABLE, 9, first_ns=ns9, batch=sample_batch("9"))
    a.report(RETRYABLE, 5, first_ns=ns5, batch=sample_batch("5"))
    rig.step()
    assert rig.spooled == [9, 5]
    # on disk: nothing holds the checkpoint back any more
    assert a.owned_low == NOTHING and b.owned_low == NOTHING
    rig.clock.advance(1.0)
    rig.step()
    assert sorted(r.batch_seq for r in a.redelivered()) == [5, 9]
    assert rig.spooled == [9, 5]  # handed back, not yet reported: still spooled
    a.report(DELIVERED, 5, first_ns=ns5)
    rig.step()
    assert rig.spooled == [9]
    a.report(DELIVERED, 9, first_ns=ns9)
    rig.step()
    assert rig.spooled == []
    assert a.block.get(Counter.RETRY_DELIVERED) == 2
    assert rig.service.idle()
    assert list((rig.dlq_dir.parent / "spool").iterdir()) == []  # every batch done


def test_failed_batch_is_on_disk_before_the_failure_slot_is_released(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    on_disk: list[tuple[list[int], int]] = []  # (spooled on disk, failure ring cursor)
    spool_dir = tmp_path / "data" / "spool"

    def on_low(ring: Ring, low: int) -> None:
        # what a freshly started process would find on disk at this moment
        found = Spool(spool_dir, 1 << 30, 1 << 20).recover()
        on_disk.append(([s.batch_seq for s in found], ring.consumer_cursor(0)))

    rig = make_rig(on_low=on_low)
    a = rig.sinks["a"]
    on_disk.clear()  # the start-up publication
    first = a.report(RETRYABLE, 42, first_ns=rig.clock.wall_ns(), batch=sample_batch())
    second = a.report(RETRYABLE, 40, first_ns=rig.clock.wall_ns(), batch=sample_batch())
    rig.step()
    # the dispatcher may checkpoint past a batch once the sink's cursor passed it, which
    # is once the slot was released: by then the batch must already be in the spool
    assert on_disk == [([42, 40], first - 1)]
    assert a.taken_in() == second


def test_killed_retry_process_loses_nothing_and_its_successor_redelivers_from_the_spool(
    make_rig: RigFactory,
) -> None:
    rig = make_rig("initial_backoff: 1s")
    a, b = rig.sinks["a"], rig.sinks["b"]
    ns = rig.clock.wall_ns()
    a.report(RETRYABLE, 1, first_ns=ns, batch=sample_batch("1"))
    b.report(RETRYABLE, 2, first_ns=ns, batch=sample_batch("2"), attempts=3)
    rig.step()
    rig.clock.advance(1.0)
    rig.step()  # batch 1 handed back to sink a, which has not taken it yet
    b.report(RETRYABLE, 3, first_ns=ns + 5, batch=sample_batch("3"))  # not taken in yet
    rig.restart()
    assert sorted(rig.spooled) == [1, 2]
    assert a.owned_low == NOTHING
    rig.step()  # takes in batch 3, left in the failure ring by its predecessor
    assert sorted(rig.spooled) == [1, 2, 3]
    rig.clock.advance(60.0)
    rig.step()
    # batch 1 is in flight with sink a: its outcome is awaited, not handed back twice
    [handed_back] = a.redelivered()
    assert handed_back.batch_seq == 1
    assert sorted((r.batch_seq, r.attempts) for r in b.redelivered()) == [(2, 3), (3, 1)]
    a.report(DELIVERED, 1, first_ns=handed_back.first_failure_ns)
    rig.step()
    assert sorted(rig.spooled) == [2, 3]
    assert rig.dlq_records() == []


def test_recovered_permanent_failure_that_waited_for_dlq_space_goes_to_the_dlq(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(dlq="max_bytes: 96KiB, segment_bytes: 96KiB, when_full: block")
    a = rig.sinks["a"]
    big = sample_batch("big", size=14_000)
    for seq in (1, 2, 3):
        a.report(PERMANENT, seq, first_ns=rig.clock.wall_ns(), batch=big)
        rig.step()
    assert [r.batch_seq for r in rig.dlq_records()] == [1, 2] and rig.spooled == [3]
    for path in rig.dlq_dir.glob("*.dlq"):
        path.unlink()
    rig.restart()
    rig.step()
    assert [(r.batch_seq, r.kind) for r in rig.dlq_records()] == [(3, "permanent")]
    assert rig.spooled == [] and a.redelivered() == []


def test_permanent_failure_goes_to_the_dlq_at_once_and_is_never_redelivered(
    make_rig: RigFactory,
) -> None:
    rig = make_rig()
    a = rig.sinks["a"]
    batch = sample_batch("p")
    first_ns = rig.clock.wall_ns()
    a.report(PERMANENT, 3, first_ns=first_ns, batch=batch, reason="400 bad", code=code("rejected"))
    rig.step()
    [record] = rig.dlq_records()
    assert (record.sink, record.kind, record.reason) == ("a", "permanent", "400 bad")
    assert (record.batch_seq, record.attempts, record.first_failure_ns) == (3, 1, first_ns)
    assert (record.entries, record.batch) == (ENTRIES, batch)
    assert a.owned_low == NOTHING and rig.spooled == []  # durable in the DLQ
    rig.clock.advance(10_000)
    rig.step()
    assert a.redelivered() == []
    assert a.block.get(Counter.DLQ_PERMANENT) == 1
    assert a.block.get(Counter.RETRY_SCHEDULED) == 0
    assert rig.service.idle()


def test_batch_that_fails_max_attempts_times_goes_to_the_dlq_as_exhausted(
    make_rig: RigFactory,
) -> None:
    rig = make_rig("max_attempts: 2, initial_backoff: 1s")
    a = rig.sinks["a"]
    batch = sample_batch("e")
    first_ns = rig.clock.wall_ns()
    a.report(RETRYABLE, 11, first_ns=first_ns, batch=batch, reason="timeout 1")
    rig.step()
    rig.clock.advance(1.0)
    rig.step()
    [again] = a.redelivered()
    assert again.attempts == 1
    a.report(RETRYABLE, 11, first_ns=first_ns, attempts=2, batch=again.batch, reason="timeout 2")
    rig.step()
    [record] = rig.dlq_records()
    assert (record.kind, record.batch_seq, record.attempts) == ("exhausted", 11, 2)
    assert record.first_failure_ns == first_ns and record.batch == batch
    assert "2 attempts" in record.reason and "timeout 2" in record.reason
    rig.clock.advance(1000.0)
    rig.step()
    assert a.redelivered() == []
    assert rig.spooled == []
    assert a.block.get(Counter.DLQ_EXHAUSTED) == 1


def test_batch_still_failing_after_max_retry_duration_goes_to_the_dlq_as_exhausted(
    make_rig: RigFactory,
) -> None:
    rig = make_rig("max_attempts: 100, initial_backoff: 40s, max_retry_duration: 1m")
    a = rig.sinks["a"]
    first_ns = rig.clock.wall_ns()
    start = rig.clock.now
    a.report(RETRYABLE, 4, first_ns=first_ns, batch=sample_batch())
    rig.step()
    rig.clock.now = start + 40.0
    rig.step()
    [again] = a.redelivered()
    rig.clock.now = start + 60.0  # the sink took 20 s to fail again
    a.report(RETRYABLE, 4, first_ns=first_ns, attempts=2, batch=again.batch, reason="slow")
    rig.step()
    [record] = rig.dlq_records()
    assert (record.kind, record.batch_seq, record.attempts) == ("exhausted", 4, 2)
    assert "60s" in record.reason
    assert rig.spooled == []
    assert len(rig.service.heap) == 0


def test_batch_past_the_heaps_memory_bound_waits_on_disk_and_is_redelivered_whole(
    make_rig: RigFactory,
) -> None:
    rig = make_rig("max_entries: 5, initial_backoff: 1s")
    a = rig.sinks["a"]
    first, second = sample_batch("1"), sample_batch("2")
    a.report(RETRYABLE, 1, first_ns=rig.clock.wall_ns(), batch=first)
    a.report(RETRYABLE, 2, first_ns=rig.clock.wall_ns(), batch=second, reason="io")
    rig.step()
    assert rig.dlq_records() == []
    assert rig.service.heap.entries == ENTRIES  # only the first is kept in memory
    assert rig.service.heap.bytes == len(first)
    assert rig.spooled == [1, 2]
    rig.clock.advance(1.0)
    rig.step()
    assert [(r.batch_seq, r.batch) for r in a.redelivered()] == [(1, first), (2, second)]
    assert a.block.get(Counter.RETRY_SCHEDULED) == 2


def test_batch_past_spool_max_bytes_goes_to_the_dlq_as_overflow(
    make_rig: RigFactory,
) -> None:
    small, large = sample_batch("s"), sample_batch("l", size=30_000)
    rig = make_rig("spool_max_bytes: 100KiB")
    a = rig.sinks["a"]
    a.report(RETRYABLE, 1, first_ns=rig.clock.wall_ns(), batch=large)
    a.report(RETRYABLE, 2, first_ns=rig.clock.wall_ns(), batch=large, reason="io")
    a.report(RETRYABLE, 3, first_ns=rig.clock.wall_ns(), batch=small)
    rig.step()
    [record] = rig.dlq_records()
    assert (record.kind, record.batch_seq, record.batch) == ("overflow", 2, large)
    assert "spool full" in record.reason and "io" in record.reason
    assert rig.spooled == [1, 3]
    assert rig.service.spool.total_bytes <= 100 * 1024
    assert a.block.get(Counter.DLQ_OVERFLOW) == 1
    assert a.block.get(Counter.RETRY_SCHEDULED) == 2


def test_full_dlq_with_block_holds_the_batch_and_stops_ingesting_until_space_is_freed(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(dlq="max_bytes: 96KiB, segment_bytes: 96KiB, when_full: block")
    a = rig.sinks["a"]
    big = sample_batch("big", size=14_000)  # two fit in 96 KiB, a third does not
    for seq in (1, 2):
        a.report(PERMANENT, seq, first_ns=rig.clock.wall_ns(), batch=big)
        rig.step()
    assert [r.batch_seq for r in rig.dlq_records()] == [1, 2]
    a.report(PERMANENT, 3, first_ns=rig.clock.wall_ns(), batch=big)
    rig.step()
    assert [r.batch_seq for r in rig.dlq_records()] == [1, 2]
    assert rig.spooled == [3]  # not in the DLQ yet: it waits in the spool
    assert a.owned_low == NOTHING
    assert rig.retry_block.get(Counter.ERRORS) >= 1
    # the pipeline is held: a new failure is left in the failure ring
    pending = a.report(RETRYABLE, 4, first_ns=rig.clock.wall_ns(), batch=sample_batch())
    rig.step(3)
    assert a.taken_in() < pending
    assert rig.spooled == [3]
    assert rig.service.next_timeout(5.0) <= 0.25  # poll for space, not the heap's timer
    # free space the way `logcap dlq purge --all` does: remove the segment files
    for path in rig.dlq_dir.glob("*.dlq"):
        path.unlink()
    rig.step()
    assert [r.batch_seq for r in rig.dlq_records()] == [3]
    assert a.taken_in() == pending
    assert rig.spooled == [4]
    assert a.block.get(Counter.DLQ_PERMANENT) == 3


def test_repeated_or_stale_delivered_reports_are_harmless(make_rig: RigFactory) -> None:
    rig = make_rig("initial_backoff: 1s")
    a = rig.sinks["a"]
    ns5 = rig.clock.wall_ns()
    a.report(RETRYABLE, 5, first_ns=ns5, batch=sample_batch("5"))
    a.report(RETRYABLE, 6, first_ns=ns5 + 1, batch=sample_batch("6"))
    rig.step()
    # a report for an earlier failure of batch 6 (another first_failure_ns) owns nothing
    a.report(DELIVERED, 6, first_ns=ns5 - 1_000)
    rig.step()
    assert rig.spooled == [5, 6]
    assert {i.batch_seq for i in rig.service.heap.items()} == {5, 6}
    rig.clock.advance(1.0)
    rig.step()
    assert len(a.redelivered()) == 2
    # a sink that crashed after reporting re-serves the redelivery and reports again
    a.report(DELIVERED, 5, first_ns=ns5)
    a.report(DELIVERED, 5, first_ns=ns5)
    rig.step()
    assert rig.spooled == [6]
    assert a.block.get(Counter.RETRY_DELIVERED) == 1
    a.report(DELIVERED, 6, first_ns=ns5 + 1)
    rig.step()
    assert rig.spooled == []
    assert a.block.get(Counter.RETRY_DELIVERED) == 2


def test_full_redelivery_ring_keeps_the_batch_in_the_heap_and_hands_it_back_later(
    make_rig: RigFactory,
) -> None:
    rig = make_rig("initial_backoff: 1s", redelivery_slots=1)
    a = rig.sinks["a"]
    a.report(RETRYABLE, 1, first_ns=rig.clock.wall_ns(), batch=sample_batch("1"))
    a.report(RETRYABLE, 2, first_ns=rig.clock.wall_ns(), batch=sample_batch("2"))
    rig.step()
    rig.clock.advance(1.0)
    rig.step()
    assert [i.batch_seq for i in rig.service.heap.items()] == [2]
    assert rig.spooled == [1, 2]
    assert [r.batch_seq for r in a.redelivered()] == [1]  # frees the one slot
    rig.clock.advance(1.0)
    rig.step()
    assert [r.batch_seq for r in a.redelivered()] == [2]
    assert len(rig.service.heap) == 0
    assert rig.dlq_records() == []


def test_full_redelivery_ring_of_one_sink_does_not_hold_back_another_sinks_batch(
    make_rig: RigFactory,
) -> None:
    rig = make_rig("initial_backoff: 1s", redelivery_slots=1)
    a, b = rig.sinks["a"], rig.sinks["b"]
    for seq in (1, 2):  # sink a gets two batches back but takes only one at a time
        a.report(RETRYABLE, seq, first_ns=rig.clock.wall_ns(), batch=sample_batch(str(seq)))
    rig.step()
    b.report(RETRYABLE, 3, first_ns=rig.clock.wall_ns(), batch=sample_batch("3"))
    rig.step()
    rig.clock.advance(1.0)
    rig.step(3)  # the clock does not move: sink a is still busy with batch 1
    assert [r.batch_seq for r in b.redelivered()] == [3]
    assert [r.batch_seq for r in a.redelivered()] == [1]
    assert [i.batch_seq for i in rig.service.heap.items()] == [2]


def test_counters_follow_scheduled_retries_reasons_and_dlq_writes(make_rig: RigFactory) -> None:
    rig = make_rig("initial_backoff: 1s")
    a = rig.sinks["a"]
    retryable, permanent = sample_batch("r"), sample_batch("p", size=50)
    ns = rig.clock.wall_ns()
    a.report(RETRYABLE, 1, first_ns=ns, batch=retryable, code=code("disk_full"))
    a.report(PERMANENT, 2, first_ns=ns, batch=permanent, code=code("rejected"))
    rig.step()
    assert a.block.get(Counter.RETRY_SCHEDULED) == 1
    assert a.block.get(Counter.RETRIES_BY_CODE + code("disk_full")) == 1
    assert sum(a.block.get(Counter.RETRIES_BY_CODE + i) for i in range(len(REASON_CODES))) == 1
    assert rig.retry_block.get(Counter.RETRY_HEAP_ENTRIES) == ENTRIES
    assert rig.retry_block.get(Counter.RETRY_HEAP_BYTES) == len(retryable)
    [record] = rig.dlq_records()
    [segment] = list(rig.dlq_dir.glob("*.dlq"))
    assert a.block.get(Counter.DLQ_PERMANENT) == 1
    assert a.block.get(Counter.DLQ_BYTES) == len(encode_record(record))
    assert a.block.get(Counter.DLQ_ENTRIES) == ENTRIES
    assert rig.retry_block.get(Counter.DLQ_TOTAL_BYTES) == segment.stat().st_size
    rig.clock.advance(1.0)
    rig.step()
    a.redelivered()
    a.report(DELIVERED, 1, first_ns=ns)
    rig.step()
    assert rig.retry_block.get(Counter.RETRY_HEAP_ENTRIES) == 0
    assert rig.retry_block.get(Counter.RETRY_HEAP_BYTES) == 0
    assert a.block.get(Counter.RETRY_DELIVERED) == 1
    assert rig.sinks["b"].block.get(Counter.DLQ_BYTES) == 0


def test_retries_by_reason_count_only_retries_that_were_scheduled(make_rig: RigFactory) -> None:
    rig = make_rig("max_attempts: 1")
    a = rig.sinks["a"]
    a.report(RETRYABLE, 1, first_ns=rig.clock.wall_ns(), batch=sample_batch(), code=code("io"))
    rig.step()
    assert [r.kind for r in rig.dlq_records()] == ["exhausted"]
    assert a.block.get(Counter.RETRY_SCHEDULED) == 0
    # "retries scheduled, by sink and reason": none was scheduled
    assert a.block.get(Counter.RETRIES_BY_CODE + code("io")) == 0


def test_next_timeout_follows_the_earliest_due_batch(make_rig: RigFactory) -> None:
    rig = make_rig("initial_backoff: 1s, max_backoff: 1m")
    a = rig.sinks["a"]
    assert rig.service.next_timeout(0.5) == 0.5  # empty heap: just the loop's maximum
    assert rig.service.next_timeout(30.0) == 30.0
    ns = rig.clock.wall_ns()
    a.report(RETRYABLE, 1, first_ns=ns, attempts=3, batch=sample_batch("1"))  # due in 4 s
    a.report(RETRYABLE, 2, first_ns=ns, attempts=2, batch=sample_batch("2"))  # due in 2 s
    rig.step()
    assert rig.service.next_timeout(30.0) == pytest.approx(2.0)
    assert rig.service.next_timeout(0.5) == 0.5
    rig.clock.advance(1.5)
    assert rig.service.next_timeout(30.0) == pytest.approx(0.5)
    rig.clock.advance(0.5)
    rig.step()
    assert [r.batch_seq for r in a.redelivered()] == [2]
    assert rig.service.next_timeout(30.0) == pytest.approx(2.0)
    rig.clock.advance(5.0)  # overdue: do not sleep at all
    assert rig.service.next_timeout(30.0) == 0.0


def test_service_never_starts_a_thread_however_many_batches_wait(make_rig: RigFactory) -> None:
    rig = make_rig("initial_backoff: 1s, max_backoff: 4s, max_attempts: 4")
    threads = threading.active_count()
    ends = list(rig.sinks.values())
    rng = random.Random(3)
    outstanding: dict[tuple[str, int], int] = {}
    for seq in range(300):
        end = ends[seq % 2]
        ns = rig.clock.wall_ns()
        kind = PERMANENT if seq % 7 == 0 else RETRYABLE
        end.report(kind, seq, first_ns=ns, batch=sample_batch(str(seq)))
        if kind == RETRYABLE:
            outstanding[(end.name, seq)] = ns
        rig.step()
        rig.clock.advance(rng.uniform(0, 0.1))
        for e in ends:  # the sinks deliver whatever comes back
            for again in e.redelivered():
                e.report(DELIVERED, again.batch_seq, first_ns=again.first_failure_ns)
                outstanding.pop((e.name, again.batch_seq))
                rig.step()
        assert threading.active_count() == threads
    while outstanding:
        rig.clock.advance(1.0)
        rig.step()
        for e in ends:
            for again in e.redelivered():
                e.report(DELIVERED, again.batch_seq, first_ns=again.first_failure_ns)
                outstanding.pop((e.name, again.batch_seq))
                rig.step()
    rig.step()
    assert threading.active_count() == threads
    assert rig.service.idle()
    assert all(e.owned_low == NOTHING for e in ends)
    assert len(rig.dlq_records()) == len(range(0, 300, 7))


# -- sink runner with the retry rings ----------------------------------------------------


class ScriptedSink:
    """A Sink that fails as scripted: each write takes the next outcome (None = success)."""

    def __init__(self, script: list[DeliveryError | None]) -> None:
        self.script = script
        self.attempted: list[bytes] = []
        self.delivered: list[bytes] = []

    def write(self, batch: Batch) -> None:
        payload = bytes(batch.payload)
        self.attempted.append(payload)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.delivered.append(payload)

    def flush(self) -> list[tuple[int, DeliveryError]]:
        """Nothing buffered."""
        return []

    def close(self) -> None:
        """Nothing to release."""


class StepRetryWhileWaiting:
    """The runner's hand-off wait: meanwhile the retry process does one pass."""

    def __init__(self, service: RetryService, batch_ring: Ring) -> None:
        self.service = service
        self.batch_ring = batch_ring
        self.batch_cursors: list[int] = []  # the batch ring cursor at every wait

    def wait(self, timeout: float) -> None:
        self.batch_cursors.append(self.batch_ring.consumer_cursor(0))
        self.service.step()

    def signal(self) -> None:
        """Nobody parks on this."""


class RunnerRig:
    """A SinkRunner on a real batch ring whose failure / redelivery rings a RetryRig serves."""

    def __init__(
        self, rings: RingFactory, rig: RetryRig, script: list[DeliveryError | None]
    ) -> None:
        self.rig = rig
        self.end: SinkEnd = rig.sinks["a"]
        self.batch_ring = rings.create(8, 64 * 1024, consumers=1, role="batch")
        self.dispatcher = Producer(self.batch_ring)
        self.sink = ScriptedSink(script)
        self.waits = StepRetryWhileWaiting(rig.service, self.batch_ring)

        def no_in_place_retry(seconds: float) -> None:
            pytest.fail("with a retry process the runner must not retry in place")

        self.runner = SinkRunner(
            "a",
            self.sink,
            Consumer(self.batch_ring),
            self.end.block,
            failures=self.end.failures,
            redeliveries=self.end.redeliveries,
            sleep=no_in_place_retry,
            wall_ns=rig.clock.wall_ns,
            wait=self.waits,
        )

    def publish(self, slot: bytes) -> int:
        return publish_batch(self.dispatcher, slot)

    def failure_record(self, seq: int) -> Message:
        """The failure-ring record at ``seq`` (released slots keep their bytes)."""
        ring = self.end.failures.ring
        return read_message(ring.payload(seq)[: ring.slot_length(seq)])


def payload(slot: bytes) -> bytes:
    return bytes(Batch.from_slot(memoryview(slot)).payload)


def test_runner_hands_off_a_failed_batch_and_moves_on_without_waiting_for_the_retry(
    rings: RingFactory, make_rig: RigFactory
) -> None:
    rr = RunnerRig(rings, make_rig("initial_backoff: 10s"), [Retryable("503", "server_error")])
    first, second = sample_batch("first"), sample_batch("second")
    rr.publish(first)
    rr.publish(second)
    assert rr.runner.step(timeout=0.01)
    # the batch slot was held until the retry process took the batch in, then released
    assert rr.waits.batch_cursors and all(c < 0 for c in rr.waits.batch_cursors)
    assert rr.end.taken_in() == 0
    assert rr.batch_ring.consumer_cursor(0) == 1
    assert rr.sink.delivered == [payload(second)]  # no retry yet: its due time is 10 s off
    [waiting] = rr.rig.service.heap.items()
    assert (waiting.batch_seq, waiting.batch) == (0, first)
    assert rr.rig.spooled == [0]
    assert rr.end.block.get(Counter.RETRY_HANDOFFS) == 1
    assert rr.end.block.get(Counter.EVENTS_OUT) == ENTRIES


def test_redelivered_batch_that_succeeds_is_reported_delivered(
    rings: RingFactory, make_rig: RigFactory
) -> None:
    rr = RunnerRig(rings, make_rig("initial_backoff: 1s"), [Retryable("timeout", "timeout")])
    batch = sample_batch("again")
    rr.publish(batch)
    rr.runner.step(timeout=0.01)
    rr.rig.clock.advance(1.0)
    rr.rig.step()  # due: handed back on the redelivery ring
    assert rr.runner.step(timeout=0.01)
    assert rr.sink.delivered == [payload(batch)]
    report = rr.failure_record(1)
    assert (report.kind, report.batch_seq, report.attempts) == (DELIVERED, 0, 1)
    rr.rig.step()
    assert rr.rig.spooled == []
    assert rr.end.block.get(Counter.RETRY_DELIVERED) == 1
    assert rr.end.block.get(Counter.EVENTS_OUT) == ENTRIES
    assert rr.rig.service.idle()


def test_redelivered_batch_that_fails_again_goes_back_with_one_more_attempt(
    rings: RingFactory, make_rig: RigFactory
) -> None:
    rr = RunnerRig(
        rings, make_rig("initial_backoff: 1s"), [Retryable("first"), Retryable("second")]
    )
    batch = sample_batch("twice")
    rr.publish(batch)
    first_ns = rr.rig.clock.wall_ns()
    rr.runner.step(timeout=0.01)
    rr.rig.clock.advance(1.0)
    rr.rig.step()
    rr.runner.step(timeout=0.01)
    again = rr.failure_record(1)
    assert (again.kind, again.batch_seq, again.attempts) == (RETRYABLE, 0, 2)
    assert again.first_failure_ns == first_ns != rr.rig.clock.wall_ns()
    assert (again.reason, bytes(again.batch)) == ("second", batch)
    del again
    [waiting] = rr.rig.service.heap.items()
    assert (waiting.attempts, waiting.first_failure_ns, waiting.batch) == (2, first_ns, batch)
    assert rr.rig.spooled == [0]
    assert [s.attempts for s in rr.rig.service.spool.live.values()] == [2]
    assert rr.sink.attempted == [payload(batch)] * 2 and rr.sink.delivered == []


def test_permanent_error_is_reported_as_permanent_and_lands_in_the_dlq(
    rings: RingFactory, make_rig: RigFactory
) -> None:
    rr = RunnerRig(rings, make_rig(), [Permanent("413 too large", "rejected")])
    batch = sample_batch("big")
    rr.publish(batch)
    rr.runner.step(timeout=0.01)
    report = rr.failure_record(0)
    assert (report.kind, report.code, report.reason) == (
        PERMANENT,
        code("rejected"),
        "413 too large",
    )
    del report
    [record] = rr.rig.dlq_records()
    assert (record.kind, record.sink, record.batch_seq, record.batch) == (
        "permanent",
        "a",
        0,
        batch,
    )
    assert len(rr.rig.service.heap) == 0
    assert rr.batch_ring.consumer_cursor(0) == 0
    assert rr.end.owned_low == NOTHING


def test_reason_code_of_the_error_travels_in_the_failure_record(
    rings: RingFactory, make_rig: RigFactory
) -> None:
    rr = RunnerRig(rings, make_rig(), [Retryable("x", "disk_full")])
    rr.publish(sample_batch())
    rr.runner.step(timeout=0.01)
    report = rr.failure_record(0)
    assert (report.kind, report.code, report.reason, report.entries) == (
        RETRYABLE,
        code("disk_full"),
        "x",
        ENTRIES,
    )
    del report
    assert rr.end.block.get(Counter.RETRIES_BY_CODE + code("disk_full")) == 1
    [waiting] = rr.rig.service.heap.items()
    assert waiting.reason == "x"


def test_a_record_of_an_unexpected_kind_is_ignored_and_holds_nothing(
    make_rig: RigFactory,
) -> None:
    rig = make_rig("initial_backoff: 1s")
    a = rig.sinks["a"]
    a.report(REDELIVER, 9, first_ns=rig.clock.wall_ns(), batch=sample_batch("9"))
    rig.step()
    assert a.owned_low == NOTHING  # nothing owned: the checkpoint is not held back
    assert len(rig.service.heap) == 0


def test_retry_after_asked_by_the_destination_holds_the_batch_at_least_that_long(
    rings: RingFactory, make_rig: RigFactory
) -> None:
    throttled = Retryable("429", "rate_limited", retry_after=30.0)
    rr = RunnerRig(rings, make_rig("initial_backoff: 1s, max_backoff: 2s"), [throttled])
    rr.publish(sample_batch())
    rr.runner.step(timeout=0.01)
    assert rr.failure_record(0).retry_after_ms == 30_000
    start = rr.rig.clock.now
    rr.rig.clock.now = start + 29.9  # far past the backoff delay (at most 1 s)
    rr.rig.step()
    assert rr.end.redelivered() == []
    rr.rig.clock.now = start + 30.0
    rr.rig.step()
    assert [r.batch_seq for r in rr.end.redelivered()] == [0]


def test_a_batch_spooled_by_a_predecessor_that_died_before_releasing_is_redelivered_once(
    make_rig: RigFactory,
) -> None:
    rig = make_rig("initial_backoff: 1s")
    a = rig.sinks["a"]
    batch, ns = sample_batch("twice"), rig.clock.wall_ns()
    a.report(RETRYABLE, 7, first_ns=ns, batch=batch)
    # the predecessor spooled it and died before releasing the failure slot
    rig.service.spool.put("a", 7, 1, ns, ENTRIES, "boom", batch)
    rig.restart()  # recovers it from the spool, and finds its failure record again
    rig.step()
    assert rig.spooled == [7]
    rig.clock.advance(60.0)
    rig.step(3)
    assert [r.batch_seq for r in a.redelivered()] == [7]  # once, not once per copy


def test_a_restarted_sink_process_skips_what_its_predecessor_settled_but_did_not_release(
    rings: RingFactory, make_rig: RigFactory
) -> None:
    """The first batch fails (handed off, the retry process owns it), the second is
    delivered; the process dies before releasing either. Its successor (a new runner on
    the same rings and counter block) must not send or count them again: before, the
    handed-off batch was delivered twice (fresh and redelivered) and counted twice,
    which hid a loss from the events ledger."""
    rr = RunnerRig(rings, make_rig("initial_backoff: 10s"), [Retryable("503", "server_error")])
    first, second = sample_batch("first"), sample_batch("second")
    rr.publish(first)
    rr.publish(second)
    consumer = rr.runner.consumer
    consumer.release = lambda seq: None  # type: ignore[method-assign]  # dies before this
    assert rr.runner.step(timeout=0.01)
    assert rr.sink.delivered == [payload(second)]
    delivered = rr.end.block.get(Counter.EVENTS_OUT)
    successor_sink = ScriptedSink([])
    successor = SinkRunner(
        "a",
        successor_sink,
        Consumer(rr.batch_ring),  # from the cursor the dead process left: both unreleased
        rr.end.block,
        failures=rr.end.failures,
        redeliveries=rr.end.redeliveries,
        wall_ns=rr.rig.clock.wall_ns,
        wait=rr.waits,
    )
    successor.step(timeout=0.01)
    assert successor_sink.attempted == []
    assert rr.batch_ring.consumer_cursor(0) == 1  # released, unsent
    assert rr.end.block.get(Counter.EVENTS_OUT) == delivered
