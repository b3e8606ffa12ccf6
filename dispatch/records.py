"""A collector record → the runs of entries it holds, and the position it completes.

Two kinds of record (capture/_record.py): a block of whole lines read from a file, and
(``FLAG_ENTRIES``) runs of structured entries from HTTP ingest or Docker. Both become
:class:`Piece` lists, entries sharing source and labels, which the dispatcher batches the
same way. Reading a record only decodes it; nothing is published here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from logcap.capture._entries import decode_runs
from logcap.capture._record import FLAG_ENTRIES, FLAG_TRUNCATED, HEADER_SIZE, BlockHeader
from logcap.capture.file.multiline import MultilineRule
from logcap.capture.labels import PathLabels, file_labels
from logcap.dispatch.checkpoint import FilePosition
from logcap.dispatch.encode import entry_prefix, entry_rest
from logcap.dispatch.lines import block_messages
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Consumer

PATHS_REMEMBERED = 4096  # labels kept per source, by path: computed once, not per block


@dataclass
class SourceInput:
    """One collector's ring as the dispatcher sees it."""

    name: str
    consumer: Consumer
    counters: CounterBlock
    max_line_bytes: int
    host: str
    skip_long_lines: bool = False  # long_lines: skip drops them instead of cutting them
    encoding: str = "utf-8"
    multiline: MultilineRule | None = None  # blocks hold whole events; join their lines
    static_labels: dict[str, str] = field(default_factory=dict)  # the source's `labels`
    path_labels: PathLabels | None = None  # a file source's `path_labels`
    byte_positions: bool = False  # positions are byte offsets (files): checkpoint lag counts
    keep_host: bool = False  # an entry's own host label stays (kafka, decoding logcap)
    # sequence of the newest record fully placed into a published batch
    releasable: int = -1
    labels_by_path: dict[bytes, tuple[str, dict[str, str]]] = field(default_factory=dict)


class Piece(NamedTuple):
    """Entries that share source and labels, in order, not yet encoded."""

    source: str
    labels: dict[str, str]
    head: bytes  # lines: everything before the message (entry_prefix); else entry_rest
    timestamp_ns: int
    messages: list[str]
    stamps: list[int]  # each entry's own event time; empty for lines (all timestamp_ns)
    levels: list[str | None] | None = None  # from pipelines: each entry's level
    fields: list[bytes | None] | None = None  # from pipelines: each entry's fields (JSON)
    skip: int = 0  # sinks whose `when` these entries fail, by bit (dispatch/route.py)
    level: str | None = None  # the level every entry of the piece has (dispatch/route.py)
    keys: dict[str, str] = {}  # fields sinks' templates name, shared by every entry (same)
    read_ns: int = 0  # when the collector read them (wall ns): latency counts from it


def cut(piece: Piece, start: int, end: int) -> Piece:
    """The entries ``start:end`` of ``piece`` (the piece itself if that is all of it),
    every per-entry list cut alike."""
    if start == 0 and end >= len(piece.messages):
        return piece
    stamps = piece.stamps[start:end]
    return piece._replace(
        timestamp_ns=stamps[0] if stamps else piece.timestamp_ns,
        messages=piece.messages[start:end],
        stamps=stamps,
        levels=None if piece.levels is None else piece.levels[start:end],
        fields=None if piece.fields is None else piece.fields[start:end],
    )


def read_record(
    source: SourceInput, header: BlockHeader, view: memoryview, counters: CounterBlock
) -> tuple[list[Piece], FilePosition | None]:
    """The pieces of one record and the position it completes (counted on the way)."""
    if header.flags & FLAG_ENTRIES:
        return _entries(source, header, view, counters)
    return _lines(source, header, view, counters)


