"""The file sink beyond plain appends: the text format, rotation by time, compression and
retention of rotated files (crash-safe), fsync policies, a disk that really fills up, and
the config errors of every key.

Sinks are built from YAML like the agent builds them; time is a clock the test moves.
Compression crash safety is checked by SIGKILLing a real process mid-compression.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import zstandard

from logcap.errors import ConfigError, Permanent, Retryable
from logcap.metrics import Counter, NullBlock
from logcap.sinks.file.compress import Interrupted, compress_file
from logcap.sinks.file.config import FileSinkConfig
from logcap.sinks.file.sink import IDLE_CLOSE_SECONDS, FileSink
from logcap.sinks.file.text import TextRenderer
from logcap.sinks.registry import build_sink
from tests._component_helpers import batch_view, build_batch, config_from_yaml
from tests._fault_helpers import tmpfs
from tests.conftest import wait_for

TS = 1_704_067_200_123_456_789  # 2024-01-01T00:00:00.123456789Z


class Clock:
    """Monotonic time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sink_config(base: Path, body: str) -> FileSinkConfig:
    """The config of sink ``out`` from a YAML flow mapping, as ``logcap run`` parses it."""
    text = f"sources:\n  app: {{type: file, include: ['*.log']}}\nsinks:\n  out: {body}\n"
    config = config_from_yaml(text, base).sinks["out"]
    assert isinstance(config, FileSinkConfig)
    return config


def make_sink(base: Path, body: str, clock: Clock | None = None) -> FileSink:
    return FileSink(sink_config(base, body), NullBlock(), clock or Clock())


def batch(messages: list[str], source: str = "app", labels: dict[str, str] | None = None) -> bytes:
    return build_batch([(source, TS, messages)], labels)[0]


def payload(slot: bytes) -> bytes:
    return bytes(batch_view(slot).payload)


