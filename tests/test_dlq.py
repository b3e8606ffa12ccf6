"""The dead letter queue (dlq/): the segment record format and the writer.

Covers: records round-trip through a segment with their offsets; the file magic is
checked; a torn last record (cut inside its body or inside its 12-byte header) and a
damaged record in the middle are reported as Problems while every other record is still
read; garbage never raises. DlqWriter: segments roll over at segment_bytes, numbering
continues across restarts, record and byte counts match the disk, the three fsync modes
(os.fsync counted), max_age expiry with an injected clock, max_bytes with ``block``
(DlqFull, nothing written) and ``drop_oldest`` (oldest segments deleted and counted),
and ``.replayed`` sidecars deleted with their segment.

Configs come from YAML; the size limits (64 KiB minimum; dlq.max_bytes must also hold
the largest batch, ~78 KiB with 1 KiB lines) are reached with ~20-60 KB records.
"""

from __future__ import annotations

import os
import random
import textwrap
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from _component_helpers import config_from_yaml

from logcap.config import DlqConfig
from logcap.dlq.record import (
    FILE_HEADER,
    MAGIC,
    RECORD_HEADER,
    DlqRecord,
    Problem,
    encode_record,
    file_header,
    read_segment,
)
from logcap.dlq.writer import REPLAYED_SUFFIX, DlqWriter, segment_paths
from logcap.errors import DlqFull

TORN = "torn record at the end (crash while writing)"
DAMAGED = "damaged record skipped"


