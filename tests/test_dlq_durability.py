"""The DLQ writer never loses or doubles a record through what a bad day leaves on disk.

Covers (issue 9): a segment left without its header (a kill between create and header
write, or a full disk) is never appended to and the records an older writer put in one
are still read (item 3); segment numbers are never reused, not after every segment was
deleted and not across restarts, and sidecars that outlived their segment mark nothing
(item 4); an fsync that fails after a good write leaves the record once after the retry,
and the directory and its files are owner-only (item 11); a ``*.dlq`` name that is not
a segment's is ignored with a warning instead of stopping the writer (item 9).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from logcap.config import DlqConfig
from logcap.dlq.marks import mark_replayed, replayed
from logcap.dlq.record import Problem, encode_record, file_header, read_segment
from logcap.dlq.writer import REPLAYED_SUFFIX, DlqWriter, segment_paths
from tests.test_dlq import Clock, dlq_config, read_all, record


@pytest.fixture
def writers() -> Iterator[list[DlqWriter]]:
    """Writers to close at teardown (their segment fds)."""
    made: list[DlqWriter] = []
    yield made
    for writer in made:
        writer.close()


def _open(directory: Path, config: DlqConfig, writers: list[DlqWriter], **kw: Clock) -> DlqWriter:
    writer = DlqWriter(directory, config, **kw)
    writers.append(writer)
    return writer


def _sidecar(segment: Path) -> Path:
    return segment.with_name(segment.name + REPLAYED_SUFFIX)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


# -- item 3: a segment without its header -------------------------------------------------


@pytest.mark.parametrize("left", [b"", file_header()[:5]], ids=["empty", "part_of_the_header"])
def test_a_segment_left_without_its_header_is_never_appended_to(
    tmp_path: Path, writers: list[DlqWriter], left: bytes
) -> None:
    directory = tmp_path / "dlq"
    directory.mkdir()
    (directory / "0000000000000001.dlq").write_bytes(left)  # killed before the header
    writer = _open(directory, dlq_config(tmp_path), writers)
    records = [record(1), record(2)]
    for r in records:
        writer.append(r)
    writer.close()
    assert read_all(directory) == records
    for path in segment_paths(directory):
        problems: list[Problem] = []
        list(read_segment(path, problems))
        assert problems == [], f"{path.name}: {problems}"


def test_a_full_disk_while_creating_a_segment_leaves_no_segment_to_reuse(
    tmp_path: Path, writers: list[DlqWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, config = tmp_path / "dlq", dlq_config(tmp_path)
    real_write = os.write

    def full_for_headers(fd: int, data: bytes) -> int:
        if bytes(data) == file_header():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_for_headers)
    first = _open(directory, config, writers)
    with pytest.raises(OSError):
        first.append(record(1))
    first.close()  # the retry process stops before the disk has room again
    monkeypatch.setattr(os, "write", real_write)
    second = _open(directory, config, writers)
    second.append(record(1))
    second.append(record(2))
    second.close()
    assert [r.batch_seq for r in read_all(directory)] == [1, 2]


def test_records_an_older_writer_put_in_a_headerless_segment_are_read_and_kept(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory = tmp_path / "dlq"
    directory.mkdir()
    headerless = directory / "0000000000000001.dlq"
    cut = file_header()[:3]  # ENOSPC let three bytes of the header through
    headerless.write_bytes(cut + encode_record(record(1)) + encode_record(record(2)))
    problems: list[Problem] = []
    found = list(read_segment(headerless, problems))
    assert [(offset, r.batch_seq) for offset, r in found] == [
        (len(cut), 1),
        (len(cut) + len(encode_record(record(1))), 2),
    ]
    assert [(p.offset, "without its header" in p.what) for p in problems] == [(0, True)]
    writer = _open(directory, dlq_config(tmp_path), writers)
    assert writer.total_records == 2
    writer.append(record(3))
    assert [p.name for p in segment_paths(directory)] == [
        "0000000000000001.dlq",
        "0000000000000002.dlq",
    ]
    assert headerless.read_bytes().startswith(cut + encode_record(record(1)))  # untouched
    assert [r.batch_seq for r in read_all(directory)] == [1, 2, 3]


# -- item 4: numbers never reused; sidecars of deleted segments ------------------------------


@pytest.mark.parametrize(
    "left", ["sidecar", "nothing"], ids=["killed_between_unlinks", "all_deleted"]
)
def test_segment_numbers_are_not_reused_after_every_segment_was_deleted(
    tmp_path: Path, writers: list[DlqWriter], left: str
) -> None:
    directory, config = tmp_path / "dlq", dlq_config(tmp_path)
    first = _open(directory, config, writers)
    first.append(record(1))
    first.close()
    [old] = segment_paths(directory)
    [(offset, _)] = list(read_segment(old))
    mark_replayed(old, offset)
    old.unlink()  # purge, max_age or drop_oldest, then (maybe) a kill before the sidecar
    if left == "nothing":
        _sidecar(old).unlink()
    second = _open(directory, config, writers)
    second.append(record(2))
    [new] = segment_paths(directory)
    assert new.name != old.name
    assert [r.batch_seq for _, r in read_segment(new)] == [2]
    assert replayed(new) == set()


def test_segment_numbers_are_not_reused_after_expiry_and_a_restart(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    clock = Clock()
    directory, config = tmp_path / "dlq", dlq_config(tmp_path, "max_age: 10s")
    first = _open(directory, config, writers, clock=clock)
    first.append(record(1))
    clock.now += 11.0
    first.tick()
    assert segment_paths(directory) == []
    first.close()
    second = _open(directory, config, writers, clock=clock)
    second.append(record(2))
    assert [p.name for p in segment_paths(directory)] == ["0000000000000002.dlq"]


def test_a_sidecar_whose_segment_is_gone_is_removed_when_a_writer_opens(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory = tmp_path / "dlq"
    directory.mkdir()
    orphan = directory / ("0000000000000007.dlq" + REPLAYED_SUFFIX)
    orphan.write_bytes(bytes(8))
    writer = _open(directory, dlq_config(tmp_path), writers)
    assert not orphan.exists()
    writer.append(record(1))
    [segment] = segment_paths(directory)
    assert segment.name == "0000000000000008.dlq"  # past the orphan's number all the same


def test_marking_a_record_whose_segment_was_deleted_meanwhile_leaves_no_sidecar(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory = tmp_path / "dlq"
    writer = _open(directory, dlq_config(tmp_path), writers)
    writer.append(record(1))
    [segment] = segment_paths(directory)
    [(offset, _)] = list(read_segment(segment))
    writer.close()
    segment.unlink()  # max_age deleted it while a replay was delivering its record
    mark_replayed(segment, offset)
    assert not _sidecar(segment).exists()


def test_a_mark_appended_after_a_torn_one_is_read(tmp_path: Path, writers: list[DlqWriter]) -> None:
    directory = tmp_path / "dlq"
    writer = _open(directory, dlq_config(tmp_path), writers)
    writer.append(record(1))
    writer.append(record(2))
    [segment] = segment_paths(directory)
    offsets = [offset for offset, _ in read_segment(segment)]
    mark_replayed(segment, offsets[0])
    with open(_sidecar(segment), "ab") as sidecar:
        sidecar.write(b"\x01\x02\x03")  # a crash tore the next mark
    mark_replayed(segment, offsets[1])
    assert replayed(segment) == set(offsets)


# -- item 11: fsync failure, permissions -----------------------------------------------------


def test_a_failed_fsync_after_a_good_write_leaves_the_record_once_after_the_retry(
    tmp_path: Path, writers: list[DlqWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "dlq"
    writer = _open(directory, dlq_config(tmp_path, "fsync: always"), writers)
    writer.append(record(1))
    real_fsync, failures = os.fsync, [1]

    def failing_once(fd: int) -> None:
        if failures and _fd_path(fd).endswith(".dlq"):
            failures.pop()
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_once)
    with pytest.raises(OSError):
        writer.append(record(2))
    writer.append(record(2))  # the retry service tries again
    assert [r.batch_seq for r in read_all(directory)] == [1, 2]
    on_disk = sum(p.stat().st_size for p in segment_paths(directory))
    assert (writer.total_records, writer.total_bytes) == (2, on_disk)


def test_a_failed_interval_fsync_is_counted_and_does_not_stop_the_writer(
    tmp_path: Path, writers: list[DlqWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    config = dlq_config(tmp_path, "fsync: interval, fsync_interval: 1s")
    writer = _open(tmp_path / "dlq", config, writers, clock=clock)
    writer.append(record(1))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    clock.now += 2.0
    writer.tick()
    assert writer.sync_errors == 1
    monkeypatch.undo()
    writer.append(record(2))
    assert [r.batch_seq for r in read_all(tmp_path / "dlq")] == [1, 2]


@pytest.fixture
def no_umask() -> Iterator[None]:
    """Permissions exactly as the code asks for them (a umask cannot hide a wide mode)."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.usefixtures("no_umask")
