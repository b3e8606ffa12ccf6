"""The file source (capture/file/): FileTailer publishes whole lines only, FileFinder and
fixed_root decide which files are read, FileCollector discovers, resumes and rotates.

Everything runs in-process against real files in tmp_path and a real collector ring; the
test reads the ring with a Consumer, as the dispatcher would.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _component_helpers import Record, RingFactory, config_from_yaml, drain_records, ring_fixture

from logcap.capture._record import FLAG_TRUNCATED
from logcap.capture.file.collector import RETIRE_GRACE, FileCollector
from logcap.capture.file.config import FileSourceConfig
from logcap.capture.file.discovery import FileFinder, fixed_root
from logcap.capture.file.started import mark_started
from logcap.capture.file.tailer import FileTailer
from logcap.config import Config
from logcap.dispatch.checkpoint import FilePosition
from logcap.metrics import Counter, NullBlock
from logcap.ringbuf import Consumer, Producer, Ring, SleepWait

DEADLINE = 20.0  # generous: only reached when something is broken


@pytest.fixture
def rings() -> Iterator[RingFactory]:
    yield from ring_fixture()


def source_config(tmp_path: Path, body: str, buffer: str = "") -> Config:
    """A config whose only source ``app`` is a file source with ``body`` (YAML lines)."""
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    text = f"sources:\n  app:\n    type: file\n{indented}\nsinks:\n  out: {{type: blackhole}}\n"
    if buffer:
        text += f"buffer: {buffer}\n"
    return config_from_yaml(text, tmp_path)


class Wiring:
    """A collector ring with the producer a tailer writes to and the consumer we read with."""

    def __init__(self, rings: RingFactory, config: Config, slots: int = 16) -> None:
        self.config = config
        self.source: FileSourceConfig = config.sources["app"]
        self.ring: Ring = rings.create(slots, config.buffer.collector_slot_bytes, 1, "src")
        self.producer = Producer(self.ring, wait=SleepWait())
        self.consumer = Consumer(self.ring, 0)
        self.counters = NullBlock()

    def tailer(self, path: Path, position: int = 0) -> FileTailer:
        return FileTailer(str(path), position)

    def read(self, tailer: FileTailer) -> bool:
        return bool(tailer.read_block(self.producer, self.source.max_line_bytes, self.counters))

    def drain(self) -> list[Record]:
        return drain_records(self.consumer)

    def collector(
        self,
        checkpoints: dict[str, FilePosition] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> FileCollector:
        return FileCollector(
            "app", self.source, self.producer, self.counters, checkpoints or {}, should_stop
        )


def close_tailers(collector: FileCollector) -> None:
    for tailer in (*collector.tailers.values(), *collector.retiring):
        tailer.close()


def data_by_path(records: list[Record]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for record in records:
        path = os.fsdecode(record.path)
        out[path] = out.get(path, b"") + record.data
    return out


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


# -- FileTailer ----------------------------------------------------------------------


def test_partial_last_line_is_held_until_its_newline_arrives(
    tmp_path: Path, rings: RingFactory
) -> None:
    wiring = Wiring(rings, source_config(tmp_path, "include: ['*.log']"))
    log = tmp_path / "app.log"
    log.write_bytes(b"one\ntwo\nthr")
    tailer = wiring.tailer(log)

    assert wiring.read(tailer)
    first = wiring.drain()
    assert [r.data for r in first] == [b"one\ntwo\n"]
    assert (first[0].header.start, first[0].header.end) == (0, 8)
    assert tailer.position == 8

    # the unfinished line is neither published nor skipped while it grows
    assert not wiring.read(tailer)
    append(log, b"ee and")
    assert not wiring.read(tailer)
    assert wiring.drain() == []
    assert tailer.position == 8

    append(log, b" more\nfour\n")
    assert wiring.read(tailer)
    second = wiring.drain()
    assert [r.data for r in second] == [b"three and more\nfour\n"]
    assert second[0].header.start == 8
    assert wiring.counters.get(Counter.BYTES_IN) == log.stat().st_size
    tailer.close()


def test_blocks_cut_at_slot_size_hold_whole_lines_only(tmp_path: Path, rings: RingFactory) -> None:
    wiring = Wiring(
        rings,
        source_config(
            tmp_path,
            "include: ['*.log']\nmax_line_bytes: 2000",
            buffer="{collector_slot_bytes: 8KiB}",
        ),
    )
    log = tmp_path / "app.log"
    # lines of varied lengths so that slot-sized reads end in the middle of a line
    content = b"".join(b"%05d " % i + b"z" * (i * 37 % 1500) + b"\n" for i in range(300))
    log.write_bytes(content)
    tailer = wiring.tailer(log)

    records: list[Record] = []
    while wiring.read(tailer):
        records += wiring.drain()

    assert len(records) > 10
    assert all(r.data.endswith(b"\n") for r in records)
    assert b"".join(r.data for r in records) == content
    # the offsets chain: every record starts where the previous one ended
    assert [r.header.start for r in records[1:]] == [r.header.end for r in records[:-1]]
    assert all(r.header.flags == 0 for r in records)
    tailer.close()


def test_overlong_line_is_truncated_flagged_and_following_lines_are_intact(
    tmp_path: Path, rings: RingFactory
) -> None:
    wiring = Wiring(
        rings,
        source_config(
            tmp_path,
            "include: ['*.log']\nmax_line_bytes: 1000",
            buffer="{collector_slot_bytes: 8KiB}",
        ),
    )
    log = tmp_path / "app.log"
    long_line = bytes(range(33, 127)) * 300  # 28200 bytes: larger than a slot
    log.write_bytes(b"before\n" + long_line + b"\nafter 1\nafter 2\n")
    tailer = wiring.tailer(log)

    records: list[Record] = []
    while wiring.read(tailer):
        records += wiring.drain()

    assert [r.data for r in records] == [
        b"before\n",
        long_line[:1000] + b"\n",
        b"after 1\nafter 2\n",
    ]
    cut = records[1].header
    assert cut.flags & FLAG_TRUNCATED
    # the record says how much of the file it consumed, skipped tail included
    assert (cut.start, cut.end) == (7, 7 + len(long_line) + 1)
    assert records[0].header.flags == records[2].header.flags == 0
    assert tailer.position == log.stat().st_size
    assert wiring.counters.get(Counter.BYTES_IN) == log.stat().st_size
    tailer.close()


def test_overlong_partial_line_shorter_than_a_slot_waits_for_its_newline(
    tmp_path: Path, rings: RingFactory
) -> None:
    wiring = Wiring(
        rings,
        source_config(
            tmp_path,
            "include: ['*.log']\nmax_line_bytes: 100",
            buffer="{collector_slot_bytes: 8KiB}",
        ),
    )
    log = tmp_path / "app.log"
    log.write_bytes(b"q" * 500)  # longer than max_line_bytes, fits a slot, no newline yet
    tailer = wiring.tailer(log)
    assert not wiring.read(tailer)
    append(log, b"q" * 500 + b"\nnext\n")
    records: list[Record] = []
    while wiring.read(tailer):
        records += wiring.drain()
    assert [r.data for r in records] == [b"q" * 100 + b"\n", b"next\n"]
    assert records[0].header.flags & FLAG_TRUNCATED
    tailer.close()


def test_five_mib_line_without_newline_is_held_then_truncated_once_complete(
    tmp_path: Path, rings: RingFactory
) -> None:
    wiring = Wiring(
        rings,
        source_config(
            tmp_path,
            "include: ['*.log']\nmax_line_bytes: 2KiB",
            buffer="{collector_slot_bytes: 8KiB}",
        ),
    )
    log = tmp_path / "app.log"
    log.write_bytes(b"first\n" + b"L" * (5 * 1024 * 1024))
    tailer = wiring.tailer(log)

    records: list[Record] = []
    for _ in range(5):  # repeated polls while the line is still being written
        while wiring.read(tailer):
            records += wiring.drain()
    assert [r.data for r in records] == [b"first\n"]
    assert wiring.ring.published == 0  # nothing of the huge line has been published

    append(log, b"L" * 1000 + b"\nlast\n")
    while wiring.read(tailer):
        records += wiring.drain()
    assert [r.data for r in records] == [b"first\n", b"L" * 2048 + b"\n", b"last\n"]
    assert records[1].header.flags & FLAG_TRUNCATED
    assert records[1].header.end == 6 + 5 * 1024 * 1024 + 1000 + 1
    tailer.close()


def test_truncation_in_place_restarts_at_zero_and_counts_a_reset(
    tmp_path: Path, rings: RingFactory
) -> None:
    wiring = Wiring(rings, source_config(tmp_path, "include: ['*.log']"))
    log = tmp_path / "app.log"
    log.write_bytes(b"old line 1\nold line 2\n")
    tailer = wiring.tailer(log)
    assert wiring.read(tailer)
    wiring.drain()

    with open(log, "wb") as f:  # "> app.log" / copytruncate, then a new short line
        f.write(b"new\n")
    assert wiring.read(tailer)
    records = wiring.drain()
    assert [r.data for r in records] == [b"new\n"]
    assert records[0].header.start == 0
    assert wiring.counters.get(Counter.FILE_RESETS) == 1
    assert tailer.position == 4
    tailer.close()


def test_binary_invalid_utf8_and_empty_lines_pass_through_unchanged(
    tmp_path: Path, rings: RingFactory
) -> None:
    wiring = Wiring(rings, source_config(tmp_path, "include: ['*.log']"))
    log = tmp_path / "app.log"
    content = (
        b"\x00\x01\xff\xfe\n\n\n\xc3(\xe2\x82\n\r\n\tcr\r\n"
        + bytes(range(256)).replace(b"\n", b"")
        + b"\n"
    )
    log.write_bytes(content)
    tailer = wiring.tailer(log)
    assert wiring.read(tailer)
    records = wiring.drain()
    assert b"".join(r.data for r in records) == content
    tailer.close()


def test_full_ring_makes_the_tailer_return_false_and_keep_its_position(
    tmp_path: Path, rings: RingFactory
) -> None:
    wiring = Wiring(rings, source_config(tmp_path, "include: ['*.log']"), slots=2)
    log = tmp_path / "app.log"
    log.write_bytes(b"1\n")
    tailer = wiring.tailer(log)
    assert wiring.read(tailer)
    append(log, b"2\n")
    assert wiring.read(tailer)
    append(log, b"3\n4\n")

    # both slots are published and unreleased: the dispatcher is behind
    assert not wiring.read(tailer)
    assert tailer.position == 4
    assert wiring.ring.published == 1

    records = wiring.drain()  # the dispatcher catches up and releases
    assert wiring.read(tailer)
    records += wiring.drain()
    assert [r.data for r in records] == [b"1\n", b"2\n", b"3\n4\n"]
    assert tailer.position == 8
    tailer.close()


# -- FileFinder and fixed_root ---------------------------------------------------------


def make_tree(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x\n")


def test_double_star_matches_files_at_every_depth(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        ["logs/a.log", "logs/x/b.log", "logs/x/y/z/c.log", "logs/x/b.txt", "other/d.log"],
    )
    (tmp_path / "logs" / "dir.log").mkdir()  # a directory that matches is not a file
    config = source_config(tmp_path, "include: ['logs/**/*.log']")
    finder = FileFinder(config.sources["app"].include, config.sources["app"].exclude)
    assert finder.scan() == [
        str(tmp_path / p) for p in ["logs/a.log", "logs/x/b.log", "logs/x/y/z/c.log"]
    ]


def test_exclude_patterns_remove_matches_at_any_depth(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        [
            "logs/a.log",
            "logs/a.debug.log",
            "logs/secret/s.log",
            "logs/x/secret/deep.log",
            "logs/x/keep.log",
            "logs/old.log.gz",
        ],
    )
    config = source_config(
        tmp_path,
        "include: ['logs/**/*.log', 'logs/**/*.gz']\n"
        "exclude: ['*/secret/*', '*.debug.log', '*.gz']",
    )
    finder = FileFinder(config.sources["app"].include, config.sources["app"].exclude)
    assert finder.scan() == [str(tmp_path / p) for p in ["logs/a.log", "logs/x/keep.log"]]
    assert finder.excluded(str(tmp_path / "logs/x/y/secret/z.log"))


def test_overlapping_include_patterns_list_each_file_once(tmp_path: Path) -> None:
    make_tree(tmp_path, ["logs/a.log", "logs/sub/b.log"])
    config = source_config(tmp_path, "include: ['logs/*.log', 'logs/**/*.log', 'logs/a.log']")
    finder = FileFinder(config.sources["app"].include, [])
    assert finder.scan() == [str(tmp_path / "logs/a.log"), str(tmp_path / "logs/sub/b.log")]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/var/log/app.log", ("/var/log", False)),
        ("/var/log/*.log", ("/var/log", False)),
        ("/var/log/**/*.log", ("/var/log", True)),
        ("/var/*/nginx/*.log", ("/var", True)),
        ("/srv/app-[0-9]/out.log", ("/srv", True)),
        ("/*/x.log", ("/", True)),
        ("/x.log", ("/", False)),
    ],
)
def test_fixed_root_is_the_directory_before_the_first_wildcard(
    pattern: str, expected: tuple[str, bool]
) -> None:
    assert fixed_root(pattern) == expected


# -- FileCollector -----------------------------------------------------------------------


def collect_until(
    wiring: Wiring, done: Callable[[dict[str, bytes]], bool], seen: list[Record]
) -> dict[str, bytes]:
    """Read the ring while a collector thread runs, until ``done`` or the deadline."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        seen += wiring.drain()
        if done(data_by_path(seen)):
            break
        time.sleep(0.01)
    return data_by_path(seen)