def family(path: Path) -> list[str]:
    """Names of ``path`` and its rotated files, sorted."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


def decompress(path: Path) -> bytes:
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    return path.read_bytes()


def rotation_number(path: Path) -> int:
    return int(path.name.split(".")[2])  # out.ndjson.<n>[.gz]


def all_content(path: Path) -> bytes:
    """Rotated files oldest first (decompressed), then the current file."""
    rotated = sorted(
        (p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")),
        key=rotation_number,
    )
    current = path.read_bytes() if path.exists() else b""
    return b"".join(decompress(p) for p in rotated) + current


# -- format: text -------------------------------------------------------------------------


def test_text_format_renders_the_template_once_per_entry(tmp_path: Path) -> None:
    sink = make_sink(
        tmp_path,
        "{type: file, path: out.log, format: text, "
        "text_template: '{timestamp} [{source}] {labels.host}{labels.absent} {{ {message} }}'}",
    )
    sink.write(batch_view(batch(["plain", 'quote " {braces} \\ 日本語'], labels={"host": "h1"})))
    sink.write(batch_view(batch(["two\nlines"], source="db", labels={"host": "h2"})))
    sink.close()
    stamp = "2024-01-01T00:00:00.123456789Z"
    assert (tmp_path / "out.log").read_text() == (
        f"{stamp} [app] h1 {{ plain }}\n"
        f'{stamp} [app] h1 {{ quote " {{braces}} \\ 日本語 }}\n'
        f"{stamp} [db] h2 {{ two\nlines }}\n"
    )


def test_text_format_routes_groups_to_files_like_json(tmp_path: Path) -> None:
    sink = make_sink(
        tmp_path,
        "{type: file, path: 'out/{source}.txt', format: text, text_template: '{message}'}",
    )
    slot = build_batch([("app", TS, ["a1", "a2"]), ("db", TS, ["d1"]), ("app", TS, ["a3"])])[0]
    sink.write(batch_view(slot))
    sink.close()
    assert (tmp_path / "out" / "app.txt").read_text() == "a1\na2\na3\n"
    assert (tmp_path / "out" / "db.txt").read_text() == "d1\n"


def test_text_rotation_counts_the_rendered_bytes(tmp_path: Path) -> None:
    sink = make_sink(
        tmp_path,
        "{type: file, path: out.txt, format: text, text_template: '{message}', "
        "max_file_bytes: 100}",
    )
    for i in range(10):
        sink.write(batch_view(batch([f"{i}" * 30])))  # 31 rendered bytes, ~200 as JSON
    sink.close()
    assert all_content(tmp_path / "out.txt") == b"".join(
        b"%s\n" % (b"%d" % i * 30) for i in range(10)
    )
    assert family(tmp_path / "out.txt") == ["out.txt", "out.txt.1", "out.txt.2", "out.txt.3"]


def test_json_format_is_the_default_and_writes_the_payload_as_it_is(tmp_path: Path) -> None:
    config = sink_config(tmp_path, "{type: file, path: out.ndjson}")
    assert config.format == "json"
    sink = FileSink(config)
    slot = batch(["as encoded", "\x00 日本"])
    sink.write(batch_view(slot))
    sink.close()
    assert (tmp_path / "out.ndjson").read_bytes() == payload(slot)


def test_an_output_file_removed_or_renamed_by_someone_else_is_begun_again(
    tmp_path: Path,
) -> None:
    sink = make_sink(tmp_path, "{type: file, path: out.ndjson}")
    first, second, third = batch(["first"]), batch(["second"]), batch(["third"])
    sink.write(batch_view(first))
    (tmp_path / "out.ndjson").unlink()  # an operator's clean-up, while the sink holds it
    sink.write(batch_view(second))  # not into the deleted file, where it would be lost
    (tmp_path / "out.ndjson").rename(tmp_path / "moved.ndjson")  # a rotation by hand
    sink.write(batch_view(third))
    sink.close()
    assert (tmp_path / "moved.ndjson").read_bytes() == payload(second)
    assert (tmp_path / "out.ndjson").read_bytes() == payload(third)


# -- rotate_every -------------------------------------------------------------------------


def test_rotate_every_rotates_a_file_opened_longer_ago_than_the_period(tmp_path: Path) -> None:
    clock = Clock()
    sink = make_sink(tmp_path, "{type: file, path: out.ndjson, rotate_every: 1h}", clock)
    slots = [batch([f"batch {i}"]) for i in range(4)]
    sink.write(batch_view(slots[0]))
    clock.advance(3599)
    sink.write(batch_view(slots[1]))  # not yet an hour since the file was opened
    clock.advance(2)
    sink.write(batch_view(slots[2]))  # an hour and a second: rotated first
    clock.advance(1800)
    sink.write(batch_view(slots[3]))  # the new file is half an hour old
    sink.close()
    assert (tmp_path / "out.ndjson.1").read_bytes() == payload(slots[0]) + payload(slots[1])
    assert (tmp_path / "out.ndjson").read_bytes() == payload(slots[2]) + payload(slots[3])


def test_rotate_every_counts_from_when_the_sink_first_opened_an_existing_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "out.ndjson").write_bytes(b'{"from":"an earlier run"}\n')
    os.utime(tmp_path / "out.ndjson", (0, 0))  # however old the file looks
    clock = Clock()
    counters = NullBlock()
    sink = FileSink(
        sink_config(tmp_path, "{type: file, path: out.ndjson, rotate_every: 10m}"), counters, clock
    )
    sink.write(batch_view(batch(["first"])))
    clock.advance(IDLE_CLOSE_SECONDS + 1)
    sink.flush()  # idle: the file is closed ...
    assert sink._files == {}
    clock.advance(599 - IDLE_CLOSE_SECONDS - 1)
    sink.write(batch_view(batch(["second"])))  # ... and reopened: still its first period
    assert counters.get(Counter.ROTATIONS) == 0
    clock.advance(1)
    sink.write(batch_view(batch(["third"])))
    sink.close()
    assert counters.get(Counter.ROTATIONS) == 1
    assert family(tmp_path / "out.ndjson") == ["out.ndjson", "out.ndjson.1"]
    assert b"earlier run" in (tmp_path / "out.ndjson.1").read_bytes()


# -- compression and retention ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_rotated_files_are_compressed_and_their_originals_removed(
    tmp_path: Path, kind: str
) -> None:
    sink = make_sink(
        tmp_path, f"{{type: file, path: out.ndjson, max_file_bytes: 2000, compression: {kind}}}"
    )
    slots = [batch([f"batch {i} entry {j} " + "z" * 100 for j in range(5)]) for i in range(8)]
    for slot in slots:
        sink.write(batch_view(slot))
    assert sink.housekeeper.wait_idle(30)
    sink.close()
    suffix = {"gzip": ".gz", "zstd": ".zst"}[kind]
    names = family(tmp_path / "out.ndjson")
    assert names == ["out.ndjson"] + [f"out.ndjson.{n}{suffix}" for n in range(1, 8)]
    assert all_content(tmp_path / "out.ndjson") == b"".join(map(payload, slots))
    assert sink.housekeeper.compressed == 7


def test_max_files_keeps_the_newest_rotated_files(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, "{type: file, path: out.ndjson, max_file_bytes: 300, max_files: 3}")
    slots = [batch([f"batch {i} " + "m" * 150]) for i in range(10)]
    for slot in slots:
        sink.write(batch_view(slot))
    assert sink.housekeeper.wait_idle(30)
    sink.close()
    names = family(tmp_path / "out.ndjson")
    assert names == ["out.ndjson", "out.ndjson.7", "out.ndjson.8", "out.ndjson.9"]
    assert all_content(tmp_path / "out.ndjson") == b"".join(map(payload, slots[6:]))
    assert sink.housekeeper.deleted == 6


def test_max_files_and_compression_apply_to_files_left_by_an_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "logs" / "app.ndjson"
    out.parent.mkdir()
    for n in range(1, 6):
        (tmp_path / "logs" / f"app.ndjson.{n}").write_bytes(b'{"n":%d}\n' % n)
    (tmp_path / "logs" / "app.ndjson.bak").write_bytes(b"not ours\n")
    sink = make_sink(
        tmp_path,
        "{type: file, path: 'logs/{source}.ndjson', max_file_bytes: 1MiB, max_files: 2, "
        "compression: gzip}",
    )
    assert sink.housekeeper.wait_idle(30)  # at start, before anything was written
    sink.close()
    assert family(out) == ["app.ndjson.4.gz", "app.ndjson.5.gz", "app.ndjson.bak"]
    assert gzip.decompress((out.parent / "app.ndjson.5.gz").read_bytes()) == b'{"n":5}\n'


def test_interrupted_compressions_are_finished_on_start(tmp_path: Path) -> None:
    # what a crash leaves: (1) a partial temporary beside its intact original, (2) the
    # compressed file renamed into place but its original not yet deleted; and (3) a
    # rotated file never compressed, under a time-templated path no longer written to
    day = tmp_path / "2023-12-31"
    day.mkdir()
    one, two, three = (b"%d\n" % n * 5000 for n in (1, 2, 3))
    (day / "app.ndjson.1").write_bytes(one)
    (day / "app.ndjson.1.gz.tmp").write_bytes(gzip.compress(one)[:100])
    (day / "app.ndjson.2").write_bytes(two)
    (day / "app.ndjson.2.gz").write_bytes(gzip.compress(two))
    (day / "app.ndjson.3").write_bytes(three)
    sink = make_sink(
        tmp_path,
        "{type: file, path: '%Y-%m-%d/{source}.ndjson', rotate_every: 1d, compression: gzip}",
    )
    assert sink.housekeeper.wait_idle(30)
    sink.close()
    assert family(day / "app.ndjson") == [
        "app.ndjson.1.gz",
        "app.ndjson.2.gz",
        "app.ndjson.3.gz",
    ]
    assert [decompress(day / f"app.ndjson.{n}.gz") for n in (1, 2, 3)] == [one, two, three]


def test_crash_leftovers_are_cleaned_up_even_with_compression_now_off(tmp_path: Path) -> None:
    (tmp_path / "out.ndjson.4").write_bytes(b"kept\n")
    (tmp_path / "out.ndjson.4.zst.tmp").write_bytes(b"partial")
    (tmp_path / "out.ndjson.5").write_bytes(b"five\n")
    (tmp_path / "out.ndjson.5.gz").write_bytes(gzip.compress(b"five\n"))
    sink = make_sink(tmp_path, "{type: file, path: out.ndjson}")
    assert sink.housekeeper.wait_idle(30)
    sink.close()
    assert family(tmp_path / "out.ndjson") == ["out.ndjson.4", "out.ndjson.5.gz"]
    assert (tmp_path / "out.ndjson.4").read_bytes() == b"kept\n"


def test_a_stopped_compression_removes_its_temporary_and_keeps_the_original(
    tmp_path: Path,
) -> None:
    source = tmp_path / "out.ndjson.1"
    source.write_bytes(b"x" * 3_000_000)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        compress_file(str(source), "gzip", stop)
    assert family(source) == ["out.ndjson.1"]
    assert source.read_bytes() == b"x" * 3_000_000


def test_rotated_file_survives_a_kill_during_its_compression(tmp_path: Path) -> None:
    source = tmp_path / "out.ndjson.1"
    data = os.urandom(24 * 2**20)  # incompressible: gzip takes a while over it
    source.write_bytes(data)
    script = textwrap.dedent(
        f"""
        import threading
        from logcap.sinks.file.compress import compress_file
        compress_file({str(source)!r}, "gzip", threading.Event())
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        temporary = tmp_path / "out.ndjson.1.gz.tmp"
        finished = tmp_path / "out.ndjson.1.gz"
        wait_for(lambda: temporary.exists() or finished.exists(), 30, "the compression to start")
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    # whenever the kill landed, one complete copy is there under a final name
    assert source.exists() or finished.exists()
    if source.exists():
        assert source.read_bytes() == data
    else:
        assert gzip.decompress(finished.read_bytes()) == data
    sink = make_sink(
        tmp_path, "{type: file, path: out.ndjson, max_file_bytes: 1MiB, compression: gzip}"
    )
    assert sink.housekeeper.wait_idle(60)
    sink.close()
    assert family(tmp_path / "out.ndjson") == ["out.ndjson.1.gz"]
    assert gzip.decompress(finished.read_bytes()) == data