def _lines(
    source: SourceInput, header: BlockHeader, view: memoryview, counters: CounterBlock
) -> tuple[list[Piece], FilePosition]:
    path_end = HEADER_SIZE + header.path_len
    path_bytes = bytes(view[HEADER_SIZE:path_end])
    labelled = source.labels_by_path.get(path_bytes)
    if labelled is None:
        # JSON and msgpack hold valid UTF-8 only: a file name that is not UTF-8 (an
        # old Latin-1 name) is shown and checkpointed with U+FFFD for its bad bytes.
        path = path_bytes.decode("utf-8", "replace")
        labelled = (path, file_labels(source.host, source.static_labels, source.path_labels, path))
        if len(source.labels_by_path) >= PATHS_REMEMBERED:  # dated names come and go
            source.labels_by_path.clear()
        source.labels_by_path[path_bytes] = labelled
    path, labels = labelled
    lines, overlong = block_messages(
        view[path_end : path_end + header.data_len],
        header.start == 0,
        source.encoding,
        source.multiline,
        source.max_line_bytes,
        source.skip_long_lines,
    )
    if header.flags & FLAG_TRUNCATED:
        # one line the collector already cut or dropped (and counted here once),
        # perhaps cut again above only to drop a character its byte cut had split
        overlong = 1
    if overlong:
        counter = Counter.LINES_SKIPPED if source.skip_long_lines else Counter.LINES_TRUNCATED
        source.counters.add(counter, overlong)
    # the source's entries read (a line long_lines: skip dropped among them) and sent on;
    # a file source with pipelines counts what it read itself (capture/file/entries.py)
    source.counters.add(Counter.EVENTS_IN, len(lines) + (overlong if source.skip_long_lines else 0))
    source.counters.add(Counter.EVENTS_OUT, len(lines))
    counters.add(Counter.EVENTS_IN, len(lines))
    counters.add(Counter.BYTES_IN, header.data_len)
    position = FilePosition(
        source.name, path, header.dev, header.ino, header.end, header.fingerprint
    )
    if not lines:  # e.g. one skipped line: nothing to send, a position to checkpoint
        return [], position
    prefix = entry_prefix(source.name, labels, header.read_ns)
    piece = Piece(source.name, labels, prefix, header.read_ns, lines, [], read_ns=header.read_ns)
    return [piece], position


def _entries(
    source: SourceInput, header: BlockHeader, view: memoryview, counters: CounterBlock
) -> tuple[list[Piece], FilePosition | None]:
    """Structured entries: runs that share labels, each entry with its own event time."""
    path_end = HEADER_SIZE + header.path_len
    runs = decode_runs(view[path_end : path_end + header.data_len])
    position = None
    if header.ino:  # a resumable input: its position is checkpointed like a file's
        path = bytes(view[HEADER_SIZE:path_end]).decode("utf-8", "replace")
        position = FilePosition(
            source.name, path, header.dev, header.ino, header.end, header.fingerprint
        )
    elif header.end > 0:  # the last record of an HTTP request: acknowledge it once safe
        position = FilePosition(source.name, "", 0, 0, header.end)
    pieces = []
    total = 0
    for run in runs:
        stamps, messages = run.stamps, run.messages
        if len(stamps) != len(messages) or any(
            extra is not None and len(extra) != len(messages) for extra in (run.levels, run.fields)
        ):
            raise ValueError(f"{len(stamps)} timestamps for {len(messages)} entries")
        if not messages:
            continue
        if source.keep_host:  # entries another agent shipped: its host is theirs
            merged = {"host": source.host, **run.labels, **source.static_labels}
        else:
            merged = {**run.labels, **source.static_labels, "host": source.host}
        rest = entry_rest(source.name, merged, header.read_ns)
        piece = Piece(
            source.name, merged, rest, stamps[0], messages, stamps, run.levels, run.fields
        )
        pieces.append(piece._replace(read_ns=header.read_ns))
        total += len(messages)
    source.counters.add(Counter.EVENTS_OUT, total)
    counters.add(Counter.EVENTS_IN, total)
    counters.add(Counter.BYTES_IN, header.data_len)
    return pieces, position