@pytest.mark.parametrize("watch", [True, False], ids=["watchdog", "polling"])
def test_files_created_after_start_are_picked_up(
    tmp_path: Path, rings: RingFactory, watch: bool
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "early.log").write_bytes(b"early 1\n")
    # with watchdog the glob interval is far away: only a notification can find the new
    # file in time; with polling the glob interval is what finds it
    interval = "60s" if watch else "100ms"
    config = source_config(
        tmp_path,
        f"include: ['logs/**/*.log']\nwatch: {str(watch).lower()}\n"
        f"glob_interval: {interval}\npoll_interval: 50ms",
    )
    wiring = Wiring(rings, config)
    stop = threading.Event()
    collector = wiring.collector(should_stop=stop.is_set)
    thread = threading.Thread(target=collector.run, daemon=True)
    thread.start()
    seen: list[Record] = []
    try:
        early = str(logs / "early.log")
        got = collect_until(wiring, lambda d: early in d, seen)
        assert got[early] == b"early 1\n"

        late = logs / "late.log"
        late.write_bytes(b"late 1\nlate 2\n")
        append(logs / "early.log", b"early 2\n")
        if not watch:  # polling also finds files in directories created later
            (logs / "sub").mkdir()
            (logs / "sub" / "deeper.log").write_bytes(b"deep\n")
        expected = {early: b"early 1\nearly 2\n", str(late): b"late 1\nlate 2\n"}
        if not watch:
            expected[str(logs / "sub" / "deeper.log")] = b"deep\n"
        got = collect_until(wiring, lambda d: d == expected, seen)
        assert got == expected
    finally:
        stop.set()
        thread.join(DEADLINE)
    assert not thread.is_alive()
    assert wiring.ring.closed  # a clean stop closes the ring for the dispatcher
    assert wiring.counters.get(Counter.FILES_WATCHED) == len(expected)


