"""Sinks (sinks/): the file sink's bytes, templates, appends and rotation, how OS errors map
to Retryable / Permanent, the console and blackhole sinks, and SinkRunner's contract:
deliver in order, release the ring cursor only after ``write`` returned, retry without
skipping.

Batches are laid out by hand from the format documented in dispatch/batch.py (see
``_component_helpers.build_batch``); the runner tests read them from a real batch ring.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _component_helpers import (
    RingFactory,
    batch_view,
    build_batch,
    config_from_yaml,
    publish_batch,
    ring_fixture,
)

from logcap.dispatch.batch import Batch
from logcap.errors import DeliveryError, Permanent, Retryable
from logcap.metrics import Counter, CounterBlock, NullBlock
from logcap.ringbuf import Consumer, Producer, Ring, SleepWait
from logcap.sinks.base import SinkRunner
from logcap.sinks.blackhole import BlackholeSink
from logcap.sinks.config import SinkConfig
from logcap.sinks.console import ConsoleSink
from logcap.sinks.file.sink import FileSink
from logcap.sinks.registry import build_sink
from tests._fault_helpers import tmpfs

TS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z


@pytest.fixture
def rings() -> Iterator[RingFactory]:
    yield from ring_fixture()


def sink_config(tmp_path: Path, body: str) -> SinkConfig:
    """The config of sink ``out`` given as a YAML flow mapping."""
    text = f"sources:\n  app: {{type: file, include: ['*.log']}}\nsinks:\n  out: {body}\n"
    return config_from_yaml(text, tmp_path).sinks["out"]


def file_sink(tmp_path: Path, body: str, counters: CounterBlock | None = None) -> FileSink:
    sink = build_sink(sink_config(tmp_path, body), counters or NullBlock())
    assert isinstance(sink, FileSink)
    return sink


def ns(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """A UTC wall-clock time in nanoseconds."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000


def one_group_batch(messages: list[str], source: str = "app", ts: int = TS) -> bytes:
    return build_batch([(source, ts, messages)])[0]


def payload_of(slot: bytes) -> bytes:
    return bytes(batch_view(slot).payload)


def whole_entries(data: bytes) -> list[dict[str, object]]:
    """Parse NDJSON, insisting that it ends with a complete line."""
    assert data.endswith(b"\n") or data == b""
    return [json.loads(line) for line in data.splitlines()]


# -- file sink: bytes and paths ----------------------------------------------------------


def test_file_sink_writes_the_payload_bytes_exactly(tmp_path: Path) -> None:
    sink = file_sink(tmp_path, "{type: file, path: out/all.ndjson}")
    slots = [
        one_group_batch(["first", 'quote " and \\ backslash', "tab\tend"]),
        build_batch([("app", TS, ["a"]), ("db", TS + 5, ["d1", "d2"]), ("app", TS, ["b"])])[0],
        one_group_batch(["\x00\x1b ctrl", "日本語 🎉", ""]),
    ]
    for slot in slots:
        sink.write(batch_view(slot))
    sink.close()
    content = (tmp_path / "out" / "all.ndjson").read_bytes()
    assert content == b"".join(payload_of(s) for s in slots)
    assert [e["message"] for e in whole_entries(content)][-3:] == ["\x00\x1b ctrl", "日本語 🎉", ""]


def test_source_and_time_templates_route_groups_to_files_in_utc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a local zone 14 hours ahead of UTC would move every file to the next day
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    try:
        sink = file_sink(tmp_path, "{type: file, path: 'out/{source}/%Y/%m-%d_%H.ndjson'}")
        groups = [
            ("app", ns(2024, 1, 1, 23, 59, 59) + 500, ["a1", "a2"]),
            ("app", ns(2024, 1, 2, 0, 0, 0) + 1, ["a3"]),
            ("db", ns(2024, 1, 1, 12, 0, 0), ["d1"]),
            ("app", ns(2024, 1, 1, 23, 59, 59) + 900, ["a4"]),
        ]
        slot, meta = build_batch(groups)
        batch = batch_view(slot)
        pieces = [bytes(piece.data) for piece in batch.groups()]
        sink.write(batch)
        sink.close()
    finally:
        monkeypatch.undo()
        time.tzset()
    out = tmp_path / "out"
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "app/2024/01-01_23.ndjson",
        "app/2024/01-02_00.ndjson",
        "db/2024/01-01_12.ndjson",
    ]
    assert (out / "app/2024/01-01_23.ndjson").read_bytes() == pieces[0] + pieces[3]
    assert (out / "app/2024/01-02_00.ndjson").read_bytes() == pieces[1]
    assert (out / "db/2024/01-01_12.ndjson").read_bytes() == pieces[2]
    assert meta.count == 5