def test_new_rotations_never_reuse_a_number_taken_by_a_compressed_file(tmp_path: Path) -> None:
    (tmp_path / "out.ndjson.6.gz").write_bytes(gzip.compress(b"six\n"))
    (tmp_path / "out.ndjson").write_bytes(b"z" * 500 + b"\n")
    sink = make_sink(
        tmp_path, "{type: file, path: out.ndjson, max_file_bytes: 600, compression: gzip}"
    )
    sink.write(batch_view(batch(["y" * 200])))
    assert sink.housekeeper.wait_idle(30)
    sink.close()
    assert family(tmp_path / "out.ndjson") == ["out.ndjson", "out.ndjson.6.gz", "out.ndjson.7.gz"]
    assert decompress(tmp_path / "out.ndjson.7.gz") == b"z" * 500 + b"\n"


# -- fsync ------------------------------------------------------------------------------


def test_fsync_batch_syncs_every_written_file_and_new_directory_entry_before_flush_returns(
    tmp_path: Path,
) -> None:
    sink = make_sink(tmp_path, "{type: file, path: 'out/{source}.ndjson', fsync: batch}")
    slot = build_batch([("app", TS, ["a"]), ("db", TS, ["d"])])[0]
    sink.write(batch_view(slot))
    assert sink.fsyncs == 0  # written, not yet synced
    assert sink.flush() == []
    assert sink.fsyncs == 3  # app.ndjson, db.ndjson, and the directory that names them
    sink.write(batch_view(batch(["again"])))
    assert sink.flush() == []
    assert sink.fsyncs == 4  # only the file written since
    assert sink.flush() == []
    assert sink.fsyncs == 4  # nothing written, nothing to sync
    sink.close()
    assert sink.fsyncs == 4