def record(seq: int, size: int = 100, sink: str = "out", kind: str = "permanent") -> DlqRecord:
    """A record whose batch bytes are unique to ``seq`` (so a mix-up would show)."""
    batch = (f"<{seq:06d}>".encode() * (size // 8 + 1))[:size]
    return DlqRecord(
        sink=sink,
        kind=kind,
        reason=f"reason {seq} ✓",
        attempts=seq % 5 + 1,
        first_failure_ns=1_700_000_000_000_000_000 + seq,
        written_ns=1_700_000_000_500_000_000 + seq,
        batch_seq=seq,
        entries=seq % 7 + 1,
        batch=batch,
    )


def write_segment(path: Path, records: list[DlqRecord]) -> list[int]:
    """A segment laid out by hand from the documented format; return each record's offset."""
    offsets, data = [], bytearray(file_header())
    for r in records:
        offsets.append(len(data))
        data += encode_record(r)
    path.write_bytes(bytes(data))
    return offsets


def read(path: Path) -> tuple[list[DlqRecord], list[Problem]]:
    problems: list[Problem] = []
    return [r for _, r in read_segment(path, problems)], problems


def read_all(directory: Path) -> list[DlqRecord]:
    return [r for path in segment_paths(directory) for _, r in read_segment(path)]


def dlq_config(tmp_path: Path, body: str = "") -> DlqConfig:
    text = f"""\
        sources: {{app: {{type: file, include: ['*.log'], max_line_bytes: 1KiB}}}}
        sinks: {{out: {{type: blackhole}}}}
        dispatcher: {{batch_max_bytes: 4KiB}}
        dlq: {{{body}}}
        """
    return config_from_yaml(textwrap.dedent(text), tmp_path).dlq


class Clock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def writers() -> Iterator[list[DlqWriter]]:
    """Writers to close at teardown (their segment fds)."""
    made: list[DlqWriter] = []
    yield made
    for writer in made:
        writer.close()


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every fd passed to os.fsync (the real one still runs)."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


# -- record format -----------------------------------------------------------------------


def test_records_round_trip_through_a_segment_with_their_offsets(tmp_path: Path) -> None:
    path = tmp_path / "0000000000000001.dlq"
    records = [record(1), record(2, size=0), record(3, size=50_000, kind="overflow")]
    offsets = write_segment(path, records)
    problems: list[Problem] = []
    assert list(read_segment(path, problems)) == list(zip(offsets, records, strict=True))
    assert problems == []
    assert offsets[0] == FILE_HEADER.size == len(file_header())
    assert path.read_bytes()[:8] == MAGIC


def test_encoded_record_is_marker_length_checksum_then_msgpack_body() -> None:
    r = record(9)
    data = encode_record(r)
    marker, length, _ = RECORD_HEADER.unpack_from(data)
    assert marker == 0x51444C4C and data[:4] == b"LLDQ"
    assert length == len(data) - RECORD_HEADER.size
    assert msgspec.msgpack.decode(data[RECORD_HEADER.size :], type=DlqRecord) == r


def test_file_without_the_segment_magic_is_reported_and_not_read(tmp_path: Path) -> None:
    path = tmp_path / "0000000000000001.dlq"
    write_segment(path, [record(1), record(2)])
    data = bytearray(path.read_bytes())
    data[:8] = b"LOGCAPXX"
    path.write_bytes(bytes(data))
    records, problems = read(path)
    assert records == []
    assert [(p.offset, "bad header" in p.what) for p in problems] == [(0, True)]


@pytest.mark.parametrize("content", ["empty", "short", "random", "header_then_random"])
def test_garbage_file_is_reported_as_a_problem_without_raising(
    tmp_path: Path, content: str
) -> None:
    rng = random.Random(content)
    noise = bytes(rng.randrange(256) for _ in range(20_000))
    data = {
        "empty": b"",
        "short": MAGIC[:5],
        "random": noise,
        "header_then_random": file_header() + noise,
    }[content]
    path = tmp_path / "0000000000000001.dlq"
    path.write_bytes(data)
    records, problems = read(path)
    assert records == []
    assert problems and all(p.path == path for p in problems)


def test_torn_last_record_is_reported_and_every_earlier_record_is_read(tmp_path: Path) -> None:
    path = tmp_path / "0000000000000001.dlq"
    records = [record(1), record(2), record(3, size=3000)]
    offsets = write_segment(path, records)
    os.truncate(path, path.stat().st_size - 3)  # a crash during the last append
    got, problems = read(path)
    assert got == records[:2]
    assert [(p.offset, p.what) for p in problems] == [(offsets[2], TORN)]


def test_file_ending_inside_a_record_header_is_reported_and_earlier_records_are_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "0000000000000001.dlq"
    records = [record(1), record(2), record(3)]
    offsets = write_segment(path, records)
    os.truncate(path, offsets[2] + 5)  # 5 of the 12 header bytes made it
    got, problems = read(path)
    assert got == records[:2]
    assert [(p.offset, p.what) for p in problems] == [(offsets[2], TORN)]


def test_damaged_record_in_the_middle_is_skipped_and_the_next_records_are_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "0000000000000001.dlq"
    records = [record(i, size=500) for i in range(1, 6)]
    offsets = write_segment(path, records)
    data = bytearray(path.read_bytes())
    data[offsets[2] + RECORD_HEADER.size + 200] ^= 0x40  # one bit in record 3's body
    path.write_bytes(bytes(data))
    got, problems = read(path)
    assert got == records[:2] + records[3:]
    assert [(p.offset, p.what) for p in problems] == [(offsets[2], DAMAGED)]


def test_record_with_a_damaged_length_in_the_middle_is_skipped_and_later_records_are_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "0000000000000001.dlq"
    records = [record(i, size=500) for i in range(1, 6)]
    offsets = write_segment(path, records)
    data = bytearray(path.read_bytes())
    data[offsets[2] + 6] ^= 0x01  # length of record 3 now runs 64 KiB past the file
    path.write_bytes(bytes(data))
    got, problems = read(path)
    assert got == records[:2] + records[3:]
    assert [p.offset for p in problems] == [offsets[2]]


# -- writer: segments and counts -----------------------------------------------------------


def test_writer_starts_a_new_segment_when_the_current_one_would_pass_segment_bytes(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    config = dlq_config(tmp_path, "segment_bytes: 64KiB")
    writer = DlqWriter(tmp_path / "dlq", config)
    writers.append(writer)
    records = [record(i, size=20_000) for i in range(7)]  # three fit in 64 KiB, four do not
    for r in records:
        writer.append(r)
    paths = segment_paths(tmp_path / "dlq")
    assert [p.name for p in paths] == [f"{n:016d}.dlq" for n in (1, 2, 3)]
    assert [len(read(p)[0]) for p in paths] == [3, 3, 1]
    assert all(p.stat().st_size <= config.segment_bytes for p in paths)
    assert read_all(tmp_path / "dlq") == records


def test_writer_counts_records_and_bytes_as_they_are_on_disk(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory = tmp_path / "dlq"
    writer = DlqWriter(directory, dlq_config(tmp_path, "segment_bytes: 64KiB"))
    writers.append(writer)
    assert (writer.total_records, writer.total_bytes) == (0, 0)
    for i in range(5):
        before = sum(p.stat().st_size for p in segment_paths(directory))
        r = record(i, size=25_000)
        size = writer.append(r)
        assert size == len(encode_record(r))
        grown = sum(p.stat().st_size for p in segment_paths(directory)) - before
        assert grown in (size, size + FILE_HEADER.size)  # + header when a segment starts
    on_disk = sum(p.stat().st_size for p in segment_paths(directory))
    assert (writer.total_records, writer.total_bytes) == (5, on_disk)
    reopened = DlqWriter(directory, dlq_config(tmp_path, "segment_bytes: 64KiB"))
    writers.append(reopened)
    assert (reopened.total_records, reopened.total_bytes) == (5, on_disk)


def test_new_writer_appends_to_the_last_segment_while_it_has_room(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory, config = tmp_path / "dlq", dlq_config(tmp_path, "segment_bytes: 64KiB")
    first = DlqWriter(directory, config)
    first.append(record(1, size=20_000))
    first.close()
    second = DlqWriter(directory, config)
    writers.append(second)
    second.append(record(2, size=20_000))
    assert [p.name for p in segment_paths(directory)] == ["0000000000000001.dlq"]
    assert [r.batch_seq for r in read_all(directory)] == [1, 2]
    assert second.total_records == 2


def test_new_writer_numbers_new_segments_after_the_newest_one(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory, config = tmp_path / "dlq", dlq_config(tmp_path, "segment_bytes: 64KiB")
    first = DlqWriter(directory, config)
    for i in range(4):  # segments 1 (three records) and 2 (one)
        first.append(record(i, size=20_000))
    first.close()
    for path in segment_paths(directory)[:1]:
        path.unlink()  # the oldest purged meanwhile: numbers still follow the newest
    second = DlqWriter(directory, config)
    writers.append(second)
    for i in range(4, 7):
        second.append(record(i, size=20_000))
    assert [p.name for p in segment_paths(directory)] == [
        "0000000000000002.dlq",
        "0000000000000003.dlq",
    ]
    assert [r.batch_seq for r in read_all(directory)] == [3, 4, 5, 6]


@pytest.mark.parametrize(
    "cut",
    [
        1000,  # inside the torn record's body
        7,  # inside its header
    ],
)
def test_record_appended_after_a_crash_tore_the_last_one_is_read(
    tmp_path: Path, writers: list[DlqWriter], cut: int
) -> None:
    directory, config = tmp_path / "dlq", dlq_config(tmp_path)
    first = DlqWriter(directory, config)
    first.append(record(1))
    first.append(record(2, size=5000))
    first.close()
    [path] = segment_paths(directory)
    size = path.stat().st_size
    os.truncate(path, size - len(encode_record(record(2, size=5000))) + cut)
    second = DlqWriter(directory, config)
    writers.append(second)
    second.append(record(3))
    second.close()
    assert [r.batch_seq for r in read_all(directory)] == [1, 3]
    assert DlqWriter(directory, config).total_records == 2


# -- writer: durability ----------------------------------------------------------------------


def test_fsync_always_syncs_every_record(
    tmp_path: Path, writers: list[DlqWriter], fsyncs: list[int]
) -> None:
    writer = DlqWriter(tmp_path / "dlq", dlq_config(tmp_path, "fsync: always"))
    writers.append(writer)
    writer.append(record(0))  # creates the segment (its header and directory are synced)
    fsyncs.clear()
    for i in range(1, 6):
        writer.append(record(i))
        assert len(fsyncs) == i
    writer.tick()
    assert len(fsyncs) == 5  # nothing left unsynced


def test_fsync_interval_syncs_on_tick_once_the_interval_has_passed(
    tmp_path: Path, writers: list[DlqWriter], fsyncs: list[int]
) -> None:
    clock = Clock()
    config = dlq_config(tmp_path, "fsync: interval, fsync_interval: 2s")
    writer = DlqWriter(tmp_path / "dlq", config, clock=clock)
    writers.append(writer)
    writer.append(record(0))
    fsyncs.clear()
    for i in range(1, 4):
        writer.append(record(i))
    assert fsyncs == []
    clock.now += 1.9
    writer.tick()
    assert fsyncs == []
    clock.now += 0.1
    writer.tick()
    assert len(fsyncs) == 1
    clock.now += 5.0
    writer.tick()
    assert len(fsyncs) == 1  # nothing appended since: nothing to sync
    # after a quiet spell the next record is synced at the next tick
    writer.append(record(4))
    writer.tick()
    assert len(fsyncs) == 2
    writer.append(record(5))
    clock.now += 1.0
    writer.tick()
    assert len(fsyncs) == 2
    clock.now += 1.0
    writer.tick()
    assert len(fsyncs) == 3


def test_fsync_never_leaves_appended_records_to_the_os(
    tmp_path: Path, writers: list[DlqWriter], fsyncs: list[int]
) -> None:
    clock = Clock()
    writer = DlqWriter(tmp_path / "dlq", dlq_config(tmp_path, "fsync: never"), clock=clock)
    writers.append(writer)
    writer.append(record(0))
    fsyncs.clear()
    for i in range(1, 20):
        writer.append(record(i))
        clock.now += 10.0
        writer.tick()
    assert fsyncs == []
    assert len(read_all(tmp_path / "dlq")) == 20  # in the kernel all the same


# -- writer: limits ----------------------------------------------------------------------


def test_segments_past_max_age_are_deleted_and_their_records_counted(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    clock = Clock()
    directory = tmp_path / "dlq"
    config = dlq_config(tmp_path, "max_age: 10s, segment_bytes: 64KiB")
    writer = DlqWriter(directory, config, clock=clock)
    writers.append(writer)
    writer.append(record(1, size=30_000))
    writer.append(record(2, size=30_000))  # segment 1: its newest record is at t
    clock.now += 5.0
    writer.append(record(3, size=30_000))  # segment 2 (rolled over): newest at t+5
    [old, new] = segment_paths(directory)
    clock.now += 5.0
    writer.tick()
    assert old.exists() and writer.expired_records == 0  # exactly max_age is not past it
    clock.now += 0.5
    writer.tick()
    assert not old.exists() and new.exists()
    assert writer.expired_records == 2
    assert [r.batch_seq for r in read_all(directory)] == [3]
    assert (writer.total_records, writer.total_bytes) == (1, new.stat().st_size)


def test_full_dlq_with_block_raises_dlq_full_and_writes_nothing(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory = tmp_path / "dlq"
    config = dlq_config(tmp_path, "max_bytes: 128KiB, segment_bytes: 64KiB, when_full: block")
    writer = DlqWriter(directory, config)
    writers.append(writer)
    for i in range(3):
        writer.append(record(i, size=40_000))
    before = {p.name: p.read_bytes() for p in segment_paths(directory)}
    with pytest.raises(DlqFull):
        writer.append(record(3, size=40_000))
    assert {p.name: p.read_bytes() for p in segment_paths(directory)} == before
    assert writer.total_records == 3 and writer.dropped_records == 0
    writer.append(record(4, size=100))  # what still fits is written
    assert [r.batch_seq for r in read_all(directory)] == [0, 1, 2, 4]


def test_full_dlq_with_drop_oldest_deletes_the_oldest_segments_and_writes_the_record(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory = tmp_path / "dlq"
    body = "max_bytes: 128KiB, segment_bytes: 64KiB, when_full: drop_oldest"
    writer = DlqWriter(directory, dlq_config(tmp_path, body))
    writers.append(writer)
    for i in range(3):  # one record per segment
        writer.append(record(i, size=40_000))
    writer.append(record(3, size=40_000))
    assert writer.dropped_records == 1
    assert [r.batch_seq for r in read_all(directory)] == [1, 2, 3]
    writer.append(record(4, size=90_000))  # needs two segments' room
    assert writer.dropped_records == 3
    assert [r.batch_seq for r in read_all(directory)] == [3, 4]
    on_disk = sum(p.stat().st_size for p in segment_paths(directory))
    assert (writer.total_records, writer.total_bytes) == (2, on_disk)
    assert on_disk <= 128 * 1024


def test_drop_oldest_also_drops_when_the_whole_dlq_is_one_segment(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory = tmp_path / "dlq"
    body = "max_bytes: 96KiB, segment_bytes: 96KiB, when_full: drop_oldest"
    writer = DlqWriter(directory, dlq_config(tmp_path, body))
    writers.append(writer)
    writer.append(record(1, size=60_000))
    writer.append(record(2, size=60_000))
    assert writer.dropped_records == 1
    assert [r.batch_seq for r in read_all(directory)] == [2]
    # the dropped segment's name is not reused: a replay marking it would mark the new one
    assert [p.name for p in segment_paths(directory)] == ["0000000000000002.dlq"]


def test_drop_oldest_deletes_nothing_for_a_record_larger_than_the_whole_dlq(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory = tmp_path / "dlq"
    body = "max_bytes: 128KiB, segment_bytes: 64KiB, when_full: drop_oldest"
    writer = DlqWriter(directory, dlq_config(tmp_path, body))
    writers.append(writer)
    for i in range(3):
        writer.append(record(i, size=40_000))
    with pytest.raises(DlqFull):
        writer.append(record(3, size=140_000))
    assert [r.batch_seq for r in read_all(directory)] == [0, 1, 2]
    assert writer.dropped_records == 0


@pytest.mark.parametrize("how", ["drop_oldest", "max_age"])
def test_replayed_sidecar_is_deleted_with_its_segment(
    tmp_path: Path, writers: list[DlqWriter], how: str
) -> None:
    clock = Clock()
    directory = tmp_path / "dlq"
    body = "max_bytes: 128KiB, segment_bytes: 64KiB, max_age: 1h, when_full: drop_oldest"
    writer = DlqWriter(directory, dlq_config(tmp_path, body), clock=clock)
    writers.append(writer)
    for i in range(3):
        writer.append(record(i, size=40_000))
        clock.now += 1000.0
    paths = segment_paths(directory)
    sidecars = [p.with_name(p.name + REPLAYED_SUFFIX) for p in paths]
    for sidecar in sidecars:
        sidecar.write_bytes(bytes(8))
    if how == "drop_oldest":
        writer.append(record(3, size=40_000))
    else:
        clock.now += 601.0  # only the first segment's newest record is past max_age
        writer.tick()
    assert not paths[0].exists() and not sidecars[0].exists()
    assert all(p.exists() for p in paths[1:]) and all(s.exists() for s in sidecars[1:])
