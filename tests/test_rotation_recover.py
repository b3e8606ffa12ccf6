"""Checkpointed files the patterns no longer find, in process (capture/file/recover.py):
a file renamed out of the patterns while the collector was down is read from its
checkpoint to its end; entries of files gone for good are forgotten, and only those.

The agent-level scenarios (stop, kill -9, logrotate while down) are in
tests/test_rotation_while_down.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _component_helpers import Record, RingFactory, config_from_yaml, drain_records, ring_fixture

from logcap.capture._entries import FORGET
from logcap.capture.file.collector import RETIRE_GRACE, FileCollector
from logcap.capture.file.discovery import FileFinder
from logcap.capture.file.identity import fingerprint
from logcap.dispatch.checkpoint import FilePosition
from logcap.metrics import NullBlock
from logcap.ringbuf import Consumer, Producer, SleepWait


@pytest.fixture
def rings() -> Iterator[RingFactory]:
    yield from ring_fixture()


class Harness:
    """A collector of source ``app`` over ``*.log`` in ``tmp_path``, on a real ring, with
    a clock the test moves and the checkpoint entries given."""

    def __init__(self, tmp_path: Path, rings: RingFactory, include: str = "*.log") -> None:
        text = (
            f"sources:\n  app: {{type: file, include: ['{include}']}}\n"
            "sinks:\n  out: {type: blackhole}\n"
        )
        self.config = config_from_yaml(text, tmp_path)
        ring = rings.create(16, self.config.buffer.collector_slot_bytes, 1, "src")
        self.producer = Producer(ring, wait=SleepWait())
        self.consumer = Consumer(ring, 0)
        self.now = 0.0
        self.collector: FileCollector | None = None

    def start(self, *entries: FilePosition) -> FileCollector:
        self.collector = FileCollector(
            "app",
            self.config.sources["app"],
            self.producer,
            NullBlock(),
            {(p.dev, p.ino): p for p in entries},
            lambda: False,
            clock=lambda: self.now,
        )
        self.collector.rescan(initial=True)
        return self.collector

    def poll(self) -> list[Record]:
        assert self.collector is not None
        while self.collector.poll_once():
            pass
        return drain_records(self.consumer)

    def close(self) -> None:
        if self.collector is not None:
            for tailer in (*self.collector.tailers.values(), *self.collector.retiring):
                tailer.close()


@pytest.fixture
def harness(tmp_path: Path, rings: RingFactory) -> Iterator[Harness]:
    h = Harness(tmp_path, rings)
    yield h
    h.close()


def checkpointed(path: Path, offset: int) -> FilePosition:
    """The entry a run that had read ``path`` up to ``offset`` would have left."""
    st = path.stat()
    fd = os.open(path, os.O_RDONLY)
    try:
        fp = fingerprint(fd, 256)
    finally:
        os.close(fd)
    return FilePosition("app", str(path), st.st_dev, st.st_ino, offset, fp)


def forgotten(records: list[Record]) -> list[tuple[int, int]]:
    return [(r.header.dev, r.header.ino) for r in records if r.header.end == FORGET]


def test_file_renamed_out_of_the_patterns_while_down_is_read_from_its_checkpoint_to_its_end(
    tmp_path: Path, harness: Harness
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"read 1\nread 2\n")
    saved = checkpointed(log, 14)
    with open(log, "ab") as f:
        f.write(b"unread 3\nunread 4\n")
    os.rename(log, tmp_path / "app.log.1")  # logrotate while the collector was down
    log.write_bytes(b"new 1\n")
    collector = harness.start(saved)
    records = harness.poll()
    by_ino: dict[int, bytes] = {}
    for r in records:
        by_ino[r.header.ino] = by_ino.get(r.header.ino, b"") + r.data
    assert by_ino == {saved.ino: b"unread 3\nunread 4\n", log.stat().st_ino: b"new 1\n"}
    old = [r for r in records if r.header.ino == saved.ino]
    # read under the name it had: the path label and the checkpointed path stay app.log
    assert old[0].header.start == 14 and old[0].path == str(log).encode()
    assert forgotten(records) == []
    # retired like a file rotated away while running: read on during the grace, then closed
    assert [t.ino for t in collector.retiring] == [saved.ino]
    with open(tmp_path / "app.log.1", "ab") as f:
        f.write(b"late 5\n")
    assert b"".join(r.data for r in harness.poll()) == b"late 5\n"
    harness.now = RETIRE_GRACE
    assert harness.poll() == []
    assert collector.retiring == []


def test_renamed_file_with_an_unterminated_last_line_is_read_whole_then_closed(
    tmp_path: Path, harness: Harness
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"read 1\nunread 2\nkilled mid-wri")
    saved = checkpointed(log, 7)
    os.rename(log, tmp_path / "app.log-20260101")
    collector = harness.start(saved)
    assert b"".join(r.data for r in harness.poll()) == b"unread 2\n"
    harness.now = 10.0  # past the time an unterminated last line may wait for its newline
    collector.poll_once()
    collector.poll_once()
    assert b"".join(r.data for r in harness.poll()) == b"killed mid-wri\n"
    assert collector.retiring == []


def test_rotated_file_read_to_its_end_is_neither_reopened_nor_forgotten(
    tmp_path: Path, harness: Harness
) -> None:
    rotated = tmp_path / "app.log.1"
    rotated.write_bytes(b"all read\n")
    collector = harness.start(checkpointed(rotated, 9))
    assert harness.poll() == []
    assert collector.retiring == [] and collector.tailers == {}


def test_entries_of_gone_files_are_forgotten_and_no_other(tmp_path: Path, harness: Harness) -> None:
    here = tmp_path / "app.log.1"
    here.write_bytes(b"x\n")
    dev = here.stat().st_dev
    deleted = tmp_path / "deleted.log"
    deleted.write_bytes(b"gone soon\n")
    gone = checkpointed(deleted, 5)
    deleted.unlink()
    # an inode now holding another file (its first bytes differ): the old file is gone
    reused = FilePosition("app", str(tmp_path / "old.log"), dev, here.stat().st_ino, 3, 123 << 32)
    unmounted = FilePosition("app", str(tmp_path / "not-mounted" / "a.log"), dev, 1, 3, 7 << 32)
    elsewhere = FilePosition("app", str(tmp_path / "b.log"), dev + 1, 2, 3, 7 << 32)
    harness.start(gone, reused, unmounted, elsewhere)
    records = harness.poll()
    assert sorted(forgotten(records)) == sorted([(gone.dev, gone.ino), (dev, reused.ino)])
    assert all(r.data == b"" for r in records)
    assert harness.poll() == []  # once


def test_entry_of_a_path_no_longer_in_the_patterns_is_not_read(
    tmp_path: Path, rings: RingFactory
) -> None:
    other = tmp_path / "other.txt"
    other.write_bytes(b"read\nnot for this source any more\n")
    saved = checkpointed(other, 5)
    h = Harness(tmp_path, rings)  # patterns: *.log
    try:
        h.start(saved)
        assert h.poll() == []
    finally:
        h.close()


def test_deleted_file_read_to_its_end_has_its_checkpoint_entry_forgotten_when_closed(
    tmp_path: Path, harness: Harness
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"1\n")
    collector = harness.start()
    assert b"".join(r.data for r in harness.poll()) == b"1\n"
    ino = log.stat().st_ino
    log.unlink()
    collector.rescan()
    assert harness.poll() == []  # retired, read to its end, within the grace
    harness.now = RETIRE_GRACE
    assert forgotten(harness.poll()) == [(log.parent.stat().st_dev, ino)]
    assert collector.retiring == []


def test_renamed_away_file_that_still_exists_keeps_its_entry_when_closed(
    tmp_path: Path, harness: Harness
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"1\n")
    collector = harness.start()
    harness.poll()
    os.rename(log, tmp_path / "app.log.1")
    collector.rescan()
    harness.now = RETIRE_GRACE
    assert forgotten(harness.poll()) == []
    assert collector.retiring == []


@pytest.mark.parametrize(
    ("pattern", "path", "wanted"),
    [
        ("/logs/*.log", "/logs/app.log", True),
        ("/logs/*.log", "/logs/app.log.1", False),
        ("/logs/*.log", "/logs/sub/app.log", False),
        ("/logs/**/*.log", "/logs/app.log", True),
        ("/logs/**/*.log", "/logs/a/b/app.log", True),
        ("/logs/**/*.log", "/other/app.log", False),
        ("/logs/app-*/**", "/logs/app-1/x/y.txt", True),
    ],
)
def test_wanted_matches_paths_as_the_glob_would(pattern: str, path: str, wanted: bool) -> None:
    assert FileFinder([pattern], []).wanted(path) is wanted
    assert FileFinder([pattern], [path]).wanted(path) is False