def test_read_from_end_skips_existing_content_but_reads_new_files_whole(
    tmp_path: Path, rings: RingFactory
) -> None:
    old = tmp_path / "old.log"
    old.write_bytes(b"history 1\nhistory 2\n")
    wiring = Wiring(rings, source_config(tmp_path, "include: ['*.log']\nread_from: end"))
    collector = wiring.collector()
    collector.rescan(initial=True)
    assert not collector.poll_once()

    append(old, b"fresh 1\n")
    new = tmp_path / "new.log"
    new.write_bytes(b"born 1\nborn 2\n")
    collector.rescan()
    while collector.poll_once():
        pass
    assert data_by_path(wiring.drain()) == {
        str(old): b"fresh 1\n",
        str(new): b"born 1\nborn 2\n",
    }
    close_tailers(collector)


def test_checkpoint_is_resumed_when_dev_and_inode_match(tmp_path: Path, rings: RingFactory) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"delivered 1\ndelivered 2\nnot yet\n")
    st = log.stat()
    saved = {(st.st_dev, st.st_ino): FilePosition("app", str(log), st.st_dev, st.st_ino, 24)}
    wiring = Wiring(rings, source_config(tmp_path, "include: ['*.log']"))
    collector = wiring.collector(saved)
    collector.rescan(initial=True)
    while collector.poll_once():
        pass
    records = wiring.drain()
    assert [r.data for r in records] == [b"not yet\n"]
    assert records[0].header.start == 24
    close_tailers(collector)