def test_second_file_sink_instance_appends_to_existing_files(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    out.write_bytes(b'{"earlier":"run"}\n')
    first, second = one_group_batch(["one"]), one_group_batch(["two", "three"])
    sink = file_sink(tmp_path, "{type: file, path: out.ndjson}")
    sink.write(batch_view(first))
    sink.close()
    restarted = file_sink(tmp_path, "{type: file, path: out.ndjson}")  # after a restart
    restarted.write(batch_view(second))
    restarted.close()
    assert out.read_bytes() == b'{"earlier":"run"}\n' + payload_of(first) + payload_of(second)


# -- file sink: rotation ----------------------------------------------------------------


def rotated_files(path: Path) -> list[Path]:
    """``path.1``, ``path.2``… in rotation order, then ``path`` itself."""
    numbered = sorted(
        (p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")),
        key=lambda p: int(p.name.rsplit(".", 1)[1]),
    )
    return [*numbered, path]


def test_size_rotation_numbers_files_and_never_splits_an_entry(tmp_path: Path) -> None:
    counters = NullBlock()
    sink = file_sink(tmp_path, "{type: file, path: out/app.ndjson, max_file_bytes: 1000}", counters)
    slots = [one_group_batch([f"entry {i:02d} " + "x" * 80]) for i in range(10)]
    slots.append(one_group_batch(["a batch larger than max_file_bytes " + "y" * 1500]))
    slots.append(one_group_batch(["after the big one"]))
    for slot in slots:
        sink.write(batch_view(slot))
    sink.close()

    files = rotated_files(tmp_path / "out" / "app.ndjson")
    assert [p.name for p in files[:3]] == ["app.ndjson.1", "app.ndjson.2", "app.ndjson.3"]
    assert b"".join(p.read_bytes() for p in files) == b"".join(map(payload_of, slots))
    for path in files:
        whole_entries(path.read_bytes())  # every file holds whole entries only
    # a rotated file stays within the limit unless one batch alone exceeds it
    sizes = [p.stat().st_size for p in files]
    assert all(size <= 1000 for size in sizes if size != len(payload_of(slots[10])))
    assert len(payload_of(slots[10])) in sizes
    assert counters.get(Counter.ROTATIONS) == len(files) - 1


def test_rotation_continues_after_the_highest_existing_number(tmp_path: Path) -> None:
    out = tmp_path / "app.ndjson"
    (tmp_path / "app.ndjson.1").write_bytes(b"old 1\n")
    (tmp_path / "app.ndjson.7").write_bytes(b"old 7\n")
    (tmp_path / "app.ndjson.bak").write_bytes(b"unrelated\n")
    out.write_bytes(b"z" * 900 + b"\n")  # the current file is already near the limit
    sink = file_sink(tmp_path, "{type: file, path: app.ndjson, max_file_bytes: 1000}")
    slot = one_group_batch(["does not fit behind the existing content"])
    sink.write(batch_view(slot))
    sink.close()
    assert (tmp_path / "app.ndjson.8").read_bytes() == b"z" * 900 + b"\n"
    assert out.read_bytes() == payload_of(slot)
    assert (tmp_path / "app.ndjson.1").read_bytes() == b"old 1\n"


# -- file sink: errors ------------------------------------------------------------------


def test_parent_that_is_a_regular_file_is_a_retryable_error_that_names_it(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_bytes(b"")
    sink = file_sink(tmp_path, "{type: file, path: not-a-dir/sub/out.ndjson}")
    with pytest.raises(Retryable) as info:
        sink.write(batch_view(one_group_batch(["x"])))
    assert "not-a-dir" in str(info.value) and "Not a directory" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    (tmp_path / "not-a-dir").unlink()  # the operator's fix: the same sink delivers
    sink.write(batch_view(one_group_batch(["x"])))
    sink.close()
    assert (tmp_path / "not-a-dir" / "sub" / "out.ndjson").read_bytes().count(b"\n") == 1


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a disk that really fills up (a mount that fails fails the test)."""
    with tmpfs(tmp_path / "small", "256k") as mount:
        yield mount


def fill_until_retryable(sink: FileSink) -> tuple[list[bytes], bytes]:
    """Write ~20 KB batches until the disk is full; (payloads written, the failed slot)."""
    written: list[bytes] = []
    for i in range(100):
        slot = one_group_batch([f"batch {i} entry {j} " + "f" * 150 for j in range(100)])
        try:
            sink.write(batch_view(slot))
        except Retryable as exc:
            assert "No space left" in str(exc)
            return written, slot
        written.append(payload_of(slot))
    raise AssertionError("a 256 KiB file system never filled up")


def test_disk_full_is_retryable_and_delivery_resumes_once_space_is_freed(
    small_fs: Path,
) -> None:
    (small_fs / "filler").write_bytes(b"\0" * 100_000)
    sink = file_sink(small_fs, "{type: file, path: out.ndjson}")
    try:
        written, failed = fill_until_retryable(sink)
        assert written  # the disk filled up part way, not at once
        (small_fs / "filler").unlink()
        sink.write(batch_view(failed))  # what SinkRunner does: the same batch again
    finally:
        sink.close()
    content = (small_fs / "out.ndjson").read_bytes()
    assert content.startswith(b"".join(written))
    assert content.endswith(payload_of(failed))


def test_disk_full_leaves_no_partial_entry_behind(small_fs: Path) -> None:
    (small_fs / "filler").write_bytes(b"\0" * 100_000)
    sink = file_sink(small_fs, "{type: file, path: out.ndjson}")
    try:
        written, failed = fill_until_retryable(sink)
        (small_fs / "filler").unlink()
        sink.write(batch_view(failed))
    finally:
        sink.close()
    content = (small_fs / "out.ndjson").read_bytes()
    assert content == b"".join(written) + payload_of(failed)


# -- console and blackhole --------------------------------------------------------------


def test_console_sink_writes_ndjson_to_its_fd_even_past_a_pipe_buffer(tmp_path: Path) -> None:
    sink = build_sink(sink_config(tmp_path, "{type: console}"), NullBlock())
    assert isinstance(sink, ConsoleSink)
    read_end, write_end = os.pipe()
    sink.fd = write_end
    received = bytearray()

    def reader() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    # 300 KB: more than a pipe holds, so the sink must finish short writes
    slots = [one_group_batch([f"{i}/{j} " + "c" * 1000 for j in range(100)]) for i in range(3)]
    try:
        for slot in slots:
            sink.write(batch_view(slot))
    finally:
        os.close(write_end)
        thread.join(10)
        os.close(read_end)
    assert bytes(received) == b"".join(map(payload_of, slots))
    assert len(whole_entries(bytes(received))) == 300


def test_console_sink_to_a_closed_pipe_is_a_permanent_error(tmp_path: Path) -> None:
    sink = build_sink(sink_config(tmp_path, "{type: console, stream: stderr}"), NullBlock())
    assert isinstance(sink, ConsoleSink)
    read_end, write_end = os.pipe()
    os.close(read_end)
    sink.fd = write_end
    try:
        with pytest.raises(Permanent, match="stderr"):
            sink.write(batch_view(one_group_batch(["nobody reads this"])))
    finally:
        os.close(write_end)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_console_sink_writes_to_the_configured_stream(tmp_path: Path, stream: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from _component_helpers import batch_view, build_batch, config_from_yaml
        from logcap.sinks.registry import build_sink
        from logcap.metrics import NullBlock
        config = config_from_yaml(
            "sources: {{app: {{type: file, include: [x]}}}}\\n"
            "sinks: {{out: {{type: console, stream: {stream}}}}}\\n",
            Path("."),
        )
        sink = build_sink(config.sinks["out"], NullBlock())
        sink.write(batch_view(build_batch([("app", 0, ["to {stream}", "second"])])[0]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=True, cwd=tmp_path
    )
    out, other = (done.stdout, done.stderr) if stream == "stdout" else (done.stderr, done.stdout)
    assert [e["message"] for e in whole_entries(out)] == [f"to {stream}", "second"]
    assert other == b""


def test_blackhole_sink_counts_entries(tmp_path: Path) -> None:
    sink = build_sink(sink_config(tmp_path, "{type: blackhole}"), NullBlock())
    assert isinstance(sink, BlackholeSink)
    sink.write(batch_view(one_group_batch(["a", "b", "c"])))
    sink.write(batch_view(build_batch([("app", TS, ["d"]), ("db", TS, ["e", "f"])])[0]))
    sink.flush()
    sink.close()
    assert sink.entries == 6


# -- SinkRunner -------------------------------------------------------------------------


class FlakySink:
    """A Sink that fails ``failures`` times, then delivers; notes the ring cursor it saw."""

    def __init__(self, ring: Ring, failures: int, error: type[Exception] = Retryable) -> None:
        self.ring = ring
        self.failures = failures
        self.error = error
        self.calls = 0
        self.delivered: list[bytes] = []
        self.cursor_seen: list[int] = []
        self.flushes = 0
        self.closed = False

    def write(self, batch: Batch) -> None:
        self.calls += 1
        self.cursor_seen.append(self.ring.consumer_cursor(0))
        if self.failures:
            self.failures -= 1
            raise self.error("the service is down")
        self.delivered.append(bytes(batch.payload))

    def flush(self) -> list[tuple[int, DeliveryError]]:
        self.flushes += 1
        return []

    def close(self) -> None:
        self.closed = True


def batch_ring_with(rings: RingFactory, slots: list[bytes]) -> tuple[Ring, Producer]:
    ring = rings.create(8, 64 * 1024, 1, "batches")
    producer = Producer(ring, wait=SleepWait())
    for slot in slots:
        publish_batch(producer, slot)
    return ring, producer


def test_runner_delivers_in_order_and_releases_only_after_write_and_flush(
    rings: RingFactory,
) -> None:
    slots = [one_group_batch([f"batch {i} line {j}" for j in range(i + 1)]) for i in range(3)]
    ring, _ = batch_ring_with(rings, slots)
    sink = FlakySink(ring, failures=0)
    counters = NullBlock()
    runner = SinkRunner("flaky", sink, Consumer(ring, 0), counters)
    assert runner.step(timeout=0)
    assert sink.delivered == [payload_of(s) for s in slots]
    # nothing is released while the run of batches is written: only after the flush (a
    # sink may buffer in write), so the cursor stood before all of them
    assert sink.cursor_seen == [-1, -1, -1]
    assert ring.consumer_cursor(0) == 2
    assert sink.flushes == 1
    assert counters.get(Counter.EVENTS_OUT) == 6
    assert counters.get(Counter.BATCHES) == 3
    assert counters.get(Counter.BYTES_OUT) == sum(map(len, sink.delivered))
    assert not runner.step(timeout=0)  # nothing new: idle


@pytest.mark.parametrize("error", [Retryable, Permanent])
def test_runner_retries_a_failing_sink_without_skipping_the_batch(
    rings: RingFactory, error: type[DeliveryError]
) -> None:
    slots = [one_group_batch(["first"]), one_group_batch(["second"])]
    ring, _ = batch_ring_with(rings, slots)
    sink = FlakySink(ring, failures=6, error=error)
    sleeps: list[float] = []
    counters = NullBlock()
    runner = SinkRunner(
        "flaky", sink, Consumer(ring, 0), counters, sleep=sleeps.append, max_backoff=0.3
    )
    assert runner.step(timeout=0)
    assert sink.delivered == [payload_of(s) for s in slots]
    assert sink.calls == 8
    assert sink.cursor_seen[:7] == [-1] * 7  # held at the failing batch the whole time
    assert sleeps == [0.05, 0.1, 0.2, 0.3, 0.3, 0.3]  # capped exponential backoff
    assert counters.get(Counter.ERRORS) == 6
    assert ring.consumer_cursor(0) == 1


def test_batch_is_redelivered_after_a_sink_crash_in_write(rings: RingFactory) -> None:
    slots = [one_group_batch(["survives the crash"])]
    ring, _ = batch_ring_with(rings, slots)
    crashing = FlakySink(ring, failures=1, error=RuntimeError)  # a bug, not a delivery error
    with pytest.raises(RuntimeError):
        SinkRunner("s", crashing, Consumer(ring, 0), NullBlock(), sleep=lambda _: None).step(0)
    assert ring.consumer_cursor(0) == -1

    restarted = FlakySink(ring, failures=0)  # the supervisor starts a new sink process
    SinkRunner("s", restarted, Consumer(ring, 0), NullBlock()).step(timeout=0)
    assert restarted.delivered == [payload_of(slots[0])]


def test_runner_run_drains_a_closed_ring_into_a_file_sink(
    tmp_path: Path, rings: RingFactory
) -> None:
    slots = [one_group_batch([f"{i}"]) for i in range(5)]
    ring, producer = batch_ring_with(rings, slots)
    producer.close()  # the dispatcher finished: the runner must stop once all is delivered
    sink = file_sink(tmp_path, "{type: file, path: out.ndjson}")
    counters = NullBlock()
    runner = SinkRunner("out", sink, Consumer(ring, 0), counters)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert (tmp_path / "out.ndjson").read_bytes() == b"".join(map(payload_of, slots))
    assert sink._files == {}  # run() closed the sink
    assert counters.get(Counter.EVENTS_OUT) == 5
