"""Unit and contract tests of ``logcap.ringbuf``: the ring, its producer and consumers,
the header checks of ``Ring.attach`` and the ``Doorbell`` wait strategy.

The contract tests run over both ring kinds the pipeline uses: the collector ring (one
consumer, SPSC) and the batch ring (one consumer per sink, SPMC, here three). Every test
uses a real ``/dev/shm`` segment; cross-process behaviour under load is in
``test_ring_stress.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import pytest

from logcap.errors import BufferFull, RingCorrupt
from logcap.ringbuf import SLOT_HEADER, Consumer, Doorbell, Producer, Ring, unlink
from logcap.ringbuf import attach as attach_segment
from logcap.ringbuf import create as create_segment

MakeRing = Callable[..., Ring]
_FORK = multiprocessing.get_context("fork")


def _segment_name(role: str) -> str:
    return f"logcap-{os.getpid()}-test-{uuid.uuid4().hex[:8]}-{role}"


@pytest.fixture
def make_ring() -> Iterator[MakeRing]:
    """Creates rings with unique names; closes and unlinks all of them afterwards."""
    rings: list[Ring] = []
    names: list[str] = []

    def make(slots: int = 8, slot_payload: int = 100, consumers: int = 1) -> Ring:
        name = _segment_name("ring")
        names.append(name)
        ring = Ring.create(name, slots, slot_payload, consumers)
        rings.append(ring)
        return ring

    yield make
    for ring in rings:
        ring.close()
    for name in names:
        unlink(name)


@pytest.fixture(params=[1, 3], ids=["spsc-collector-ring", "spmc-batch-ring"])
def consumers(request: pytest.FixtureRequest) -> int:
    """Consumer count of the ring under test: 1 (collector ring) or 3 (batch ring)."""
    return int(request.param)


def _publish(producer: Producer, *records: bytes) -> int:
    """Claim, write and publish ``records`` as one batch; return the highest sequence."""
    hi = producer.claim(len(records))
    for seq, record in zip(range(hi - len(records) + 1, hi + 1), records, strict=True):
        producer.write(seq, record)
    producer.publish(hi)
    return hi


def _consumers_of(ring: Ring) -> list[Consumer]:
    return [Consumer(ring, index) for index in range(ring.consumers)]


# -- creation ----------------------------------------------------------------------
@pytest.mark.parametrize("slots", [0, -8, 3, 6, 100, 1000])
def test_create_rejects_slot_count_that_is_not_a_power_of_two(slots: int) -> None:
    name = _segment_name("ring")
    try:
        with pytest.raises(ValueError, match="power of two"):
            Ring.create(name, slots, 64, 1)
        # Validation happens before anything is created in /dev/shm.
        assert not os.path.exists(f"/dev/shm/{name}")
    finally:
        unlink(name)


@pytest.mark.parametrize("count", [0, -1])
def test_create_rejects_a_ring_without_consumers(count: int) -> None:
    name = _segment_name("ring")
    try:
        with pytest.raises(ValueError, match="at least one consumer"):
            Ring.create(name, 8, 64, count)
        assert not os.path.exists(f"/dev/shm/{name}")
    finally:
        unlink(name)


def test_slots_are_rounded_up_to_whole_cache_lines(make_ring: MakeRing) -> None:
    ring = make_ring(slots=16, slot_payload=100)
    assert ring.slot_count == 16
    assert ring.slot_size == 128  # 100 + 16-byte slot header, rounded up to 64
    assert ring.slot_capacity == 128 - SLOT_HEADER
    assert len(ring.payload(0)) == ring.slot_capacity


def test_fresh_ring_has_nothing_published_and_nothing_released(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(consumers=consumers)
    assert ring.consumers == consumers
    assert ring.published == -1
    assert [ring.consumer_cursor(i) for i in range(consumers)] == [-1] * consumers
    assert ring.occupancy() == 0
    assert not ring.closed


def test_consumer_index_outside_the_ring_is_rejected(make_ring: MakeRing, consumers: int) -> None:
    ring = make_ring(consumers=consumers)
    for index in (-1, consumers):
        with pytest.raises(ValueError, match="no index"):
            Consumer(ring, index)


# -- claim / write / publish / read ------------------------------------------------
def test_published_record_reads_back_identically_for_every_consumer(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(consumers=consumers)
    producer = Producer(ring)
    readers = _consumers_of(ring)
    assert producer.next_sequence == 0
    seq = producer.claim()
    assert seq == 0
    producer.write(seq, b"hello ring")
    producer.publish(seq)
    for reader in readers:
        assert reader.next_sequence == 0
        assert reader.wait_for(0, timeout=1.0) == 0
        # Every consumer reads the same slot in place: no copy per sink.
        assert bytes(reader.read(0)) == b"hello ring"


def test_records_survive_many_wraps_of_the_ring(make_ring: MakeRing, consumers: int) -> None:
    ring = make_ring(slots=4, consumers=consumers)
    producer = Producer(ring)
    readers = _consumers_of(ring)
    for seq in range(50):
        record = f"record {seq} ".encode() * (1 + seq % 5)
        assert _publish(producer, record) == seq
        for reader in readers:
            assert bytes(reader.read(seq)) == record
            reader.release(seq)
    assert ring.published == 49
    assert ring.occupancy() == 0


def test_commit_records_the_length_of_bytes_written_in_place(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(consumers=consumers)
    producer = Producer(ring)
    seq = producer.claim()
    view = producer.payload(seq)
    view[:5] = b"abcde"
    view[5:9] = b"XXXX"  # written but not committed: not part of the record
    producer.commit(seq, 5)
    producer.publish(seq)
    for reader in _consumers_of(ring):
        assert bytes(reader.read(seq)) == b"abcde"


def test_slot_is_stamped_with_the_sequence_and_length_written_there(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(slots=4, consumers=consumers)
    producer = Producer(ring)
    readers = _consumers_of(ring)
    for seq in range(10):
        _publish(producer, b"x" * (seq + 1))
        assert ring.slot_sequence(seq) == seq
        assert ring.slot_length(seq) == seq + 1
        for reader in readers:
            reader.release(seq)
    # Slot 1 now holds sequence 9 (9 & 3 == 1); sequence 5 lived there before it.
    assert ring.slot_sequence(5) == 9


def test_payload_larger_than_the_slot_is_refused(make_ring: MakeRing) -> None:
    ring = make_ring(slot_payload=100)
    producer = Producer(ring)
    seq = producer.claim()
    with pytest.raises(ValueError):
        producer.write(seq, b"x" * (ring.slot_capacity + 1))


@pytest.mark.parametrize("n", [0, -1, 9])
def test_claim_of_no_slots_or_more_than_the_ring_holds_is_rejected(
    make_ring: MakeRing, n: int
) -> None:
    producer = Producer(make_ring(slots=8))
    with pytest.raises(ValueError, match="cannot claim"):
        producer.try_claim(n)
    assert producer.next_sequence == 0


# -- gating and back-pressure --------------------------------------------------------
def test_try_claim_raises_buffer_full_until_every_consumer_released(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(slots=8, consumers=consumers)
    producer = Producer(ring)
    readers = _consumers_of(ring)
    _publish(producer, *[b"r%d" % i for i in range(8)])
    assert producer.free_slots() == 0
    with pytest.raises(BufferFull):
        producer.try_claim()
    # All but the slowest consumer release everything: still a full lap behind.
    for reader in readers[:-1]:
        reader.release(7)
    with pytest.raises(BufferFull):
        producer.try_claim()
    # The slowest frees three slots: exactly three can be claimed, not four.
    readers[-1].release(2)
    with pytest.raises(BufferFull):
        producer.try_claim(4)
    assert producer.try_claim(3) == 10
    with pytest.raises(BufferFull):
        producer.try_claim()
    # A failed claim must not have moved the producer's sequence.
    assert producer.next_sequence == 11


def test_gate_follows_the_slowest_consumer(make_ring: MakeRing, consumers: int) -> None:
    ring = make_ring(slots=8, consumers=consumers)
    producer = Producer(ring)
    readers = _consumers_of(ring)
    _publish(producer, *[b"r"] * 6)
    for offset, reader in enumerate(readers):
        reader.release(5 - offset)  # consumer i is i records behind
    slowest = 5 - (consumers - 1)
    assert ring.min_consumer_cursor() == slowest
    assert ring.occupancy() == 5 - slowest
    assert producer.free_slots() == 8 - (5 - slowest)


def test_claim_with_timeout_raises_buffer_full_once_the_timeout_passed(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(slots=4, consumers=consumers)
    producer = Producer(ring)
    _publish(producer, *[b"r"] * 4)
    started = time.monotonic()
    with pytest.raises(BufferFull):
        producer.claim(timeout=0.05)
    # A lower bound only: claim must not give up before its timeout.
    assert time.monotonic() - started >= 0.05


def test_blocking_claim_returns_once_the_slowest_consumer_releases(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(slots=4, consumers=consumers)
    producer = Producer(ring)
    _publish(producer, *[b"r"] * 4)
    # Release from another process while the producer blocks in claim.
    name = ring.shm.name

    def release_all() -> None:
        time.sleep(0.1)
        other = Ring.attach(name)
        for reader in _consumers_of(other):
            reader.release(0)
        other.close()

    child = _FORK.Process(target=release_all)
    child.start()
    try:
        assert producer.claim(timeout=30) == 4
    finally:
        child.join(30)
    assert child.exitcode == 0


# -- batch publish and visibility -----------------------------------------------------
def test_one_publish_makes_a_whole_claimed_batch_visible(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(slots=16, consumers=consumers)
    producer = Producer(ring)
    readers = _consumers_of(ring)
    hi = producer.claim(5)
    assert hi == 4
    for seq in range(5):
        producer.write(seq, b"batch %d" % seq)
    for reader in readers:
        assert reader.wait_for(0, timeout=0.01) == -1  # written, not yet published
    producer.publish(hi)
    for reader in readers:
        assert reader.wait_for(0, timeout=1.0) == 4
        assert [bytes(reader.read(seq)) for seq in range(5)] == [b"batch %d" % s for s in range(5)]


def test_consumer_never_sees_claimed_but_unpublished_sequences(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(slots=16, consumers=consumers)
    producer = Producer(ring)
    readers = _consumers_of(ring)
    hi = producer.claim(6)
    for seq in range(6):
        producer.write(seq, b"r")
    producer.publish(2)  # only the first three are done
    for reader in readers:
        assert reader.available() == 2
        assert reader.wait_for(3, timeout=0.01) == 2
    producer.publish(hi)
    for reader in readers:
        assert reader.wait_for(3, timeout=1.0) == 5


# -- restarts ---------------------------------------------------------------------------
def test_restarted_producer_resumes_after_the_last_published_sequence(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(slots=16, consumers=consumers)
    first = Producer(ring)
    _publish(first, b"a", b"b", b"c")
    first.claim(2)  # claimed by a producer that then crashed before publishing
    first.write(3, b"never published")
    # The restarted producer attaches anew, as a respawned process would.
    again = Ring.attach(ring.shm.name)
    try:
        second = Producer(again)
        assert second.next_sequence == 3
        _publish(second, b"d")
        for reader in _consumers_of(ring):
            assert reader.wait_for(0, timeout=1.0) == 3
            assert [bytes(reader.read(s)) for s in range(4)] == [b"a", b"b", b"c", b"d"]
    finally:
        again.close()


def test_recreated_consumer_resumes_after_its_released_cursor(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(slots=16, consumers=consumers)
    producer = Producer(ring)
    _publish(producer, *[b"%d" % i for i in range(6)])
    for index in range(consumers):
        reader = Consumer(ring, index)
        reader.release(index + 1)  # consumer i finished records 0..i+1
    again = Ring.attach(ring.shm.name)
    try:
        for index in range(consumers):
            restarted = Consumer(again, index)
            # Anything read but not released is read again (at least once).
            assert restarted.next_sequence == index + 2
            assert bytes(restarted.read(restarted.next_sequence)) == b"%d" % (index + 2)
    finally:
        again.close()


def test_release_never_moves_a_reading_ahead_consumer_backwards(make_ring: MakeRing) -> None:
    ring = make_ring(slots=16)
    producer = Producer(ring)
    _publish(producer, *[b"r"] * 8)
    reader = Consumer(ring)
    reader.next_sequence = 6  # read ahead to 5, keeping the slots until later
    reader.release(2)
    assert reader.next_sequence == 6
    assert ring.consumer_cursor(0) == 2


# -- shutdown ------------------------------------------------------------------------------
def test_consumer_is_drained_only_after_close_and_releasing_everything(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(slots=8, consumers=consumers)
    producer = Producer(ring)
    readers = _consumers_of(ring)
    _publish(producer, b"a", b"b")
    for reader in readers:
        reader.release(1)
    assert not any(reader.drained for reader in readers)  # open: more may come
    _publish(producer, b"c")
    producer.close()
    assert ring.closed
    assert not any(reader.drained for reader in readers)  # "c" still unreleased
    for reader in readers:
        reader.release(2)
    assert all(reader.drained for reader in readers)


def test_restarted_producer_reopens_a_closed_ring(make_ring: MakeRing, consumers: int) -> None:
    ring = make_ring(consumers=consumers)
    producer = Producer(ring)
    _publish(producer, b"a")
    producer.close()
    reader = Consumer(ring, 0)
    reader.release(0)
    assert reader.drained
    Producer(ring)
    assert not ring.closed
    assert not reader.drained


def test_occupancy_counts_published_slots_not_yet_released_by_the_slowest(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(slots=8, consumers=consumers)
    producer = Producer(ring)
    readers = _consumers_of(ring)
    assert ring.occupancy() == 0
    hi = producer.claim(3)
    assert ring.occupancy() == 0  # claimed is not published
    for seq in range(3):
        producer.write(seq, b"r")
    producer.publish(hi)
    assert ring.occupancy() == 3
    readers[0].release(2)
    assert ring.occupancy() == (0 if consumers == 1 else 3)
    for reader in readers:
        reader.release(2)
    assert ring.occupancy() == 0


def test_records_stay_in_the_segment_after_the_writer_closes_its_mapping(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(consumers=consumers)
    name = ring.shm.name
    writer = Ring.attach(name)
    _publish(Producer(writer), b"kept")
    writer.close()
    assert bytes(Consumer(ring, consumers - 1).read(0)) == b"kept"


# -- wake-ups through the doorbells -------------------------------------------------------
def test_publish_rings_every_consumer_doorbell_and_release_rings_the_producer(
    make_ring: MakeRing, consumers: int
) -> None:
    ring = make_ring(consumers=consumers)
    producer_bell = Doorbell()
    bells = [Doorbell() for _ in range(consumers)]
    try:
        producer = Producer(ring, wake=bells, wait=producer_bell)
        readers = [
            Consumer(ring, i, wake_producer=producer_bell, wait=bells[i]) for i in range(consumers)
        ]
        _publish(producer, b"r")
        # eventfd_read raises BlockingIOError on a doorbell nobody rang.
        assert [os.eventfd_read(bell.fd) for bell in bells] == [1] * consumers
        for reader in readers:
            reader.release(0)
        assert os.eventfd_read(producer_bell.fd) == consumers
    finally:
        for bell in [producer_bell, *bells]:
            bell.close()


# -- attach checks the header ---------------------------------------------------------
def _corrupt_word(offset: int, value: int) -> Callable[[memoryview], None]:
    def corrupt(buf: memoryview) -> None:
        struct.pack_into("<q", buf, offset, value)

    return corrupt


def _corrupt_magic(buf: memoryview) -> None:
    buf[:8] = b"NOTARING"


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(_corrupt_magic, id="bad-magic"),
        pytest.param(_corrupt_word(8, 2), id="unknown-version"),
        pytest.param(_corrupt_word(16, 3), id="slot-count-not-power-of-two"),
        pytest.param(_corrupt_word(16, 0), id="zero-slots"),
        pytest.param(_corrupt_word(16, 1 << 20), id="slots-beyond-segment"),
        pytest.param(_corrupt_word(24, 100), id="slot-size-not-cache-lines"),
        pytest.param(_corrupt_word(24, 0), id="slot-size-zero"),
        pytest.param(_corrupt_word(32, 100_000), id="consumer-cursors-beyond-segment"),
        pytest.param(_corrupt_word(32, 0), id="no-consumers"),
    ],
)
def test_attach_rejects_a_segment_whose_header_is_corrupt(
    make_ring: MakeRing, corrupt: Callable[[memoryview], None]
) -> None:
    ring = make_ring(slots=8, slot_payload=100, consumers=1)
    segment = attach_segment(ring.shm.name)
    try:
        corrupt(segment.buf)
    finally:
        segment.close()
    with pytest.raises(RingCorrupt):
        Ring.attach(ring.shm.name)


def test_attach_rejects_a_segment_truncated_below_its_slots(make_ring: MakeRing) -> None:
    ring = make_ring(slots=64, slot_payload=1000)
    os.truncate(f"/dev/shm/{ring.shm.name}", 8192)
    with pytest.raises(RingCorrupt, match="inconsistent"):
        Ring.attach(ring.shm.name)


@pytest.mark.parametrize(
    "size",
    [
        100,
        4100,
    ],
)
def test_attach_rejects_a_segment_too_small_or_oddly_sized_for_a_ring(size: int) -> None:
    name = _segment_name("odd")
    segment = create_segment(name, size)
    try:
        segment.buf[:8] = b"LOGCAPRB"  # right magic, wrong shape
        with pytest.raises(RingCorrupt):
            Ring.attach(name)
    finally:
        segment.close()
        unlink(name)


def test_half_initialised_segment_is_not_a_ring() -> None:
    # Ring.create writes the magic last; before that the segment is all zeros.
    name = _segment_name("zero")
    segment = create_segment(name, 8192)
    try:
        with pytest.raises(RingCorrupt, match="not a logcap ring"):
            Ring.attach(name)
    finally:
        segment.close()
        unlink(name)


# -- Doorbell -----------------------------------------------------------------------------
def _wait_in_child(bell: Doorbell, timeout: float, out: Connection) -> None:
    out.send("ready")
    started = time.monotonic()
    bell.wait(timeout)
    out.send(time.monotonic() - started)


def _wait_until_blocked(pid: int) -> None:
    """Bounded wait until ``pid`` is asleep in the kernel (here: in ``poll``)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "S":
                return
        time.sleep(0.005)