def test_checkpoint_of_another_inode_is_ignored_and_the_file_read_from_zero(
    tmp_path: Path, rings: RingFactory
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a replacement file\nwith new lines\n")
    st = log.stat()
    # the checkpoint belongs to the file this path named before (rotated away meanwhile);
    # read_from: end must not apply either: the path has a checkpoint
    saved = {
        (st.st_dev, st.st_ino + 1): FilePosition("app", str(log), st.st_dev, st.st_ino + 1, 19)
    }
    wiring = Wiring(rings, source_config(tmp_path, "include: ['*.log']\nread_from: end"))
    collector = wiring.collector(saved)
    collector.rescan(initial=True)
    while collector.poll_once():
        pass
    assert b"".join(r.data for r in wiring.drain()) == log.read_bytes()
    close_tailers(collector)


def test_checkpoint_past_the_end_of_the_same_file_restarts_at_zero(
    tmp_path: Path, rings: RingFactory
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"short now\n")
    st = log.stat()
    saved = {(st.st_dev, st.st_ino): FilePosition("app", str(log), st.st_dev, st.st_ino, 5000)}
    wiring = Wiring(rings, source_config(tmp_path, "include: ['*.log']"))
    collector = wiring.collector(saved)
    collector.rescan(initial=True)
    while collector.poll_once():
        pass
    assert b"".join(r.data for r in wiring.drain()) == b"short now\n"
    close_tailers(collector)


@pytest.mark.parametrize(
    "rescan_while_missing", [False, True], ids=["recreated-at-once", "recreated-later"]
)
def test_rotated_file_is_read_to_its_end_and_the_new_file_is_read_too(
    tmp_path: Path, rings: RingFactory, rescan_while_missing: bool
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"1\n2\n")
    wiring = Wiring(rings, source_config(tmp_path, "include: ['*.log']"))
    clock = [0.0]
    collector = FileCollector(
        "app",
        wiring.source,
        wiring.producer,
        wiring.counters,
        {},
        lambda: False,
        clock=lambda: clock[0],
    )
    collector.rescan(initial=True)
    while collector.poll_once():
        pass
    old_ino = log.stat().st_ino

    append(log, b"3\n")  # written before the rename, not read yet
    rotated = tmp_path / "app.log.1"
    os.rename(log, rotated)
    append(rotated, b"4\n")  # a writer that still holds the old file open
    if rescan_while_missing:  # a scan ran between the rename and the new file's creation
        collector.rescan()
        assert str(log) not in collector.tailers
    log.write_bytes(b"5\n6\n")
    assert log.stat().st_ino != old_ino
    collector.rescan()
    while collector.poll_once():
        pass

    records = wiring.drain()
    assert b"".join(r.data for r in records if r.header.ino == old_ino) == b"1\n2\n3\n4\n"
    assert b"".join(r.data for r in records if r.header.ino != old_ino) == b"5\n6\n"
    assert len(collector.retiring) == 1  # read to its end, but its writer may write on
    append(rotated, b"7\n")  # before the writer reopens its log
    clock[0] = RETIRE_GRACE
    while collector.poll_once():
        pass
    assert b"".join(r.data for r in wiring.drain()) == b"7\n"
    assert collector.retiring == []  # closed once read to its end and the grace is over
    assert set(collector.tailers) == {str(log)}
    close_tailers(collector)


def test_read_from_end_applies_only_to_the_first_run_ever_even_without_a_checkpoint(
    tmp_path: Path, rings: RingFactory
) -> None:
    """A run killed before its first checkpoint must not skip to the end again."""
    log = tmp_path / "app.log"
    log.write_bytes(b"old line\n")
    marker = tmp_path / "data" / "started" / "app"
    wiring = Wiring(rings, source_config(tmp_path, "include: ['*.log']\nread_from: end"))
    first = FileCollector(
        "app",
        wiring.source,
        wiring.producer,
        wiring.counters,
        {},
        lambda: False,
        started_marker=marker,
    )
    first.rescan(initial=True)
    assert marker.exists() and first.tailers[str(log)].position == log.stat().st_size
    close_tailers(first)
    with open(log, "ab") as f:  # written while the killed collector was restarting
        f.write(b"written during the restart\n")
    again = FileCollector(
        "app",
        wiring.source,
        wiring.producer,
        wiring.counters,
        {},
        lambda: False,
        started_marker=marker,
    )
    again.rescan(initial=True)
    assert again.tailers[str(log)].position == 0  # no checkpoint: read whole, lose nothing
    close_tailers(again)


def test_a_rotated_file_ending_in_an_unterminated_line_is_sent_and_closed(
    tmp_path: Path, rings: RingFactory
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"whole line\nlast words without newline")
    wiring = Wiring(rings, source_config(tmp_path, "include: ['app.log']"))
    clock = [0.0]
    collector = FileCollector(
        "app",
        wiring.source,
        wiring.producer,
        wiring.counters,
        {},
        lambda: False,
        clock=lambda: clock[0],
    )
    collector.rescan(initial=True)
    collector.poll_once()
    log.rename(tmp_path / "app.log.1")  # rotated away: the writer moved on
    log.write_bytes(b"")
    collector.rescan()
    assert len(collector.retiring) == 1
    collector.poll_once()
    clock[0] = 10.0  # well past the time a rotated file's last line may stay open
    collector.poll_once()
    collector.poll_once()
    data = b"".join(r.data for r in wiring.drain())
    assert data == b"whole line\nlast words without newline\n"
    assert collector.retiring == []  # closed: no descriptor or deleted file kept
    close_tailers(collector)


@pytest.mark.parametrize("existing", ["nothing", "data_dir"], ids=["fresh", "data-dir-exists"])
def test_started_marker_is_fsynced_with_every_directory_entry_leading_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: str
) -> None:
    data_dir = tmp_path / "data"
    if existing == "data_dir":
        data_dir.mkdir()
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    marker = data_dir / "started" / "app"
    mark_started(marker)
    assert marker.exists()
    # the marker, started/ (holding its entry) and data_dir (holding started/'s, new);
    # data_dir's own entry lies in its parent, synced only when this call created it
    expected = [str(marker), str(marker.parent), str(data_dir)]
    if existing == "nothing":
        expected.append(str(tmp_path))
    assert synced == expected
    assert (marker.parent.stat().st_mode & 0o777) == 0o700


