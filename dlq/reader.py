"""Reading the dead letter queue: every record by position, with its replayed mark.

For ``logcap dlq`` and for anything that re-offers records to their sink::

    for stored in scan(directory, problems=problems):
        if stored.kind != "permanent" and not stored.replayed:
            deliver(stored.record.batch)
            mark(stored)

A position is ``(segment number, byte offset)``: it orders records oldest first and stays
valid while the segment exists (segments are append-only and numbers never reused), so
a caller may keep positions instead of records, resume a scan after one
(``after=position``) and re-read one record (:func:`read_at`). Problems met on the way
(a torn or damaged record, a file that is not a segment, a stray name) are added to
``problems``; none of them raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from logcap.dlq.marks import mark_replayed, replayed
from logcap.dlq.record import DlqRecord, Problem, read_record_at, read_segment
from logcap.dlq.segments import segment_name, segment_number, segment_paths

__all__ = ["Position", "StoredRecord", "mark", "read_at", "scan", "segment_records"]

Position = tuple[int, int]  # (segment number, byte offset of the record)
STRAY = "not a segment name; ignored"


@dataclass(frozen=True)
class StoredRecord:
    """One record, where it is, and whether it was replayed."""

    segment: Path
    offset: int
    record: DlqRecord
    replayed: bool

    @property
    def kind(self) -> str:
        """Why it is in the DLQ: ``permanent``, ``exhausted`` or ``overflow``."""
        return self.record.kind

    @property
    def position(self) -> Position:
        """``(segment number, offset)``: orders records oldest first."""
        number = segment_number(self.segment)
        assert number is not None
        return number, self.offset


def segment_records(
    segment: Path, problems: list[Problem] | None = None, start: int | None = None
) -> Iterator[StoredRecord]:
    """The intact records of one segment (from the record at ``start``)."""
    done = replayed(segment)
    for offset, record in read_segment(segment, problems, start):
        yield StoredRecord(segment, offset, record, offset in done)


def scan(
    directory: Path,
    problems: list[Problem] | None = None,
    after: Position | None = None,
) -> Iterator[StoredRecord]:
    """Every intact record of every segment in ``directory``, oldest first (only those
    past ``after``, if given). Segments deleted meanwhile are skipped."""
    strays: list[Path] = []
    segments = segment_paths(directory, strays)
    if problems is not None:
        problems.extend(Problem(stray, 0, STRAY) for stray in strays)
    for segment in segments:
        number = segment_number(segment)
        assert number is not None
        if after is not None and number < after[0]:
            continue
        start = after[1] if after is not None and number == after[0] else None
        try:
            for stored in segment_records(segment, problems, start):
                if start is None or stored.offset > start:
                    yield stored
        except FileNotFoundError:  # deleted by max_age, drop_oldest or purge
            continue


def read_at(directory: Path, position: Position) -> StoredRecord | None:
    """The record at ``position``; None if its segment was deleted or nothing intact is
    there."""
    segment = directory / segment_name(position[0])
    try:
        record = read_record_at(segment, position[1])
        done = replayed(segment)
    except FileNotFoundError:
        return None
    if record is None:
        return None
    return StoredRecord(segment, position[1], record, position[1] in done)


def mark(stored: StoredRecord) -> bool:
    """Record durably that ``stored`` was delivered; False if its segment is gone."""
    return mark_replayed(stored.segment, stored.offset)
