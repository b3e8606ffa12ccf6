"""The dispatcher (dispatch/dispatcher.py): collector records → NDJSON batches in the batch
ring, exactly-as-read messages, batch closing rules, splitting, the release order of
collector slots, checkpoints gated on every sink, and recovery after a restart.

Collector rings and the batch ring are real; records are written with the collector's
record layout (or by a real FileTailer), batches are read back with ``Batch.from_slot``.
Time is injected, so no test sleeps to reach a batch or checkpoint deadline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from _component_helpers import (
    ReadBatch,
    RingFactory,
    config_from_yaml,
    publish_block,
    read_batches,
    ring_fixture,
)

from logcap.capture._entries import write_entries
from logcap.capture._record import FLAG_TRUNCATED
from logcap.capture.file.collector import FileCollector
from logcap.capture.file.tailer import FileTailer
from logcap.config import Config
from logcap.dispatch.batch import Batch, meta_size_bound
from logcap.dispatch.bounds import largest_batch_bytes
from logcap.dispatch.checkpoint import CheckpointStore, FilePosition
from logcap.dispatch.dispatcher import Dispatcher, SourceInput
from logcap.dlq.record import DlqRecord, encode_record, file_header
from logcap.metrics import Counter, NullBlock
from logcap.plan import batch_slot_bytes
from logcap.ringbuf import Consumer, Producer, Ring, SleepWait

HOST = "test-host"
READ_NS = 1_700_000_000_123_456_789
READ_STAMP = "2023-11-14T22:13:20.123456789Z"


@pytest.fixture
def rings() -> Iterator[RingFactory]:
    yield from ring_fixture()


class FakeClock:
    """Monotonic time that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rig_config(
    tmp_path: Path, dispatcher: str, sources: str = "", buffer: str = "", extra: str = ""
) -> Config:
    sources = sources or "app: {type: file, include: ['*.log']}"
    text = (
        "data_dir: data\n"
        f"sources:\n  {sources}\n"
        "sinks:\n  out: {type: blackhole}\n"
        f"dispatcher: {dispatcher}\n"
    )
    if buffer:
        text += f"buffer: {buffer}\n"
    return config_from_yaml(text + extra, tmp_path)


class Rig:
    """Collector rings, a dispatcher and a batch ring with ``sinks`` consumer cursors."""

    def __init__(
        self,
        rings: RingFactory,
        config: Config,
        sinks: int = 1,
        batch_slot: int | None = None,
        batch_slots: int = 16,
    ) -> None:
        self.rings = rings
        self.config = config
        self.clock = FakeClock()
        self.collector_rings: dict[str, Ring] = {}
        self.producers: dict[str, Producer] = {}
        for name in config.sources:
            ring = rings.create(
                config.buffer.collector_slots, config.buffer.collector_slot_bytes, 1, f"src-{name}"
            )
            self.collector_rings[name] = ring
            self.producers[name] = Producer(ring, wait=SleepWait())
        if batch_slot is None:  # sized the way the supervisor sizes it
            batch_slot = batch_slot_bytes(config)
        self.batch_ring = rings.create(batch_slots, batch_slot, sinks, "batches")
        self.sinks = [Consumer(self.batch_ring, i) for i in range(sinks)]
        self.store = CheckpointStore(config.data_dir)
        self.source_counters = {name: NullBlock() for name in config.sources}
        self.counters = NullBlock()
        self.dispatcher = self.new_dispatcher()

    def new_dispatcher(
        self, fresh_mappings: bool = False, largest_batch: int | None = None
    ) -> Dispatcher:
        """A dispatcher on these rings; ``fresh_mappings`` attaches like a restarted process."""

        def mapped(ring: Ring) -> Ring:
            return self.rings.attach(ring) if fresh_mappings else ring

        inputs = [
            SourceInput(
                name=name,
                consumer=Consumer(mapped(ring), 0),
                counters=self.source_counters[name],
                max_line_bytes=getattr(
                    self.config.sources[name],
                    "max_line_bytes",
                    self.config.buffer.collector_slot_bytes,
                ),
                host=HOST,
            )
            for name, ring in self.collector_rings.items()
        ]
        return Dispatcher(
            self.config.dispatcher,
            inputs,
            Producer(mapped(self.batch_ring), wait=SleepWait()),
            self.counters,
            self.store,
            clock=self.clock,
            largest_batch=largest_batch,
        )

    def publish(
        self, data: bytes, source: str = "app", path: str = "/var/log/app.log", **header: int
    ) -> int:
        return publish_block(self.producers[source], path, data, **header)

    def step_until_idle(self) -> None:
        while self.dispatcher.step():
            pass

    def time_out_batch(self) -> None:
        """Let the open batch reach its timeout and be flushed."""
        self.clock.advance(self.config.dispatcher.batch_timeout)
        self.dispatcher.step()

    def batches(self, sink: int = 0, release: bool = True) -> list[ReadBatch]:
        return read_batches(self.sinks[sink], release)


