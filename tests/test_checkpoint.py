"""The checkpoint file (dispatch/checkpoint.py): its format, atomic replacement, and how a
damaged file is reported and replaced by the ``.prev`` copy instead of crashing the agent."""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from logcap.dispatch.checkpoint import FILE_NAME, CheckpointStore, FilePosition, Positions

OLD = Positions(files=[FilePosition("app", "/var/log/app.log", 2049, 100, 10)])
NEW = Positions(
    files=[
        FilePosition("app", "/var/log/app.log", 2049, 100, 250),
        FilePosition("app", "/var/log/other.log", 2049, 101, 7),
        FilePosition("db", "/var/log/db/slow.log", 2050, 5, 4096),
    ]
)


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    # a data_dir that does not exist yet: save() must create it
    return CheckpointStore(tmp_path / "data")


def saved_twice(store: CheckpointStore) -> CheckpointStore:
    """``OLD`` ends up in ``.prev`` and ``NEW`` in the current file."""
    store.save(OLD)
    store.save(NEW)
    return store


def test_save_then_load_returns_the_same_positions(store: CheckpointStore) -> None:
    store.save(NEW)
    assert store.load() == NEW
    assert store.path == store.dir / FILE_NAME


def test_a_second_save_keeps_the_first_as_prev(store: CheckpointStore) -> None:
    saved_twice(store)
    assert store.load() == NEW
    assert CheckpointStore(store.dir).load() == NEW  # a fresh store reads the same file
    store.path.unlink()  # as if a crash hit between the two renames of save()
    assert store.load() == OLD


def test_file_starts_with_magic_crc_and_length_header(store: CheckpointStore) -> None:
    store.save(NEW)
    raw = store.path.read_bytes()
    assert raw.startswith(b"LOGCAPCK1 ")
    head, body = raw.split(b"\n", 1)
    magic, crc, length = head.split(b" ")
    assert magic == b"LOGCAPCK1"
    assert len(crc) == 8 and int(crc, 16) == zlib.crc32(body)
    assert int(length) == len(body)


def test_missing_files_load_as_empty_positions(store: CheckpointStore) -> None:
    assert store.load() == Positions()
    assert store.positions_for("app") == {}


def _truncate(raw: bytes) -> bytes:
    return raw[: len(raw) - 5]


def _flip_body_byte(raw: bytes) -> bytes:
    at = raw.index(b"\n") + len(raw[raw.index(b"\n") :]) // 2
    return raw[:at] + bytes([raw[at] ^ 0x20]) + raw[at + 1 :]


def _garbage(raw: bytes) -> bytes:
    return b"\x00\xffnot a checkpoint at all\n{}"


def _empty(raw: bytes) -> bytes:
    return b""


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "truncated": _truncate,
    "flipped-byte": _flip_body_byte,
    "garbage": _garbage,
    "empty": _empty,
}


@pytest.mark.parametrize("damage", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_corrupt_current_file_is_reported_and_prev_is_used(
    store: CheckpointStore, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    saved_twice(store)
    store.path.write_bytes(CORRUPTIONS[damage](store.path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="logcap.dispatch.checkpoint"):
        loaded = store.load()
    assert loaded == OLD
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(store.path) in warnings[0].getMessage()


@pytest.mark.parametrize("damage", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_both_copies_corrupt_gives_empty_positions_without_raising(
    store: CheckpointStore, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    saved_twice(store)
    store.path.write_bytes(CORRUPTIONS[damage](store.path.read_bytes()))
    store.previous.write_bytes(_garbage(b""))
    with caplog.at_level(logging.WARNING, logger="logcap.dispatch.checkpoint"):
        loaded = store.load()
    assert loaded == Positions()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2
    assert str(store.path) in messages[0] and str(store.previous) in messages[1]


def test_corrupt_current_without_prev_gives_empty_positions(
    store: CheckpointStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.save(NEW)
    store.path.write_bytes(_truncate(store.path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="logcap.dispatch.checkpoint"):
        assert store.load() == Positions()
    assert any("truncated" in r.getMessage() for r in caplog.records)


def test_valid_header_with_undecodable_body_is_reported(
    store: CheckpointStore, caplog: pytest.LogCaptureFixture
) -> None:
    # the checksum matches, yet the body is not a Positions document
    body = b'{"version": "one", "files": 3}'
    store.dir.mkdir(parents=True)
    store.path.write_bytes(b"LOGCAPCK1 %08x %d\n%s" % (zlib.crc32(body), len(body), body))
    with caplog.at_level(logging.WARNING, logger="logcap.dispatch.checkpoint"):
        assert store.load() == Positions()
    assert len(caplog.records) == 1


def test_leftover_tmp_file_is_ignored_and_replaced(store: CheckpointStore) -> None:
    store.save(OLD)
    tmp = store.dir / (FILE_NAME + ".tmp")
    # a save that crashed before its rename leaves a half-written temp file behind
    tmp.write_bytes(b"LOGCAPCK1 00000000 999\n{half")
    assert store.load() == OLD
    store.save(NEW)
    assert store.load() == NEW
    assert not tmp.exists()


def test_positions_for_returns_one_source_keyed_by_device_and_inode(
    store: CheckpointStore,
) -> None:
    store.save(NEW)
    app = store.positions_for("app")
    assert set(app) == {(2049, 100), (2049, 101)}
    assert app[(2049, 100)] == FilePosition("app", "/var/log/app.log", 2049, 100, 250)
    assert store.positions_for("db") == {
        (2050, 5): FilePosition("db", "/var/log/db/slow.log", 2050, 5, 4096)
    }
    assert store.positions_for("nobody") == {}


def test_a_damaged_current_file_never_replaces_a_good_previous_copy(
    store: CheckpointStore,
) -> None:
    store.save(OLD)
    store.save(NEW)  # OLD is now .prev
    store.path.write_bytes(store.path.read_bytes()[:-5])  # torn by a full disk
    newer = Positions(files=[FilePosition("app", "/var/log/app.log", 2049, 100, 999)])
    store.save(newer)
    assert store.load() == newer
    store.path.unlink()
    assert store.load() == OLD  # the good copy survived; the torn one was not kept


def test_a_short_write_is_completed_not_taken_for_a_whole_file(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:7]))
    store.save(NEW)
    monkeypatch.undo()
    assert store.load() == NEW
