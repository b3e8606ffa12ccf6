"""The DLQ reader API (dlq/reader.py): what a reprocessing loop and ``logcap dlq`` use.

Covers: ``scan`` yields every record oldest first with its position, kind and replayed
mark; ``after=`` resumes past a position, also across segments; ``read_at`` re-reads a
record by position and answers None once its segment is gone; ``mark`` survives a new
reader and reports a deleted segment; problems (a stray name, a damaged record) are
collected, never raised; a segment deleted during a scan is skipped; the writer deletes
the segments whose records were all replayed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from logcap.dlq.reader import STRAY, StoredRecord, mark, read_at, scan
from logcap.dlq.record import DAMAGED, RECORD_HEADER, Problem
from logcap.dlq.writer import DlqWriter, segment_paths
from tests.test_dlq import dlq_config, record

KINDS = ["permanent", "exhausted", "overflow"]


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    """A DLQ of 7 records of 30 KB, two to a 64 KiB segment, kinds in turn."""
    path = tmp_path / "dlq"
    writer = DlqWriter(path, dlq_config(tmp_path, "segment_bytes: 64KiB"))
    for seq in range(7):
        writer.append(record(seq, size=30_000, kind=KINDS[seq % 3]))
    writer.close()
    assert len(segment_paths(path)) == 4
    yield path


def _seqs(found: list[StoredRecord]) -> list[int]:
    return [f.record.batch_seq for f in found]


def test_scan_yields_every_record_oldest_first_with_position_kind_and_mark(
    directory: Path,
) -> None:
    found = list(scan(directory))
    assert _seqs(found) == list(range(7))
    assert [f.kind for f in found] == [KINDS[seq % 3] for seq in range(7)]
    assert [f.position for f in found] == sorted(f.position for f in found)
    assert len({f.position for f in found}) == 7
    assert not any(f.replayed for f in found)


def test_scan_after_a_position_resumes_with_the_next_record(directory: Path) -> None:
    found = list(scan(directory))
    for index, stored in enumerate(found):
        assert _seqs(list(scan(directory, after=stored.position))) == list(range(index + 1, 7))


def test_read_at_re_reads_a_record_and_answers_none_once_its_segment_is_gone(
    directory: Path,
) -> None:
    found = list(scan(directory))
    assert [read_at(directory, f.position) for f in found] == found
    assert read_at(directory, (found[0].position[0], found[0].position[1] + 1)) is None
    found[0].segment.unlink()
    assert read_at(directory, found[0].position) is None


def test_a_mark_is_seen_by_every_later_reader_and_a_deleted_segment_is_reported(
    directory: Path,
) -> None:
    found = list(scan(directory))
    assert mark(found[2]) and mark(found[5])
    again = list(scan(directory))
    assert [f.record.batch_seq for f in again if f.replayed] == [2, 5]
    stored = read_at(directory, found[5].position)
    assert stored is not None and stored.replayed
    found[0].segment.unlink()
    assert not mark(found[0])


def test_problems_are_collected_and_the_other_records_still_read(directory: Path) -> None:
    stray = directory / "notes.dlq"
    stray.write_text("not a segment\n")
    [first, *_] = list(scan(directory))
    data = bytearray(first.segment.read_bytes())
    data[first.offset + RECORD_HEADER.size + 10] ^= 0x01
    first.segment.write_bytes(bytes(data))
    problems: list[Problem] = []
    assert _seqs(list(scan(directory, problems))) == list(range(1, 7))
    assert [(p.path, p.what) for p in problems] == [
        (stray, STRAY),
        (first.segment, DAMAGED),
    ]


def test_a_segment_deleted_during_a_scan_is_skipped(directory: Path) -> None:
    segments = segment_paths(directory)
    seen = []
    for stored in scan(directory):
        seen.append(stored.record.batch_seq)
        if stored.segment == segments[0]:
            segments[1].unlink(missing_ok=True)  # max_age or drop_oldest meanwhile
    assert seen == [0, 1, 4, 5, 6]


def test_writer_deletes_the_segments_whose_records_were_all_replayed(
    tmp_path: Path, directory: Path
) -> None:
    foreign = directory / "0000000000000000.dlq"
    foreign.write_bytes(b"LOGCAPXX" + bytes(8))  # unreadable: never counted as replayed
    writer = DlqWriter(directory, dlq_config(tmp_path, "segment_bytes: 64KiB"))
    try:
        found = list(scan(directory))
        for stored in found:
            if stored.record.batch_seq != 3:  # segment 2 keeps one pending record
                assert mark(stored)
        assert writer.delete_replayed() == 5
        assert [p.name for p in segment_paths(directory)] == [foreign.name, "0000000000000002.dlq"]
        assert _seqs([f for f in scan(directory) if not f.replayed]) == [3]
        assert writer.total_records == 2  # the pending one and the replayed one beside it
        writer.append(record(7, size=30_000))  # no room in segment 2: a new number
        assert segment_paths(directory)[-1].name == "0000000000000005.dlq"
    finally:
        writer.close()