def test_the_dlq_directory_and_its_files_are_owner_only(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory = tmp_path / "data" / "dlq"
    writer = _open(directory, dlq_config(tmp_path, "segment_bytes: 64KiB"), writers)
    for seq in range(3):  # two segments
        writer.append(record(seq, size=30_000))
    [segment, _] = segment_paths(directory)
    mark_replayed(segment, next(iter(read_segment(segment)))[0])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert modes and set(modes.values()) == {0o600}, modes


@pytest.mark.usefixtures("no_umask")
def test_an_existing_world_readable_dlq_directory_is_made_owner_only(
    tmp_path: Path, writers: list[DlqWriter]
) -> None:
    directory = tmp_path / "dlq"
    directory.mkdir(mode=0o755)
    _open(directory, dlq_config(tmp_path), writers)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


# -- item 9: names that are not segments ------------------------------------------------------


def test_a_stray_dlq_name_is_ignored_with_a_warning_and_left_alone(
    tmp_path: Path, writers: list[DlqWriter], caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "dlq"
    directory.mkdir()
    strays = {"notes.dlq": b"kept by an operator\n", "1.dlq": file_header()}
    for name, data in strays.items():
        (directory / name).write_bytes(data)
    (directory / "backup.dlq").mkdir()
    with caplog.at_level(logging.WARNING, logger="logcap.dlq"):
        writer = _open(directory, dlq_config(tmp_path), writers)
    writer.append(record(1))
    writer.close()
    assert writer.ignored_files == 3
    for name in [*strays, "backup.dlq"]:
        assert any(name in message and "ignoring" in message for message in caplog.messages)
    assert {name: (directory / name).read_bytes() for name in strays} == strays
    assert [p.name for p in segment_paths(directory)] == ["0000000000000001.dlq"]
    assert [r.batch_seq for r in read_all(directory)] == [1]