def test_a_rename_between_the_stat_and_the_open_of_a_scan_opens_no_file_twice(
    tmp_path: Path, rings: RingFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan stats a name, then opens it: a rotation in between can put a file that is
    already tailed under another name there. That file must not get a second tailer (it
    would be read again from its start: every line of it delivered twice)."""
    log, rotated, older = tmp_path / "app.log", tmp_path / "app.log.1", tmp_path / "app.log.2"
    log.write_bytes(b"a1\na2\n")
    wiring = Wiring(rings, source_config(tmp_path, "include: ['app.log*']"))
    collector = wiring.collector()
    collector.rescan(initial=True)
    while collector.poll_once():
        pass
    assert b"".join(r.data for r in wiring.drain()) == b"a1\na2\n"
    # a rotation the collector has not scanned yet: app.log -> app.log.1, a new app.log
    os.rename(log, rotated)
    log.write_bytes(b"b1\n")
    real_open = FileCollector._open

    def open_after_another_rotation(self: FileCollector, path: str) -> FileTailer | None:
        if path == str(log) and not older.exists():
            # the scan stat-ed the new app.log (b1); before its open, renames put the
            # file tailed all along (a1, a2) at that name
            os.rename(rotated, older)  # a1/a2 -> app.log.2
            os.rename(log, rotated)  # b1 -> app.log.1
            os.rename(older, log)  # a1/a2 -> app.log
        return real_open(self, path)

    monkeypatch.setattr(FileCollector, "_open", open_after_another_rotation)
    collector.rescan()
    monkeypatch.setattr(FileCollector, "_open", real_open)
    collector.rescan()
    while collector.poll_once():
        pass
    tailed = [(t.dev, t.ino) for t in (*collector.tailers.values(), *collector.retiring)]
    assert len(tailed) == len(set(tailed)), "a file has two tailers"
    data = b"".join(r.data for r in wiring.drain())
    assert sorted(data.splitlines()) == [b"b1"], data  # a1 and a2 were read already
    close_tailers(collector)
