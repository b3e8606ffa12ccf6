"""dlq.reprocess: overflow and exhausted DLQ records go back to their own sink by themselves,
once its circuit is closed; permanent ones wait for ``logcap dlq replay``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _component_helpers import RingFactory, ring_fixture
from _retry_helpers import RetryRig, RigFactory, rig_fixture, sample_batch

from logcap.dlq import reader
from logcap.metrics import Counter
from logcap.retry import reprocess as reprocess_module
from logcap.retry.messages import DELIVERED, PERMANENT, RETRYABLE
from logcap.retry.reprocess import DlqReprocessor

# overflow: a spool too small for a second batch of this size
SPOOL = "spool_max_bytes: 100KiB, initial_backoff: 1s"
BIG = 30_000


@pytest.fixture
def rings() -> Iterator[RingFactory]:
    yield from ring_fixture()


@pytest.fixture
def make_rig(rings: RingFactory, tmp_path: Path) -> Iterator[RigFactory]:
    yield from rig_fixture(rings, tmp_path)


def _overflow_one(rig: RetryRig) -> bytes:
    """Sink a fails two big batches; the second overflows the spool into the DLQ."""
    a = rig.sinks["a"]
    first, second = sample_batch("1", size=BIG), sample_batch("2", size=BIG)
    a.report(RETRYABLE, 1, first_ns=rig.clock.wall_ns(), batch=first)
    a.report(RETRYABLE, 2, first_ns=rig.clock.wall_ns() + 1, batch=second)
    rig.step()
    assert [(r.kind, r.batch_seq) for r in rig.dlq_records()] == [("overflow", 2)]
    return second


def _reprocessor(rig: RetryRig, interval: float = 60.0) -> DlqReprocessor:
    return DlqReprocessor(rig.dlq_dir, interval, clock=rig.clock, wall_ns=rig.clock.wall_ns)


def _deliver_everything_handed_back(rig: RetryRig) -> list[int]:
    a = rig.sinks["a"]
    got = a.redelivered()
    for r in got:
        a.report(DELIVERED, r.batch_seq, first_ns=r.first_failure_ns)
    rig.step()
    return [r.batch_seq for r in got]


def test_an_overflowed_batch_is_re_offered_to_its_sink_once_there_is_room(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(SPOOL)
    second = _overflow_one(rig)
    reprocessor = _reprocessor(rig)
    rig.clock.advance(1.0)
    rig.step()
    assert reprocessor.step(rig.service) == 0  # the interval has not passed yet
    assert _deliver_everything_handed_back(rig) == [1]  # the first is done: room again
    rig.clock.advance(60.0)
    assert reprocessor.step(rig.service) == 1
    assert list(reader.scan(rig.dlq_dir)) == []  # re-offered: its segment was freed
    assert rig.spooled == [2]
    rig.clock.advance(1.0)
    rig.step()
    [again] = rig.sinks["a"].redelivered()
    assert (again.batch_seq, again.batch, again.attempts) == (2, second, 0)
    assert "re-offered from the dead letter queue (overflow" in again.reason
    assert rig.sinks["a"].block.get(Counter.DLQ_REPROCESSED) == 1
    assert rig.sinks["b"].redelivered() == []
    rig.clock.advance(60.0)
    assert reprocessor.step(rig.service) == 0  # never twice


def test_nothing_is_re_offered_while_the_sinks_circuit_is_open(make_rig: RigFactory) -> None:
    rig = make_rig(SPOOL)
    _overflow_one(rig)
    rig.clock.advance(1.0)
    rig.step()
    _deliver_everything_handed_back(rig)
    a = rig.sinks["a"]
    a.block.set(Counter.CIRCUIT_STATE, 1)  # open, as the sink publishes it
    reprocessor = _reprocessor(rig, interval=5.0)
    rig.clock.advance(5.0)
    assert reprocessor.step(rig.service) == 0
    a.block.set(Counter.CIRCUIT_STATE, 0)
    rig.clock.advance(5.0)
    assert reprocessor.step(rig.service) == 1


def test_a_permanent_record_waits_for_a_replay_by_hand(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.sinks["a"].report(PERMANENT, 3, first_ns=rig.clock.wall_ns(), batch=sample_batch())
    rig.step()
    reprocessor = _reprocessor(rig, interval=1.0)
    rig.clock.advance(1.0)
    assert reprocessor.step(rig.service) == 0
    assert [s.replayed for s in reader.scan(rig.dlq_dir)] == [False]


def test_a_crash_before_the_dlq_mark_re_offers_again_and_loses_nothing(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(SPOOL)
    _overflow_one(rig)
    rig.clock.advance(1.0)
    rig.step()
    _deliver_everything_handed_back(rig)

    def killed(stored: reader.StoredRecord) -> bool:
        raise SystemExit("killed between the spool write and the DLQ mark")

    monkeypatch.setattr(reprocess_module, "mark", killed)
    reprocessor = _reprocessor(rig, interval=1.0)
    rig.clock.advance(1.0)
    with pytest.raises(SystemExit):
        reprocessor.step(rig.service)
    monkeypatch.undo()
    rig.restart()
    assert rig.spooled == [2]  # in the spool, though the DLQ still has it unmarked
    assert [s.replayed for s in reader.scan(rig.dlq_dir)] == [False]