def test_fsync_never_makes_no_fsync_calls(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, "{type: file, path: out.ndjson, max_file_bytes: 300}")
    for i in range(5):
        sink.write(batch_view(batch([f"{i} " + "n" * 200])))
        sink.flush()
    sink.close()
    assert sink.fsyncs == 0
    assert len(family(tmp_path / "out.ndjson")) == 5  # rotations happened, unsynced


def test_fsync_interval_syncs_at_the_first_flush_after_the_interval(tmp_path: Path) -> None:
    clock = Clock()
    sink = make_sink(
        tmp_path, "{type: file, path: out.ndjson, fsync: interval, fsync_interval: 2s}", clock
    )
    sink.write(batch_view(batch(["a"])))
    sink.flush()
    assert sink.fsyncs == 0
    clock.advance(1.5)
    sink.write(batch_view(batch(["b"])))
    sink.flush()
    assert sink.fsyncs == 0
    clock.advance(0.5)
    sink.write(batch_view(batch(["c"])))
    sink.flush()
    assert sink.fsyncs == 2  # the file and its new directory entry
    clock.advance(0.5)
    sink.write(batch_view(batch(["d"])))
    sink.flush()
    assert sink.fsyncs == 2
    sink.close()  # what is written is synced before the file is closed
    assert sink.fsyncs == 3


