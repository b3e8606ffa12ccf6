"""``logcap dlq`` never reports a record delivered, or deletes it, unless it is.

Covers (issue 9): replay treats a failure that ``flush()`` reports (a failed fsync of the
file sink with ``fsync: batch``; a Kafka delivery timeout is reported the same way) as not
delivered: the record stays pending, the exit code is 1 and purge keeps it (item 1);
purge keeps the records of a segment created without its header and every file it
cannot read as a segment (item 3); ``ls`` and ``show`` ignore a stray ``*.dlq`` name with
a warning (item 9); marks left by a deleted segment mark nothing (item 4).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from logcap.cli import main
from logcap.config import Config, parse_config
from logcap.dlq.marks import replayed
from logcap.dlq.record import DlqRecord, encode_record, file_header
from logcap.dlq.writer import DlqWriter, dlq_directory, segment_paths
from tests._component_helpers import build_batch
from tests.conftest import write_config

ENTRIES = 50


def _config(
    tmp_path: Path, sink: str = "{type: file, path: ./out/out.ndjson, fsync: batch}"
) -> Path:
    body = f"""
data_dir: ./data
sources: {{app: {{type: file, include: [x]}}}}
sinks: {{out: {sink}}}
dlq: {{segment_bytes: 64KiB}}
"""
    return write_config(tmp_path, body, "127.0.0.1:1")


def _parsed(path: Path) -> Config:
    return parse_config(path.read_text(), base_dir=path.parent)


def _record(seq: int, pad: int = 0) -> DlqRecord:
    messages = [f"record {seq} line {n:03d} " + "x" * pad for n in range(ENTRIES)]
    batch, _ = build_batch([("app", 1_700_000_000_000_000_000, messages)])
    return DlqRecord(
        sink="out",
        kind="exhausted",
        reason="timed out",
        attempts=5,
        first_failure_ns=1,
        written_ns=2,
        batch_seq=seq,
        entries=ENTRIES,
        batch=batch,
    )


def _fill(config: Path, records: list[DlqRecord]) -> Path:
    directory = dlq_directory(_parsed(config).data_dir)
    writer = DlqWriter(directory, _parsed(config).dlq)
    for r in records:
        writer.append(r)
    writer.close()
    return directory


def _segment_by_hand(directory: Path, number: int, records: list[DlqRecord]) -> None:
    """A segment as the documented format lays it out (no writer involved)."""
    data = file_header() + b"".join(encode_record(r) for r in records)
    (directory / f"{number:016d}.dlq").write_bytes(data)


def _dlq(*args: str) -> Result:
    return CliRunner().invoke(main, ["dlq", *args])


def _pending(config: Path) -> list[int]:
    result = _dlq("show", "--config", str(config), "--pending")
    assert result.exit_code == 0, result.output
    return [json.loads(line)["batch_seq"] for line in result.stdout.splitlines()]


def test_replay_leaves_a_record_pending_when_flush_reports_that_its_sync_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    directory = _fill(config, [_record(1, pad=700), _record(2, pad=700)])  # two segments
    assert len(segment_paths(directory)) == 2
    real_fsync = os.fsync

    def failing_for_the_output(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("out.ndjson"):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_for_the_output)
    failing = _dlq("replay", "--config", str(config))
    assert failing.exit_code == 1, failing.output
    assert "replayed 0 records" in failing.stdout and "2 failed" in failing.stdout
    assert "Input/output error" in failing.stderr
    assert all(replayed(segment) == set() for segment in segment_paths(directory))
    assert _pending(config) == [1, 2]
    purged = _dlq("purge", "--config", str(config))
    assert purged.exit_code == 0 and "purged 0 segments" in purged.stdout
    assert len(segment_paths(directory)) == 2

    monkeypatch.setattr(os, "fsync", real_fsync)  # the disk is healthy again
    fixed = _dlq("replay", "--config", str(config))
    assert fixed.exit_code == 0, fixed.output
    assert f"replayed 2 records ({2 * ENTRIES} entries); 0 failed" in fixed.stdout
    assert _pending(config) == []
    lines = (tmp_path / "out" / "out.ndjson").read_bytes().splitlines()
    messages = {json.loads(line)["message"] for line in lines}
    assert {m.split(" x")[0] for m in messages} == {
        f"record {seq} line {n:03d}" for seq in (1, 2) for n in range(ENTRIES)
    }


def test_purge_keeps_the_pending_records_of_a_segment_created_without_its_header(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    directory = dlq_directory(_parsed(config).data_dir)
    directory.mkdir(parents=True)
    # what an older writer left after a kill between creating a segment and its header
    headerless = directory / "0000000000000001.dlq"
    headerless.write_bytes(encode_record(_record(1)) + encode_record(_record(2)))
    _segment_by_hand(directory, 2, [_record(3)])
    assert _pending(config) == [1, 2, 3]
    purged = _dlq("purge", "--config", str(config))
    assert purged.exit_code == 0 and "purged 0 segments" in purged.stdout
    assert headerless.exists()
    assert "without its header" in purged.stderr


@pytest.mark.parametrize(
    "content",
    [b"LOGCAPXX" + bytes(8) + encode_record(_record(1)), file_header()[:8] + b"\x09" + bytes(7)],
    ids=["foreign", "unsupported_version"],
)
def test_purge_keeps_a_file_it_cannot_read_as_a_segment_unless_all(
    tmp_path: Path, content: bytes
) -> None:
    config = _config(tmp_path)
    directory = dlq_directory(_parsed(config).data_dir)
    directory.mkdir(parents=True)
    unknown = directory / "0000000000000001.dlq"
    unknown.write_bytes(content)
    _segment_by_hand(directory, 2, [_record(2)])
    purged = _dlq("purge", "--config", str(config))
    assert purged.exit_code == 0 and "purged 0 segments" in purged.stdout
    assert unknown.exists() and f"{unknown} kept" in purged.stderr
    everything = _dlq("purge", "--config", str(config), "--all")
    assert everything.exit_code == 0 and "purged 2 segments" in everything.stdout
    assert not unknown.exists()


def test_ls_and_show_ignore_a_stray_dlq_name_with_a_warning(tmp_path: Path) -> None:
    config = _config(tmp_path)
    directory = _fill(config, [_record(1)])
    stray = directory / "notes.dlq"
    stray.write_text("an operator's notes\n")
    listed = _dlq("ls", "--config", str(config), "--json")
    assert listed.exit_code == 0, listed.output
    assert [json.loads(row)["segment"] for row in listed.stdout.splitlines()] == [
        "0000000000000001.dlq"
    ]
    assert f"ignoring {stray}" in listed.stderr
    shown = _dlq("show", "--config", str(config))
    assert shown.exit_code == 0 and len(shown.stdout.splitlines()) == 1
    assert f"ignoring {stray}" in shown.stderr
    assert _dlq("purge", "--config", str(config), "--all").exit_code == 0
    assert stray.read_text() == "an operator's notes\n"


def test_a_new_segment_does_not_inherit_the_marks_of_a_deleted_one(tmp_path: Path) -> None:
    config = _config(tmp_path, "{type: blackhole}")
    directory = _fill(config, [_record(1)])
    assert _dlq("replay", "--config", str(config)).exit_code == 0
    [old] = segment_paths(directory)
    old.unlink()  # purge --all killed between the two unlinks: the sidecar is left
    _fill(config, [_record(2)])
    assert _pending(config) == [2]
    replay = _dlq("replay", "--config", str(config))
    assert replay.exit_code == 0 and "replayed 1 records" in replay.stdout