def messages(batches: list[ReadBatch]) -> list[str]:
    return [e["message"] for b in batches for e in b.entries]


def lines_block(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


# -- entries -----------------------------------------------------------------------------

RAW_AND_EXPECTED = [
    (b"plain text", "plain text"),
    (b"with \"double quotes\" and 'single'", "with \"double quotes\" and 'single'"),
    (b"back\\slash and \\n that is not a newline", "back\\slash and \\n that is not a newline"),
    (b"tab\there\tand\vvertical", "tab\there\tand\vvertical"),
    (b"ctrl \x00\x01\x07\x1b[31mred\x1b[0m\x7f", "ctrl \x00\x01\x07\x1b[31mred\x1b[0m\x7f"),
    (
        "non-ASCII: héllo 日本語 🎉 \u2028 \u2029".encode(),
        "non-ASCII: héllo 日本語 🎉 \u2028 \u2029",
    ),
    (b"invalid \xff\xfe utf-8 \xc3( end", "invalid \ufffd\ufffd utf-8 \ufffd( end"),
    (b"", ""),
    (b"crlf line\r", "crlf line\r"),
    (b'{"already": "json"}', '{"already": "json"}'),
    (b"   ", "   "),
]


def test_entries_carry_timestamps_source_labels_and_the_message_as_read(
    tmp_path: Path, rings: RingFactory
) -> None:
    rig = Rig(rings, rig_config(tmp_path, "{batch_timeout: 1s}"))
    rig.publish(lines_block([raw for raw, _ in RAW_AND_EXPECTED]), read_ns=READ_NS)
    rig.dispatcher.step()
    rig.time_out_batch()

    (batch,) = rig.batches()
    # the payload is NDJSON: raw control characters never appear, only entry newlines
    assert not set(batch.payload.replace(b"\n", b"")) & set(range(0x20))
    assert batch.payload.count(b"\n") == len(RAW_AND_EXPECTED)
    assert batch.meta.count == len(RAW_AND_EXPECTED)
    # the expected stamp is computed independently of the encoder
    assert READ_STAMP.startswith(
        datetime.fromtimestamp(READ_NS // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    )
    for entry, (_, expected) in zip(batch.entries, RAW_AND_EXPECTED, strict=True):
        assert list(entry) == ["timestamp", "ingested_at", "source", "labels", "message"]
        assert entry == {
            "timestamp": READ_STAMP,
            "ingested_at": READ_STAMP,
            "source": "app",
            "labels": {"host": HOST, "path": "/var/log/app.log", "file_name": "app.log"},
            "message": expected,
        }


def test_groups_slice_the_payload_exactly(tmp_path: Path, rings: RingFactory) -> None:
    config = rig_config(
        tmp_path,
        "{batch_timeout: 1s}",
        sources="app: {type: file, include: ['a/*.log']}\n  db: {type: file, include: ['b/*']}",
    )
    rig = Rig(rings, config)
    rig.publish(b"a1\na2\n", path="/logs/a.log", read_ns=READ_NS)
    rig.publish(b"b1\n", path="/logs/b.log", read_ns=READ_NS + 1)
    rig.publish(b"a3 \xe2\x82\xac\n", path="/logs/a.log", read_ns=READ_NS + 2)
    rig.publish(b"d1\nd2\nd3\n", source="db", path="/db/slow.log", read_ns=READ_NS + 3)
    rig.dispatcher.step()
    rig.time_out_batch()

    (read,) = rig.batches()
    batch = Batch(read.meta, memoryview(read.payload))
    slices = list(batch.groups())
    assert [(s.group.source, s.group.labels["path"], s.group.count) for s in slices] == [
        ("app", "/logs/a.log", 2),
        ("app", "/logs/b.log", 1),
        ("app", "/logs/a.log", 1),
        ("db", "/db/slow.log", 3),
    ]
    assert b"".join(bytes(s.data) for s in slices) == read.payload
    assert sum(s.group.nbytes for s in slices) == len(read.payload)
    for piece in slices:
        entries = [json.loads(line) for line in bytes(piece.data).splitlines()]
        assert len(entries) == piece.group.count
        stamp = datetime.fromtimestamp(piece.group.timestamp_ns // 10**9, UTC)
        for entry in entries:
            assert entry["source"] == piece.group.source
            assert (
                entry["labels"]
                == piece.group.labels
                == {
                    "host": HOST,
                    "path": entry["labels"]["path"],
                    "file_name": entry["labels"]["path"].rsplit("/", 1)[1],
                }
            )
            assert entry["timestamp"].startswith(stamp.strftime("%Y-%m-%dT%H:%M:%S."))
            assert int(entry["timestamp"][-10:-1]) == piece.group.timestamp_ns % 10**9
    assert messages([read]) == ["a1", "a2", "b1", "a3 €", "d1", "d2", "d3"]


# -- closing batches ---------------------------------------------------------------------


def test_batch_closes_at_batch_max_events(tmp_path: Path, rings: RingFactory) -> None:
    rig = Rig(rings, rig_config(tmp_path, "{batch_max_events: 10, batch_timeout: 1s}"))
    lines = [b"line %d" % i for i in range(25)]
    rig.publish(lines_block(lines[:7]))
    rig.publish(lines_block(lines[7:]))
    rig.step_until_idle()

    full = rig.batches()
    assert [b.meta.count for b in full] == [10, 10]
    rig.time_out_batch()
    rest = rig.batches()
    assert [b.meta.count for b in rest] == [5]
    assert messages(full + rest) == [line.decode() for line in lines]


def test_batch_closes_at_batch_max_bytes(tmp_path: Path, rings: RingFactory) -> None:
    rig = Rig(rings, rig_config(tmp_path, "{batch_max_bytes: 4KiB, batch_timeout: 1s}"))
    lines = [b"%03d " % i + b"m" * 496 for i in range(40)]
    closed = []
    for line in lines:  # one line per block, as from a slowly written file
        rig.publish(line + b"\n")
        rig.dispatcher.step()
        closed += rig.batches()
    rig.time_out_batch()
    last = rig.batches()

    assert len(closed) >= 3
    for batch in closed:
        # a batch closes before the entry that would pass the limit (slot bytes: meta and
        # entries), not earlier: the next entry and its group's meta would not have fit
        entry = len(batch.payload.splitlines(keepends=True)[-1])
        assert 4096 - entry - 128 < batch.slot_length <= 4096
    assert [b.meta.count for b in closed].count(closed[0].meta.count) == len(closed)
    assert messages(closed + last) == [line.decode() for line in lines]


def test_batch_closes_at_batch_timeout_of_the_injected_clock(
    tmp_path: Path, rings: RingFactory
) -> None:
    rig = Rig(rings, rig_config(tmp_path, "{batch_timeout: 2s}"))
    rig.publish(b"one\ntwo\n")
    rig.dispatcher.step()
    assert rig.batches() == []
    assert 0 < rig.dispatcher.idle_timeout() <= 2.0

    rig.clock.advance(1.5)
    rig.publish(b"three\n")
    rig.dispatcher.step()
    assert rig.batches() == []  # the timeout counts from the batch's first entry

    rig.clock.advance(0.5)
    rig.dispatcher.step()
    (batch,) = rig.batches()
    assert messages([batch]) == ["one", "two", "three"]


# -- line length -------------------------------------------------------------------------


def test_overlong_lines_in_a_block_are_truncated_and_counted(
    tmp_path: Path, rings: RingFactory
) -> None:
    config = rig_config(
        tmp_path,
        "{batch_timeout: 1s}",
        sources="app: {type: file, include: ['*.log'], max_line_bytes: 64}",
        buffer="{collector_slot_bytes: 8KiB}",
    )
    rig = Rig(rings, config)
    ascii_block = [b"a" * 200, b"b" * 64, b"short"]
    multibyte = [
        "é" * 100,  # 2-byte characters: cut after 32 of them
        "€" * 50,  # 3-byte characters: 21 fit, the 22nd would be cut inside
        "😀" * 20,  # 4-byte characters: exactly 16 fit
        "x" + "😀" * 20,  # offset by one byte: 15 fit
        "ü" * 32,  # exactly 64 bytes: kept
        "ok",
    ]
    rig.publish(lines_block(ascii_block))
    rig.publish(lines_block([m.encode() for m in multibyte]))
    rig.dispatcher.step()
    rig.time_out_batch()

    got = messages(rig.batches())
    assert got == [
        "a" * 64,
        "b" * 64,
        "short",
        "é" * 32,
        "€" * 21,
        "😀" * 16,
        "x" + "😀" * 15,
        "ü" * 32,
        "ok",
    ]
    assert all(len(m.encode()) <= 64 for m in got)
    assert rig.source_counters["app"].get(Counter.LINES_TRUNCATED) == 5


def test_line_truncated_by_the_tailer_is_counted_and_later_lines_are_intact(
    tmp_path: Path, rings: RingFactory
) -> None:
    config = rig_config(
        tmp_path,
        "{batch_timeout: 1s}",
        sources="app: {type: file, include: ['*.log'], max_line_bytes: 1000}",
        buffer="{collector_slot_bytes: 8KiB}",
    )
    rig = Rig(rings, config)
    log = tmp_path / "app.log"
    log.write_bytes(b"before\n" + b"X" * 50_000 + b"\nafter\n")
    tailer = FileTailer(str(log), 0)
    try:
        while tailer.read_block(rig.producers["app"], 1000, NullBlock()):
            rig.dispatcher.step()
    finally:
        tailer.close()
    rig.time_out_batch()
    assert messages(rig.batches()) == ["before", "X" * 1000, "after"]
    assert rig.source_counters["app"].get(Counter.LINES_TRUNCATED) == 1


def test_multibyte_line_truncated_by_the_tailer_ends_on_a_character_and_counts_once(
    tmp_path: Path, rings: RingFactory
) -> None:
    config = rig_config(
        tmp_path,
        "{batch_timeout: 1s}",
        sources="app: {type: file, include: ['*.log'], max_line_bytes: 1000}",
        buffer="{collector_slot_bytes: 8KiB}",
    )
    rig = Rig(rings, config)
    log = tmp_path / "app.log"
    # 1000 bytes end inside a character in both lines (1 + 2*499 + 1, and 3*333 + 1)
    log.write_bytes(("x" + "é" * 30_000 + "\n" + "€" * 20_000 + "\nok\n").encode())
    tailer = FileTailer(str(log), 0)
    try:
        while tailer.read_block(rig.producers["app"], 1000, NullBlock()):
            rig.dispatcher.step()
    finally:
        tailer.close()
    rig.time_out_batch()
    assert messages(rig.batches()) == ["x" + "é" * 499, "€" * 333, "ok"]
    assert rig.source_counters["app"].get(Counter.LINES_TRUNCATED) == 2


# -- splitting ---------------------------------------------------------------------------


def test_batch_that_escapes_past_a_slot_is_split_not_lost(
    tmp_path: Path, rings: RingFactory
) -> None:
    config = rig_config(
        tmp_path,
        "{batch_max_bytes: 4KiB, batch_timeout: 1s}",
        sources="app: {type: file, include: ['*.log'], max_line_bytes: 64}",
        buffer="{collector_slot_bytes: 8KiB}",
    )
    # one escaped entry fits a slot, but not the 40 entries that count as ~9 KB unescaped
    slot = meta_size_bound(1, 1) + 4096
    rig = Rig(rings, config, batch_slot=slot, batch_slots=64)
    controls = [c for c in range(1, 32) if c != 0x0A]  # 6x escaped (\u00XX); not newline
    lines = [bytes([controls[i % len(controls)]]) * 60 for i in range(40)]
    rig.publish(lines_block(lines), end=5000)
    rig.step_until_idle()
    rig.time_out_batch()

    batches = rig.batches()
    assert len(batches) > 1
    assert sum(len(b.payload) for b in batches) > rig.batch_ring.slot_capacity
    assert all(b.slot_length <= rig.batch_ring.slot_capacity for b in batches)
    assert messages(batches) == [line.decode() for line in lines]
    assert rig.counters.get(Counter.EVENTS_OUT) == 40
    # only the batch holding the block's last line carries the file's progress
    assert [len(b.meta.progress) for b in batches[:-1]] == [0] * (len(batches) - 1)
    assert [p.offset for p in batches[-1].meta.progress] == [5000]


# -- release order and checkpoints -------------------------------------------------------


def test_collector_slots_are_released_only_once_their_lines_are_published(
    tmp_path: Path, rings: RingFactory
) -> None:
    rig = Rig(rings, rig_config(tmp_path, "{batch_max_events: 10, batch_timeout: 1s}"))
    ring = rig.collector_rings["app"]
    rig.publish(lines_block([b"a%d" % i for i in range(4)]))  # seq 0
    rig.publish(lines_block([b"b%d" % i for i in range(8)]))  # seq 1: straddles a batch
    rig.dispatcher.step()

    # batch 1 holds all of seq 0 and 6 lines of seq 1: only seq 0 may be released
    assert [b.meta.count for b in rig.batches()] == [10]
    assert ring.consumer_cursor(0) == 0
    rig.publish(b"c0\n")  # seq 2
    rig.dispatcher.step()
    assert ring.consumer_cursor(0) == 0  # read, but its lines are not in a published batch

    rig.time_out_batch()
    assert [b.meta.count for b in rig.batches()] == [3]
    assert ring.consumer_cursor(0) == 2


def test_checkpoint_is_saved_only_after_every_sink_released_the_batch(
    tmp_path: Path, rings: RingFactory
) -> None:
    config = rig_config(tmp_path, "{batch_timeout: 1s, checkpoint_interval: 5s}")
    rig = Rig(rings, config, sinks=2)
    position = FilePosition("app", "/var/log/app.log", 7, 99, 4)
    rig.publish(b"x\ny\n", path="/var/log/app.log", dev=7, ino=99, start=0, end=4)
    rig.dispatcher.step()
    rig.time_out_batch()
    seq = rig.batch_ring.published
    assert seq == 0

    rig.clock.advance(10)  # the checkpoint interval is long past: only the sinks hold it
    rig.dispatcher.step()
    assert rig.store.load().files == []

    rig.sinks[0].release(seq)
    rig.dispatcher.step()
    assert rig.store.load().files == []  # one sink still holds the batch

    rig.sinks[1].release(seq)
    rig.dispatcher.step()
    assert rig.store.load().files == [position]
    assert rig.counters.get(Counter.CHECKPOINTS) == 1

    # a later delivery is saved once checkpoint_interval has passed since the last save
    rig.publish(b"z\n", path="/var/log/app.log", dev=7, ino=99, start=4, end=6)
    rig.dispatcher.step()
    rig.time_out_batch()
    for sink in rig.sinks:
        sink.release(rig.batch_ring.published)
    rig.dispatcher.step()
    assert rig.store.load().files == [position]
    rig.clock.advance(5)
    rig.dispatcher.step()
    assert rig.store.load().files == [FilePosition("app", "/var/log/app.log", 7, 99, 6)]
    assert rig.counters.get(Counter.CHECKPOINTS) == 2


def test_restarted_dispatcher_rereads_unreleased_collector_records(
    tmp_path: Path, rings: RingFactory
) -> None:
    rig = Rig(rings, rig_config(tmp_path, "{batch_max_events: 5, batch_timeout: 1s}"))
    rig.publish(b"1\n2\n3\n")
    rig.publish(b"4\n5\n6\n7\n")
    rig.dispatcher.step()  # publishes 1-5; 6 and 7 are only in the dead dispatcher's memory
    rig.publish(b"8\n")
    rig.dispatcher.step()

    rig.dispatcher = rig.new_dispatcher(fresh_mappings=True)  # the old one was killed
    rig.step_until_idle()
    rig.time_out_batch()
    got = messages(rig.batches())
    assert set(got) == {str(i) for i in range(1, 9)}  # duplicates allowed, no loss
    assert got[:5] == ["1", "2", "3", "4", "5"]
    assert rig.collector_rings["app"].consumer_cursor(0) == 2


def test_restarted_dispatcher_recovers_in_flight_progress_from_the_batch_ring(
    tmp_path: Path, rings: RingFactory
) -> None:
    config = rig_config(tmp_path, "{batch_timeout: 1s, checkpoint_interval: 1ms}")
    rig = Rig(rings, config, sinks=2)
    rig.publish(b"a\nb\n", dev=1, ino=5, end=4)
    rig.dispatcher.step()
    rig.time_out_batch()
    assert rig.batch_ring.published == 0
    rig.sinks[0].release(0)  # the other sink still holds batch 0 when the dispatcher dies

    restarted = rig.dispatcher = rig.new_dispatcher(fresh_mappings=True)
    assert rig.store.load().files == []
    rig.publish(b"c\n", dev=1, ino=5, start=4, end=6)
    rig.dispatcher.step()
    rig.time_out_batch()
    assert rig.batch_ring.published == 1  # appended after the unreleased batch, not over it

    first = rig.batches(sink=1)
    assert messages(first) == ["a", "b", "c"]
    rig.clock.advance(1)
    restarted.step()
    # batch 1 is released by sink 1 only; batch 0 by both: its progress is now durable
    assert rig.store.load().files == [FilePosition("app", "/var/log/app.log", 1, 5, 4)]
    assert messages(rig.batches(sink=0)) == ["c"]
    rig.clock.advance(1)
    restarted.step()
    assert rig.store.load().files == [FilePosition("app", "/var/log/app.log", 1, 5, 6)]


def test_counters_add_up(tmp_path: Path, rings: RingFactory) -> None:
    rig = Rig(rings, rig_config(tmp_path, "{batch_max_events: 7, batch_timeout: 1s}"))
    blocks = [lines_block([b"block %d line %d" % (b, i) for i in range(b + 1)]) for b in range(6)]
    for block in blocks:
        rig.publish(block)
    rig.step_until_idle()
    batches = rig.batches()
    rig.time_out_batch()
    batches += rig.batches()

    total = sum(range(1, 7))
    assert sum(b.meta.count for b in batches) == total == len(messages(batches))
    counters = rig.counters
    assert counters.get(Counter.EVENTS_IN) == total
    assert counters.get(Counter.EVENTS_OUT) == total
    assert counters.get(Counter.BATCHES) == len(batches) == -(-total // 7)
    assert counters.get(Counter.BYTES_IN) == sum(map(len, blocks))
    assert counters.get(Counter.BYTES_OUT) == sum(b.slot_length for b in batches)
    assert rig.source_counters["app"].get(Counter.EVENTS_OUT) == total
    assert rig.source_counters["app"].get(Counter.LINES_TRUNCATED) == 0


def test_file_name_that_is_not_utf8_does_not_stop_the_dispatcher(
    tmp_path: Path, rings: RingFactory
) -> None:
    rig = Rig(rings, rig_config(tmp_path, "{batch_timeout: 1s}"))
    odd = os.fsdecode(b"/var/log/caf\xe9.log")  # a Latin-1 name, as found on old systems
    rig.publish(b"hello\n", path=odd)
    rig.publish(b"world\n")
    rig.dispatcher.step()
    rig.time_out_batch()
    batches = rig.batches()
    assert messages(batches) == ["hello", "world"]
    assert batches[0].entries[0]["labels"]["path"] == "/var/log/caf\ufffd.log"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(b"app.log", id="utf8-name"),
        pytest.param(
            b"caf\xe9.log",
            id="latin1-name",
        ),
    ],
)
def test_delivered_position_is_resumed_by_a_restarted_collector(
    tmp_path: Path, rings: RingFactory, name: bytes
) -> None:
    config = rig_config(
        tmp_path,
        "{batch_timeout: 1s, checkpoint_interval: 1s}",
        sources="app: {type: file, include: ['logs/*.log']}",
    )
    rig = Rig(rings, config)
    logs = tmp_path / "logs"
    logs.mkdir()
    log = Path(os.fsdecode(os.fsencode(logs) + b"/" + name))
    log.write_bytes(b"first\nsecond\n")

    def run_collector() -> None:
        collector = FileCollector(
            "app",
            config.sources["app"],
            rig.producers["app"],
            NullBlock(),
            rig.store.positions_for("app"),
            should_stop=lambda: True,
        )
        collector.rescan(initial=True)
        while collector.poll_once():
            pass
        for tailer in collector.tailers.values():
            tailer.close()

    run_collector()
    rig.dispatcher.step()
    rig.time_out_batch()
    assert messages(rig.batches()) == ["first", "second"]  # released by the only sink
    rig.dispatcher.step()
    assert [f.offset for f in rig.store.load().files] == [13]

    with open(log, "ab") as f:
        f.write(b"third\n")
    run_collector()  # a restarted collector starts from the checkpoint, not from zero
    rig.dispatcher.step()
    rig.time_out_batch()
    assert messages(rig.batches()) == ["third"]


def test_blocks_whose_lines_were_all_skipped_do_not_hold_their_slots(
    tmp_path: Path, rings: RingFactory
) -> None:
    """long_lines: skip can leave a block with no entry; its slot must still be freed and
    its position checkpointed once what came before is delivered."""
    rig = Rig(rings, rig_config(tmp_path, "{checkpoint_interval: 1ms}"))
    for source in rig.dispatcher.inputs:
        source.skip_long_lines = True
    ring = rig.collector_rings["app"]
    for n in range(40):  # more records than the collector ring has slots
        # what the tailer publishes for a skipped over-long line: no data, a position
        rig.publish(b"", start=n * 100_000, end=(n + 1) * 100_000, flags=FLAG_TRUNCATED)
        rig.step_until_idle()
    assert ring.consumer_cursor(0) == 39  # every slot handed back, none pinned
    rig.clock.advance(1.0)
    rig.dispatcher.step()
    (saved,) = rig.store.load().files
    assert saved.offset == 40 * 100_000
    assert rig.source_counters["app"].get(Counter.LINES_SKIPPED) == 40
    assert rig.batches() == []  # nothing to send


# -- byte bounds and records that cannot be batched --------------------------------------


def _dlq_record_bytes(batch: ReadBatch) -> int:
    """What dead-lettering this batch takes in a DLQ: segment header plus record."""
    record = DlqRecord(
        sink="out",
        kind="overflow",
        reason="r" * 4096,
        attempts=10,
        first_failure_ns=READ_NS,
        written_ns=READ_NS,
        batch_seq=12345,
        entries=batch.meta.count,
        batch=b"x" * batch.slot_length,
    )
    return len(file_header()) + len(encode_record(record))


def test_no_batch_passes_batch_max_bytes_so_every_batch_fits_the_dlq(
    tmp_path: Path, rings: RingFactory
) -> None:
    """Whole 256 KiB collector blocks used to overshoot a 16 KiB batch_max_bytes into one
    ~400 KiB batch, more than the 96 KiB DLQ this config validates with: the retry
    process then waited for the DLQ forever."""
    config = rig_config(
        tmp_path,
        "{batch_max_bytes: 16KiB, batch_timeout: 1s}",
        sources="app: {type: file, include: ['*.log'], max_line_bytes: 1KiB}",
        extra="retry: {max_bytes: 96KiB}\ndlq: {max_bytes: 96KiB, segment_bytes: 64KiB}\n",
    )
    rig = Rig(rings, config, batch_slots=256)
    plain = [b"%05d " % i + b"p" * 94 for i in range(2400)]  # ~240 KB: one slot
    controls = [c for c in range(1, 32) if c != 0x0A]
    escaped = [bytes([controls[i % len(controls)]]) * 100 for i in range(600)]  # 6x escaped
    rig.publish(lines_block(plain), end=240_000)
    rig.publish(lines_block(escaped), start=240_000, end=300_600)
    rig.step_until_idle()
    rig.time_out_batch()

    batches = rig.batches()
    assert messages(batches) == [line.decode() for line in plain + escaped]
    assert max(b.slot_length for b in batches) <= 16 * 1024
    assert max(_dlq_record_bytes(b) for b in batches) <= config.dlq.max_bytes
    assert max(b.slot_length for b in batches) <= config.retry.max_bytes
    # filled, not fragmented: every batch but the last of each block is nearly full
    assert len(batches) <= 1 + -(-sum(b.slot_length for b in batches) // (15 * 1024))


def test_a_block_spread_over_batches_completes_only_with_its_last_batch(
    tmp_path: Path, rings: RingFactory
) -> None:
    config = rig_config(tmp_path, "{batch_max_bytes: 4KiB, batch_timeout: 1s}")
    rig = Rig(rings, config, sinks=2, batch_slots=64)
    ring = rig.collector_rings["app"]
    lines = [b"%03d " % i + b"x" * 300 for i in range(60)]  # ~28 KB of entries
    rig.publish(lines_block(lines), dev=3, ino=4, end=18_300)
    rig.dispatcher.step()

    early = rig.batches(sink=0, release=False)
    assert len(early) >= 5
    assert all(b.meta.progress == [] for b in early)
    assert ring.consumer_cursor(0) == -1  # the block's last lines are still in the open batch
    for sink in rig.sinks:
        sink.release(rig.batch_ring.published)
    rig.clock.advance(5)
    rig.dispatcher.step()
    assert rig.store.load().files == []  # delivered batches, but not the block's last

    rig.time_out_batch()
    (last,) = rig.batches(sink=0, release=False)
    assert [p.offset for p in last.meta.progress] == [18_300]
    assert ring.consumer_cursor(0) == 0
    assert messages([*early, last]) == [line.decode() for line in lines]
    for sink in rig.sinks:
        sink.release(rig.batch_ring.published)
    rig.clock.advance(5)
    rig.dispatcher.step()
    assert [p.offset for p in rig.store.load().files] == [18_300]


def test_an_entry_larger_than_batch_max_bytes_goes_alone(
    tmp_path: Path, rings: RingFactory
) -> None:
    config = rig_config(tmp_path, "{batch_max_bytes: 4KiB, batch_timeout: 1s}")
    rig = Rig(rings, config)
    rig.publish(lines_block([b"before", b"L" * 10_000, b"after"]))
    rig.dispatcher.step()
    rig.time_out_batch()

    batches = rig.batches()
    assert [messages([b]) for b in batches] == [["before"], ["L" * 10_000], ["after"]]
    assert batches[1].slot_length <= largest_batch_bytes(config)


def _publish_entries(
    producer: Producer, runs: list[list[object]], data: bytes | None = None
) -> None:
    """One FLAG_ENTRIES record, as the HTTP collector publishes it."""
    seq = producer.claim(1, timeout=2.0)
    write_entries(producer, seq, msgspec.msgpack.encode(runs) if data is None else data, READ_NS)
    producer.publish(seq)


HTTP_SOURCE = "ingest: {type: http, address: '127.0.0.1:1'}"


def test_entries_with_large_distinct_labels_never_overflow_the_batch_slot(
    tmp_path: Path, rings: RingFactory
) -> None:
    """Labels count twice (each entry's JSON and its group in the meta): the old estimate
    let ~84 entries with 50 KB labels (8.4 MB) into one 5.4 MB slot, write_batch raised,
    and every restarted dispatcher died again on the same records."""
    config = rig_config(
        tmp_path,
        "{batch_max_bytes: 4MiB, batch_timeout: 1s}",
        sources=HTTP_SOURCE,
        buffer="{collector_slot_bytes: 64KiB, collector_slots: 256}",
    )
    rig = Rig(rings, config, batch_slots=64)
    producer = rig.producers["ingest"]
    sent = []
    for n in range(120):
        labels = {"big": f"{n:04d}" + "v" * 50_000}
        _publish_entries(producer, [[labels, [READ_NS + n], [f"m{n}"]]])
        sent.append(f"m{n}")
        rig.step_until_idle()
    rig.time_out_batch()

    batches = rig.batches()
    assert messages(batches) == sent
    assert all(b.slot_length <= 4 * 1024 * 1024 for b in batches)
    assert rig.counters.get(Counter.ERRORS) == 0


def test_a_record_that_cannot_be_read_is_counted_and_released(
    tmp_path: Path, rings: RingFactory
) -> None:
    rig = Rig(rings, rig_config(tmp_path, "{batch_timeout: 1s}", sources=HTTP_SOURCE))
    producer = rig.producers["ingest"]
    _publish_entries(producer, [], data=b"\xc1 not msgpack")
    _publish_entries(producer, [[{"k": "v"}, [READ_NS], ["one"]], [{"k": "w"}, [], []]])
    _publish_entries(producer, [[{"k": "v"}, [READ_NS, READ_NS], ["too few stamps"] * 3]])
    _publish_entries(producer, [[{"k": "v"}, [READ_NS], ["two"]]])
    rig.step_until_idle()
    rig.time_out_batch()

    assert messages(rig.batches()) == ["one", "two"]
    assert rig.counters.get(Counter.ERRORS) == 2
    assert rig.collector_rings["ingest"].consumer_cursor(0) == 3


def test_an_entry_no_batch_can_hold_is_refused_and_released(
    tmp_path: Path, rings: RingFactory
) -> None:
    config = rig_config(tmp_path, "{batch_max_bytes: 8KiB, batch_timeout: 1s}", HTTP_SOURCE)
    rig = Rig(rings, config)
    rig.dispatcher = rig.new_dispatcher(largest_batch=16 * 1024)
    producer = rig.producers["ingest"]
    _publish_entries(producer, [[{"k": "v"}, [READ_NS] * 3, ["a", "x" * 20_000, "b"]]])
    _publish_entries(producer, [[{"huge": "l" * 20_000}, [READ_NS], ["c"]]])
    _publish_entries(producer, [[{"k": "v"}, [READ_NS], ["d"]]])
    rig.step_until_idle()
    rig.time_out_batch()

    assert messages(rig.batches()) == ["a", "b", "d"]
    assert rig.counters.get(Counter.ERRORS) == 2
    assert rig.collector_rings["ingest"].consumer_cursor(0) == 2


def test_entries_with_their_own_times_levels_and_fields_encode_as_one_json_line_each() -> None:
    """encode_rich / encode_stamped: every line is the entry's JSON object, members in
    the documented order, times crossing a second boundary, levels and fields optional."""
    import json

    from logcap.dispatch.encode import encode_rich, encode_stamped, entry_rest, rfc3339

    rest = entry_rest("app", {"host": "h"}, 1_700_000_000_000_000_000)
    stamps = [1_700_000_000_999_999_999, 1_700_000_001_000_000_001, 1_700_000_001_5]
    messages = ['say "hi"\n', "é", "plain"]
    levels = ["warning", None, "x" * 3]
    fields = [b'{"a":1}', None, b'{"b":{"c":[1,2]}}']
    lines = encode_rich(rest, stamps, messages, levels, fields).decode().splitlines()
    decoded = [json.loads(line) for line in lines]
    for entry, stamp, message, level, extra in zip(
        decoded, stamps, messages, levels, fields, strict=True
    ):
        want = {"timestamp": rfc3339(stamp), "ingested_at": rfc3339(1_700_000_000_000_000_000)}
        want |= {"source": "app", "labels": {"host": "h"}}
        if level is not None:
            want["level"] = level
        if extra is not None:
            want["fields"] = json.loads(extra)
        want["message"] = message
        assert list(entry.items()) == list(want.items())
    # a time in the last second before 1970 (HTTP ingest takes any a client sends)
    early = encode_stamped(rest, [-500_000_000, 5], ["a", "b"]).decode().splitlines()
    assert [json.loads(line)["timestamp"] for line in early] == [
        "1969-12-31T23:59:59.500000000Z",
        "1970-01-01T00:00:00.000000005Z",
    ]
    plain = encode_stamped(rest, stamps, messages).decode().splitlines()
    assert [json.loads(line)["message"] for line in plain] == messages
    assert all("level" not in json.loads(line) for line in plain)