def test_fsync_before_a_rotation_covers_the_file_rotated_away(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, "{type: file, path: out.ndjson, fsync: batch, max_file_bytes: 300}")
    sink.write(batch_view(batch(["a" * 200])))
    sink.write(batch_view(batch(["b" * 200])))  # rotates: the first file is synced first
    assert sink.fsyncs == 1
    assert sink.flush() == []
    assert sink.fsyncs == 3  # the new file and the directory (rename, creation)
    sink.close()


def test_failed_fsync_fails_the_batches_written_to_that_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.ndjson")  # a FIFO takes writes but cannot be synced
    sink = make_sink(tmp_path, "{type: file, path: '{source}.ndjson', fsync: batch}")
    reader = os.open(tmp_path / "pipe.ndjson", os.O_RDONLY | os.O_NONBLOCK)
    try:
        sink.write(batch_view(batch(["to a regular file"], source="app")))
        sink.write(batch_view(batch(["to the pipe"], source="pipe")))
        sink.write(batch_view(batch(["regular again"], source="app")))
        failed = sink.flush()
        assert [index for index, _ in failed] == [1]
        assert isinstance(failed[0][1], Permanent)
        assert "syncing" in str(failed[0][1])
        assert b"to the pipe" in os.read(reader, 65536)
    finally:
        sink.close()
        os.close(reader)


# -- a disk that fills up ---------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that really fills up."""
    with tmpfs(tmp_path / "tiny", "64k") as mount:
        yield mount


def test_a_tmpfs_that_cannot_be_mounted_fails_the_disk_full_tests_rather_than_skip_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"  # a `mount` that fails like an unprivileged one
    bin_dir.mkdir()
    (bin_dir / "mount").write_text("#!/bin/sh\necho 'mount: only root can do that' >&2\nexit 1\n")
    (bin_dir / "mount").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(BaseException) as outcome, tmpfs(tmp_path / "disk", "64k"):
        pass
    assert outcome.type is pytest.fail.Exception, "a missing prerequisite must fail the test"
    assert "only root can do that" in str(outcome.value)


