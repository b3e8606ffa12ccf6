"""The retry spool on its own: what survives a crash, what a damaged file costs, bounds."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from logcap.retry import spool as spool_module
from logcap.retry.spool import Spool


def _spool(directory: Path, max_bytes: int = 1 << 30, segment: int = 1 << 20) -> Spool:
    s = Spool(directory, max_bytes, segment)
    s.recover()
    return s


def _put(s: Spool, seq: int, data: bytes = b"batch", sink: str = "a") -> int:
    return s.put(sink, seq, 1, 1_000 + seq, 3, f"reason {seq}", data).id


def test_what_was_put_and_synced_is_recovered_with_its_bytes_and_attempts(tmp_path: Path) -> None:
    s = _spool(tmp_path)
    first = s.put("a", 7, 1, 111, 3, "503", b"one")
    s.put("b", 8, 2, 222, 4, "timeout", b"two", permanent=True)
    s.attempted(first, 5, "503 again")
    s.sync()
    # killed here: nothing closed
    again = Spool(tmp_path, 1 << 30, 1 << 20)
    found = again.recover()
    assert [(x.sink, x.batch_seq, x.attempts, x.first_failure_ns, x.entries) for x in found] == [
        ("a", 7, 5, 111, 3),
        ("b", 8, 2, 222, 4),
    ]
    assert [x.reason for x in found] == ["503 again", "timeout"]
    assert [x.permanent for x in found] == [False, True]
    assert [again.read_batch(x) for x in found] == [b"one", b"two"]


def test_done_batches_are_not_recovered_and_their_segments_are_deleted(tmp_path: Path) -> None:
    s = _spool(tmp_path, segment=200)  # about one batch per segment
    items = [s.put("a", i, 1, i, 1, "r", b"x" * 150) for i in range(4)]
    for item in items[:3]:
        s.done(item)
    s.sync()
    assert len(list(tmp_path.glob("*.spool"))) == 1  # only the segment of the live one
    found = Spool(tmp_path, 1 << 30, 200).recover()
    assert [x.batch_seq for x in found] == [3]


def test_a_torn_tail_loses_only_the_record_that_was_never_synced(tmp_path: Path) -> None:
    s = _spool(tmp_path)
    _put(s, 1)
    _put(s, 2)
    s.sync()
    [segment] = tmp_path.glob("*.spool")
    size = segment.stat().st_size
    with open(segment, "r+b") as f:
        f.truncate(size - 3)
    again = Spool(tmp_path, 1 << 30, 1 << 20)
    assert [x.batch_seq for x in again.recover()] == [1]
    assert again.skipped_bytes > 0


def test_a_damaged_record_in_the_middle_costs_only_that_record(tmp_path: Path) -> None:
    s = _spool(tmp_path)
    for seq in range(3):
        _put(s, seq, b"payload-%d" % seq)
    s.sync()
    [segment] = tmp_path.glob("*.spool")
    data = bytearray(segment.read_bytes())
    middle = data.index(b"payload-1")
    data[middle] ^= 0xFF
    segment.write_bytes(bytes(data))
    again = Spool(tmp_path, 1 << 30, 1 << 20)
    found = again.recover()
    assert [x.batch_seq for x in found] == [0, 2]
    assert [again.read_batch(x) for x in found] == [b"payload-0", b"payload-2"]


def test_ids_grow_even_when_the_wall_clock_stands_still(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1 << 30, 1 << 20, wall_ns=lambda: 5)
    s.recover()
    ids = [_put(s, i) for i in range(3)]
    assert ids == sorted(set(ids))
    s.sync()
    # a successor whose clock went back continues after the ids it found on disk
    later = Spool(tmp_path, 1 << 30, 1 << 20, wall_ns=lambda: 1)
    later.recover()
    assert _put(later, 9) > max(ids)


def test_a_new_process_appends_to_a_new_segment_never_to_an_old_one(tmp_path: Path) -> None:
    s = _spool(tmp_path)
    _put(s, 1)
    s.sync()
    [old] = tmp_path.glob("*.spool")
    before = old.read_bytes()
    again = _spool(tmp_path)
    _put(again, 2)
    again.sync()
    assert old.read_bytes() == before
    assert len(list(tmp_path.glob("*.spool"))) == 2


def test_a_stray_file_in_the_spool_directory_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "notes.spool").write_text("not a segment")
    (tmp_path / "README").write_text("hello")
    s = _spool(tmp_path)
    _put(s, 1)
    s.sync()
    assert [x.batch_seq for x in Spool(tmp_path, 1 << 30, 1 << 20).recover()] == [1]


def test_files_are_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    s = _spool(directory)
    _put(s, 1)
    s.sync()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    [segment] = directory.glob("*.spool")
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600


def test_fits_keeps_the_spool_under_max_bytes(tmp_path: Path) -> None:
    s = _spool(tmp_path, max_bytes=64 * 1024)
    while s.fits(10_000):
        _put(s, 1, b"x" * 10_000)
    assert 0 < s.total_bytes <= 64 * 1024


def test_a_refused_write_leaves_no_torn_record_in_front_of_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = _spool(tmp_path)
    _put(s, 1)
    real = os.writev
    calls = {"n": 0}

    def half_then_enospc(fd: int, buffers: list[bytes]) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            os.write(fd, bytes(buffers[0])[:5])  # part of a header reached the file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, buffers)

    monkeypatch.setattr(spool_module.os, "writev", half_then_enospc)
    with pytest.raises(OSError):
        _put(s, 2)
    _put(s, 3)
    s.sync()
    assert [x.batch_seq for x in Spool(tmp_path, 1 << 30, 1 << 20).recover()] == [1, 3]