def test_doorbell_signal_from_another_process_wakes_a_blocked_waiter() -> None:
    bell = Doorbell()
    receiver, sender = _FORK.Pipe(duplex=False)
    child = _FORK.Process(target=_wait_in_child, args=(bell, 5.0, sender))
    try:
        child.start()
        assert receiver.poll(10) and receiver.recv() == "ready"
        assert child.pid is not None
        _wait_until_blocked(child.pid)
        time.sleep(0.05)  # let it settle into poll
        bell.signal()
        assert receiver.poll(10)
        waited = receiver.recv()
        # Correctness, not speed: woken by the signal, not by its 5 s timeout.
        assert waited < 2.5
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
        bell.close()
        receiver.close()
        sender.close()
    assert child.exitcode == 0


def test_doorbell_signal_sent_before_wait_is_not_lost() -> None:
    bell = Doorbell()
    try:
        signaller = _FORK.Process(target=bell.signal)
        signaller.start()
        signaller.join(10)
        assert signaller.exitcode == 0
        started = time.monotonic()
        bell.wait(5.0)
        assert time.monotonic() - started < 2.5  # returned at once, not after 5 s
        # The wait consumed the signal: the next wait blocks for its full timeout.
        started = time.monotonic()
        bell.wait(0.05)
        assert time.monotonic() - started >= 0.04
    finally:
        bell.close()


def test_doorbell_passed_by_fd_to_a_spawned_process_can_be_rung_from_there() -> None:
    # The supervisor hands doorbells to `python -m logcap.worker` children by fd number.
    bell = Doorbell()
    try:
        code = (
            "import sys; from logcap.ringbuf import Doorbell; Doorbell(int(sys.argv[1])).signal()"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(bell.fd)],
            pass_fds=(bell.fd,),
            check=True,
            timeout=60,
        )
        assert os.eventfd_read(bell.fd) == 1
    finally:
        bell.close()