@pytest.mark.parametrize(
    "body",
    [
        "{type: file, path: out.log}",
        "{type: file, path: out.log, format: text, text_template: '{source} {message}'}",
    ],
    ids=["json", "text"],
)
def test_full_disk_is_retryable_leaves_no_torn_entry_and_the_retry_is_written_once(
    tiny_fs: Path, body: str
) -> None:
    sink = make_sink(tiny_fs, body)
    written: list[bytes] = []
    failed: bytes | None = None
    try:
        for i in range(100):
            slot = batch([f"batch {i} entry {j} " + "f" * 100 for j in range(30)])
            try:
                sink.write(batch_view(slot))
            except Retryable as exc:
                assert exc.code == "disk_full"
                failed = slot
                break
            written.append(slot)
        assert failed is not None and written, "the 64 KiB disk should fill part way"
        before = (tiny_fs / "out.log").read_bytes()
        assert before.endswith(b"\n")
        assert before.count(b"\n") == 30 * len(written)  # whole batches, nothing torn
        (tiny_fs / "out.log").write_bytes(b"")  # the operator frees space
        sink.write(batch_view(failed))  # the same batch again, as the retry does
    finally:
        sink.close()
    after = (tiny_fs / "out.log").read_bytes()
    assert after.count(b"batch %d entry" % len(written)) == 30
    assert after.count(b"\n") == 30


def test_full_disk_during_compression_keeps_the_rotated_file_until_space_is_freed(
    tiny_fs: Path,
) -> None:
    rotated = tiny_fs / "out.ndjson.1"
    data = os.urandom(20_000).hex().encode()  # 40 KB that gzip cannot halve
    rotated.write_bytes(data)
    (tiny_fs / "filler").write_bytes(b"\0" * 16_000)
    body = "{type: file, path: out.ndjson, max_file_bytes: 1MiB, compression: gzip}"
    sink = make_sink(tiny_fs, body)
    assert sink.housekeeper.wait_idle(30)
    sink.close()
    assert sink.housekeeper.failures == 1
    assert family(tiny_fs / "out.ndjson") == ["out.ndjson.1"]
    assert rotated.read_bytes() == data
    (tiny_fs / "filler").unlink()
    sink = make_sink(tiny_fs, body)  # the next start (or rotation) tries again
    assert sink.housekeeper.wait_idle(30)
    sink.close()
    assert family(tiny_fs / "out.ndjson") == ["out.ndjson.1.gz"]
    assert decompress(tiny_fs / "out.ndjson.1.gz") == data


# -- config -----------------------------------------------------------------------------


def test_every_file_sink_key_reaches_the_sink(tmp_path: Path) -> None:
    config = sink_config(
        tmp_path,
        "{type: file, path: 'out/{source}.log', format: text, text_template: '{message}', "
        "max_file_bytes: 1MiB, rotate_every: 1h, compression: zstd, max_files: 4, "
        "fsync: interval, fsync_interval: 250ms, inputs: [app], "
        "when: {field: level, in: [error]}}",
    )
    assert msgspec.structs.asdict(config) | {"circuit_breaker": None, "when": None} == {
        "path": str(tmp_path / "out" / "{source}.log"),
        "format": "text",
        "text_template": "{message}",
        "max_file_bytes": 2**20,
        "rotate_every": 3600.0,
        "compression": "zstd",
        "max_files": 4,
        "fsync": "interval",
        "fsync_interval": 0.25,
        "circuit_breaker": None,
        "inputs": ["app"],
        "when": None,  # compared below
    }
    assert config.when is not None and config.when.in_ == ["error"]
    sink = build_sink(config, NullBlock())
    assert isinstance(sink, FileSink)
    sink.close()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{type: file, path: x, rotate_evry: 1h}", "unknown key 'rotate_evry'"),
        ("{type: file, path: x, format: xml}", "'xml' is not one of json, text"),
        ("{type: file, path: x, format: text}", "format: text needs a text_template"),
        ("{type: file, path: x, text_template: '{message}'}", "only used with format: text"),
        (
            "{type: file, path: x, format: text, text_template: '{msg}'}",
            "unknown field {msg} in text_template",
        ),
        (
            "{type: file, path: x, format: text, text_template: 'a } b'}",
            "single '}' in text_template",
        ),
        ("{type: file, path: x, format: text, text_template: ''}", "length >= 1"),
        ("{type: file, path: x, rotate_every: 0s}", "greater than 0"),
        ("{type: file, path: x, rotate_every: soon}", "expected a duration"),
        ("{type: file, path: x, compression: gzip}", "need max_file_bytes or rotate_every"),
        ("{type: file, path: x, max_files: 3}", "need max_file_bytes or rotate_every"),
        (
            "{type: file, path: x, rotate_every: 1h, compression: lz4}",
            "'lz4' is not one of none, gzip, zstd",
        ),
        ("{type: file, path: x, rotate_every: 1h, max_files: 0}", ">= 1"),
        ("{type: file, path: x, fsync: always}", "'always' is not one of never, batch, interval"),
        ("{type: file, path: x, fsync: interval, fsync_interval: 0ms}", "greater than 0"),
        ("{type: file, path: x, max_file_bytes: lots}", "expected a size"),
    ],
)
def test_file_sink_config_errors(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        sink_config(tmp_path, body)
    assert problem in str(caught.value)
    assert "sinks.out" in str(caught.value)


def test_text_renderer_fields() -> None:
    slot = build_batch([("src", TS, ["m"])], {"host": "h", "a.b": "dotted"})[0]
    entries = batch_view(slot).payload
    renderer = TextRenderer("{ingested_at}|{source}|{labels.a.b}|{ labels.host }|{message}")
    line = renderer.render(entries).decode()
    assert line == "2024-01-01T00:00:00.123456789Z|src|dotted|h|m\n"
    assert json.loads(bytes(entries))["labels"] == {"host": "h", "a.b": "dotted"}


def test_a_text_template_renders_level_and_fields_from_pipelines() -> None:
    from logcap.sinks.file.text import TextRenderer

    renderer = TextRenderer("{level}|{fields.user.id}|{fields.tags}|{fields.none}|{message}")
    lines = (
        b'{"timestamp":"t","ingested_at":"t","source":"s","labels":{},"level":"error",'
        b'"fields":{"user":{"id":7},"tags":["a"]},"message":"m1"}\n'
        b'{"timestamp":"t","ingested_at":"t","source":"s","labels":{},"message":"m2"}\n'
    )
    assert renderer.render(memoryview(lines)) == b'error|7|["a"]||m1\n||||m2\n'


def test_a_path_template_renders_level_labels_and_fields_one_name_each(tmp_path: Path) -> None:
    """'{level}', '{labels.x}', '{fields.x}' in a path: the group's values (the dispatcher
    cut groups by the fields), 'unknown' when it lacks one, and never a '/' or a '..'
    that would leave the directory."""
    from logcap.dispatch.batch import Group
    from logcap.sinks.file.rotation import families

    template = str(tmp_path / "{level}" / "{labels.host}-{fields.svc}.log")
    sink = FileSink(FileSinkConfig(path=template))
    group = Group("app", {"host": "h1"}, 0, 1, 1, [], 0, "error", {"svc": "web"})
    assert sink.render(group) == str(tmp_path / "error" / "h1-web.log")
    assert sink.render(Group("app", {}, 0, 1, 1)) == str(tmp_path / "unknown/unknown-unknown.log")
    climbing = Group("app", {"host": ".."}, 0, 1, 1, [], 0, "..", {"svc": "../../etc/passwd"})
    assert sink.render(climbing) == str(tmp_path / "__" / "__-.._.._etc_passwd.log")
    # rotated files of every rendered name are found at start, whatever the placeholders
    rotated = tmp_path / "error" / "h1-web.log.1"
    rotated.parent.mkdir()
    rotated.write_text("x\n")
    assert families(template) == {str(tmp_path / "error" / "h1-web.log")}
