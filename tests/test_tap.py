"""``logcap tap`` and ``GET /tap`` (logcap/tap.py, logcap/cli_tap.py): live entries that
never gate the pipeline.

Unit: the cursor-less, seqlock-style :class:`RingFollower` against a ring the test
creates: batches read once and in order, a lapped follower jumps to the newest and counts
the rest, and, with a producer process rewriting a 4-slot ring as fast as it can, no copy
it returns is torn. That harness proves it can fail: a follower that trusts the slot's
stamp alone (no check of ``published`` after the copy, no jump) returns torn copies.
The selection (``source``, ``sink``, ``when``, ``limit``) on batches built here, and the
queries it refuses.

Through ``logcap run`` and the real command: ``--limit``, the ``--source``/``--sink``/
``--when`` filters, a slow tap client that does not slow 20,000 lines to a file sink nor
hold a cursor, and the errors (an unknown sink: 400 and exit 1; no agent: exit 1).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from logcap.cli_tap import NOTE
from logcap.config import parse_config
from logcap.dispatch.batch import Batch, BatchMeta, Group, write_batch
from logcap.ringbuf import Consumer, Producer, Ring, RingFollower, unlink
from logcap.tap import TapRequestError, parse_params
from tests._output import read_ndjson
from tests.conftest import free_port, wait_for, write_config

_CTX = multiprocessing.get_context("fork")


# -- the follower, against a ring of the test's own ---------------------------------------
@pytest.fixture
def make_ring() -> Iterator[Callable[[int, int], Ring]]:
    rings: list[Ring] = []

    def make(slots: int, payload: int) -> Ring:
        name = f"logcap-{os.getpid()}-test-{uuid.uuid4().hex[:8]}-tap"
        rings.append(Ring.create(name, slots, payload, 1))
        return rings[-1]

    yield make
    for ring in rings:
        name = ring.shm.name
        ring.close()
        unlink(name)


def _publish(producer: Producer, consumer: Consumer, data: bytes) -> int:
    """Publish one slot and release it at once: a sink that never falls behind."""
    seq = producer.claim(1, timeout=1)
    producer.write(seq, data)
    producer.publish(seq)
    consumer.release(seq)
    return seq


def test_a_follower_reads_each_new_batch_once_in_order(make_ring) -> None:
    ring = make_ring(8, 64)
    producer, consumer = Producer(ring), Consumer(ring)
    _publish(producer, consumer, b"before the tap")
    follower = RingFollower(ring)
    assert follower.take() is None  # live: what was there before it is not replayed
    for n in range(5):
        _publish(producer, consumer, b"batch %d" % n)
    taken = [follower.take() for _ in range(6)]
    assert [(c.seq, c.data) for c in taken[:5]] == [(n + 1, b"batch %d" % n) for n in range(5)]
    assert taken[5] is None
    assert follower.missed == 0
    assert ring.consumer_cursor(0) == ring.published  # the follower moved no cursor


def test_a_lapped_follower_jumps_to_the_newest_and_counts_what_it_missed(make_ring) -> None:
    ring = make_ring(8, 64)
    producer, consumer = Producer(ring), Consumer(ring)
    follower = RingFollower(ring)
    for n in range(30):  # nearly four laps while the follower reads nothing
        _publish(producer, consumer, b"batch %d" % n)
    copied = follower.take()
    assert copied is not None and (copied.seq, copied.data) == (29, b"batch 29")
    assert follower.missed == 29
    assert follower.take() is None
    # one behind the ring's reach (slot_count - 1 slots, the one the dispatcher may be
    # claiming aside): still read in full
    for n in range(30, 37):
        _publish(producer, consumer, b"batch %d" % n)
    assert [follower.take().seq for _ in range(7)] == list(range(30, 37))  # type: ignore[union-attr]
    assert follower.missed == 29


PAYLOAD = 256 * 1024
# one fill per residue: a slot's payload is its sequence (8 bytes) then PATTERNS[seq % 251]
PATTERNS = [bytes([k]) * (PAYLOAD - 8) for k in range(251)]


def _slot_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "little") + PATTERNS[seq % 251]


def _produce(name: str, stop: multiprocessing.synchronize.Event) -> None:
    """Rewrite a ring's slots as fast as possible (its one consumer releases at once)."""
    ring = Ring.attach(name)
    producer, consumer = Producer(ring), Consumer(ring)
    deadline = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < deadline:
        seq = producer.claim(1, timeout=1)
        payload = ring.payload(seq)
        payload[:8] = seq.to_bytes(8, "little")
        payload[8:PAYLOAD] = PATTERNS[seq % 251]
        producer.commit(seq, PAYLOAD)
        producer.publish(seq)
        consumer.release(seq)
    ring.close()


class StampOnlyFollower(RingFollower):
    """The injected bug: trust the slot's stamp alone (no jump, no check of
    ``published`` after the copy), blind to a rewrite in progress."""

    def __init__(self, ring: Ring) -> None:
        super().__init__(ring)
        self.window = 1 << 62


def _follow_a_racing_producer(ring: Ring, follower: RingFollower, enough: int) -> dict[str, int]:
    """Copies, torn copies and misses while a producer process laps ``follower``."""
    stop = _CTX.Event()
    process = _CTX.Process(target=_produce, args=(ring.shm.name, stop))
    process.start()
    copies = torn = 0
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (copies < enough or not follower.missed):
            copied = follower.take()
            if copied is None:
                continue
            copies += 1
            if copied.data != _slot_bytes(copied.seq):
                torn += 1
                if torn >= 5:
                    break
    finally:
        stop.set()
        process.join(10)
    assert process.exitcode == 0
    return {"copies": copies, "torn": torn, "missed": follower.missed}


def test_a_follower_never_returns_a_torn_batch_while_the_producer_laps_it(make_ring) -> None:
    ring = make_ring(4, PAYLOAD)
    seen = _follow_a_racing_producer(ring, RingFollower(ring), enough=1000)
    assert seen["copies"] >= 100 and seen["missed"] > 0, seen
    assert seen["torn"] == 0, seen


def test_the_torn_batch_harness_catches_a_follower_that_trusts_the_stamp_alone(
    make_ring,
) -> None:
    ring = make_ring(4, PAYLOAD)
    seen = _follow_a_racing_producer(ring, StampOnlyFollower(ring), enough=1_000_000)
    assert seen["torn"] > 0, seen


ROUTED = """
data_dir: ./data
sources:
  one: {type: file, include: [one.log]}
  two: {type: file, include: [two.log]}
sinks:
  first: {type: blackhole, inputs: [one]}
  errors: {type: blackhole, when: {field: level, equals: error}}
"""


def _group(source: str, messages: list[str], skip: int = 0, **more: object) -> tuple:
    lines = b"".join(
        msgspec.json.encode(
            {"timestamp": "2026-12-03T00:00:00.000000000Z", "source": source, "labels": {"h": "x"}}
            | more
            | {"message": message}
        )
        + b"\n"
        for message in messages
    )
    return Group(source, {"h": "x"}, 0, len(messages), len(lines), skip=skip), lines


def _batch(*groups: tuple) -> Batch:
    slot = memoryview(bytearray(64 * 1024))
    meta = BatchMeta(0, sum(g.count for g, _ in groups), [g for g, _ in groups], [])
    used = write_batch(slot, meta, [[lines] for _, lines in groups])
    return Batch.from_slot(slot[:used])


def _selected(query: dict[str, list[str]], *batches: Batch) -> list[str]:
    config = parse_config(ROUTED, base_dir=Path("/nowhere"))
    selection = parse_params(query, config, list(config.sources), list(config.sinks))
    out = b"".join(selection.select(batch) for batch in batches)
    return [json.loads(line)["message"] for line in out.splitlines()]


def test_the_selection_narrows_as_the_sinks_do_and_stops_at_the_limit() -> None:
    # the dispatcher marked the "errors" sink (bit 1) as skipping every group but b's
    batch = _batch(
        _group("one", ["a1", "a2", "a3"], skip=0b10),
        _group("two", ["b1", "b2"], skip=0, level="error", fields={"status": 500}),
        _group("one", ["c1", "c2", "c3", "c4"], skip=0b10, fields={"status": "500"}),
    )
    everything = ["a1", "a2", "a3", "b1", "b2", "c1", "c2", "c3", "c4"]
    assert _selected({}, batch) == everything
    assert _selected({"limit": ["4"]}, batch) == everything[:4]  # cut inside a group
    assert _selected({"limit": ["11"]}, batch, batch) == everything + everything[:2]
    assert _selected({"source": ["two"]}, batch) == ["b1", "b2"]
    assert _selected({"source": ["two", "one"], "limit": ["2"]}, batch) == ["a1", "a2"]
    assert _selected({"sink": ["first"]}, batch) == ["a1", "a2", "a3", "c1", "c2", "c3", "c4"]
    assert _selected({"sink": ["errors"]}, batch) == ["b1", "b2"]
    assert _selected({"sink": ["first"], "source": ["two"]}, batch) == []
    # conditions on the decoded entry: a number and the text that spells it both match
    assert _selected({"when": ["fields.status=500"]}, batch) == everything[3:]
    assert _selected({"when": ["level=error", "message~2$"]}, batch) == ["b2"]
    assert _selected({"when": ["labels.h=x", "source=one"], "limit": ["5"]}, batch) == [
        "a1",
        "a2",
        "a3",
        "c1",
        "c2",
    ]
    assert _selected({"when": ["labels.nope=x"]}, batch) == []


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"sink": ["nope"]}, "no sink named 'nope' (sinks: first, errors)"),
        ({"source": ["three"]}, "no source named 'three' (sources: one, two)"),
        ({"limit": ["0"]}, "limit '0': give a whole number of entries, 1 or more"),
        ({"when": ["message"]}, "when 'message': write FIELD=VALUE or FIELD~REGEX"),
        ({"when": ["msg=x"]}, "when 'msg=x': Expected `str` matching regex"),
        ({"when": ["message~(x"]}, "when 'message~(x': not a regular expression"),
        ({"follow": ["1"]}, "unknown parameter 'follow' (known: source, sink, when, limit, rate)"),
        ({"rate": ["fast"]}, "rate 'fast': give entries a second, 0 for no cap"),
    ],
)
def test_a_query_the_tap_cannot_serve_is_refused_saying_why(query, error) -> None:
    config = parse_config(ROUTED, base_dir=Path("/nowhere"))
    with pytest.raises(TapRequestError) as refused:
        parse_params(query, config, list(config.sources), list(config.sinks))
    assert str(refused.value).startswith(error)


# -- through logcap run ------------------------------------------------------------------
class Appender:
    """Appends numbered lines to files in a thread until stopped (at most 90 s)."""

    def __init__(self, paths: dict[str, Path], oops_every: int = 3) -> None:
        self.paths = paths
        self.oops_every = oops_every
        self.written: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Appender:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        deadline = time.monotonic() + 90
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            for name, path in self.paths.items():
                lines = []
                for _ in range(10):
                    oops = "OOPS " if n % self.oops_every == 0 else ""
                    lines.append(f"{oops}{name} line {n}")
                    n += 1
                with open(path, "a") as out:
                    out.write("\n".join(lines) + "\n")
                self.written += lines
            time.sleep(0.02)


def _tap(address: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logcap", "tap", "--api", f"http://{address}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _entries(stdout: str) -> list[dict]:
    entries = [json.loads(line) for line in stdout.splitlines()]
    assert all("timestamp" in entry and "tap" not in entry for entry in entries), entries
    return entries


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nThreads:", 1)[1].split()[0])


def _stop_cleanly(agent) -> None:
    """Stop the agent: a clean drain, and no traceback of a request thread in its log."""
    assert agent.stop() == 0
    assert "Traceback" not in agent.log.read_text()


def _agent(tmp_path: Path, start_agent, body: str):
    (tmp_path / "logs").mkdir()
    address = f"127.0.0.1:{free_port()}"
    agent = start_agent(write_config(tmp_path, body, address), address)
    agent.wait_ready()
    return agent, address


ONE_SOURCE = """
data_dir: ./data
sources:
  app: {type: file, include: ["./logs/app.log"]}
sinks:
  out: {type: file, path: "./out/out.ndjson"}
dispatcher: {batch_timeout: 20ms}
"""


def test_tap_prints_limit_entries_of_the_input_and_exits_0_as_on_ctrl_c_or_a_stop(
    tmp_path: Path, start_agent
) -> None:
    agent, address = _agent(tmp_path, start_agent, ONE_SOURCE)
    threads = _threads(agent.process.pid)
    with Appender({"app": tmp_path / "logs" / "app.log"}) as appender:
        result = _tap(address, "--limit", "50")
        # without a limit it runs until Ctrl-C, which ends it with status 0 as well
        endless = subprocess.Popen(
            [sys.executable, "-m", "logcap", "tap", "--api", f"http://{address}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert endless.stdout is not None
        endless.stdout.readline()  # an entry came through
        endless.send_signal(signal.SIGINT)
        assert endless.wait(30) == 0
        endless.stdout.close()
        endless.stderr.close()  # type: ignore[union-attr]
        # the request threads of the taps that left are gone: nothing of theirs lingers
        # at most as many as before: a request thread of the readiness polls may still
        # have been ending when they were counted
        wait_for(lambda: _threads(agent.process.pid) <= threads, 30, "the tap threads to end")
        # and a tap still connected when the agent stops ends cleanly too
        stopped = subprocess.Popen(
            [sys.executable, "-m", "logcap", "tap", "--api", f"http://{address}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert stopped.stderr is not None
        assert stopped.stderr.readline().rstrip("\n") == NOTE
        _stop_cleanly(agent)
        assert stopped.wait(30) == 0
        assert stopped.stderr.read() == "logcap tap: the agent is stopping\n"
        stopped.stderr.close()
    assert result.returncode == 0, result.stderr
    entries = _entries(result.stdout)
    assert len(entries) == 50
    written = set(appender.written)
    assert all(entry["message"] in written for entry in entries)
    assert all(entry["source"] == "app" for entry in entries)
    assert result.stderr.splitlines()[0] == NOTE


TWO_SOURCES = """
data_dir: ./data
sources:
  one: {type: file, include: ["./logs/one.log"]}
  two: {type: file, include: ["./logs/two.log"]}
sinks:
  all: {type: file, path: "./out/all.ndjson"}
  only_one: {type: file, path: "./out/one.ndjson", inputs: [one]}
  oops: {type: file, path: "./out/oops.ndjson", when: {field: message, matches: '^OOPS'}}
dispatcher: {batch_timeout: 20ms}
"""


def test_source_sink_and_when_filters_pass_only_the_entries_they_name(
    tmp_path: Path, start_agent
) -> None:
    agent, address = _agent(tmp_path, start_agent, TWO_SOURCES)
    logs = tmp_path / "logs"
    with Appender({"one": logs / "one.log", "two": logs / "two.log"}):
        by_source = _entries(_tap(address, "--source", "two", "--limit", "30").stdout)
        by_inputs = _entries(_tap(address, "--sink", "only_one", "--limit", "30").stdout)
        by_when = _entries(_tap(address, "--sink", "oops", "--limit", "30").stdout)
        by_field = _entries(
            _tap(address, "--when", "message~^OOPS", "--when", "source=two", "--limit", "10").stdout
        )
        everything = _entries(_tap(address, "--limit", "60").stdout)
    assert len(by_source) == len(by_inputs) == len(by_when) == 30
    assert {entry["source"] for entry in by_source} == {"two"}
    assert {entry["source"] for entry in by_inputs} == {"one"}
    assert all(entry["message"].startswith("OOPS ") for entry in by_when)
    assert len(by_field) == 10
    assert all(e["source"] == "two" and e["message"].startswith("OOPS ") for e in by_field)
    # unfiltered, both sources and both kinds of line come through
    assert {entry["source"] for entry in everything} == {"one", "two"}
    assert not all(entry["message"].startswith("OOPS ") for entry in everything)
    _stop_cleanly(agent)


SLOW_TAP = """
data_dir: ./data
sources:
  app: {type: file, include: ["./logs/app.log"]}
sinks:
  out: {type: file, path: "./out/out.ndjson"}
buffer: {batch_slots: 4}
dispatcher: {batch_timeout: 20ms, batch_max_events: 100}
"""


class SlowTapClient:
    """A raw ``GET /tap`` client that reads one line a second through a small receive
    buffer, so the agent's writes to it soon block."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect((host, int(port)))
        self.sock.sendall(b"GET /tap HTTP/1.1\r\nHost: x\r\n\r\n")
        self.buffer = b""
        self.lines: list[bytes] = []
        self._slow = threading.Event()
        self._slow.set()
        head = self._line()
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
        while self._line() != b"\r\n":
            pass
        self._thread = threading.Thread(target=self._read_slowly, daemon=True)
        self._thread.start()

    def _line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(256)
            if not chunk:
                raise EOFError("the tap stream ended")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def _read_slowly(self) -> None:
        deadline = time.monotonic() + 90
        while self._slow.is_set() and time.monotonic() < deadline:
            self.lines.append(self._line())
            time.sleep(1)

    def drain(self, until: Callable[[list[bytes]], bool], timeout: float) -> None:
        """Stop reading slowly; read fast until ``until(lines)`` or ``timeout``."""
        self._slow.clear()
        self._thread.join(5)
        deadline = time.monotonic() + timeout
        while not until(self.lines) and time.monotonic() < deadline:
            self.lines.append(self._line())

    def close(self) -> None:
        self._slow.clear()
        self.sock.close()


def test_a_slow_tap_neither_slows_the_pipeline_nor_holds_a_cursor(
    tmp_path: Path, start_agent
) -> None:
    agent, address = _agent(tmp_path, start_agent, SLOW_TAP)
    client = SlowTapClient(address)
    try:
        lines = [f"line {n:05d} " + "x" * 150 for n in range(20_000)]
        with open(tmp_path / "logs" / "app.log", "a") as log:
            for start in range(0, len(lines), 1000):
                log.write("".join(line + "\n" for line in lines[start : start + 1000]))
                log.flush()
        out = tmp_path / "out" / "out.ndjson"
        wait_for(lambda: len(read_ndjson(out)) >= 20_000, 60, "every line in the file sink")
        read_by_the_tap = len(client.lines)
        # the sink released every batch while the tap is still far behind: the ring has
        # only the sinks' cursors, and the tap is none of them
        wait_for(
            lambda: agent.metric("logcap_batch_ring_consumer_lag_slots", component="out") == 0,
            30,
            "the file sink's cursor at the newest batch",
        )
        assert read_by_the_tap < 100
        assert sorted(entry["message"] for entry in read_ndjson(out)) == lines

        # read fast now: the tap either reports what it missed or catches up in full
        def missed_or_all(got: list[bytes]) -> bool:
            entries = [line for line in got if line.startswith(b'{"timestamp"')]
            return any(line.startswith(b'{"tap":"missed"') for line in got) or len(entries) >= len(
                lines
            )

        client.drain(missed_or_all, 60)
        assert missed_or_all(client.lines)
        for line in client.lines:
            parsed = json.loads(line)
            assert set(parsed) == {"tap", "batches"} or parsed["message"] in set(lines)
    finally:
        client.close()
    _stop_cleanly(agent)


def test_an_unknown_sink_is_refused_with_a_clear_message_and_exit_1(
    tmp_path: Path, start_agent
) -> None:
    agent, address = _agent(tmp_path, start_agent, TWO_SOURCES)
    result = _tap(address, "--sink", "nope")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "logcap tap: the agent refused the tap (400): no sink named 'nope' "
        "(sinks: all, only_one, oops)"
    )
    status, body = agent.json("/tap?sink=nope")
    assert (status, body) == (400, {"error": "no sink named 'nope' (sinks: all, only_one, oops)"})
    bad_when = _tap(address, "--when", "message~(oops")
    assert bad_when.returncode == 1
    assert "when 'message~(oops': not a regular expression" in bad_when.stderr
    assert agent.json("/tap?source=three")[0] == 400
    _stop_cleanly(agent)


def test_tap_exits_1_when_the_agent_is_unreachable() -> None:
    result = _tap(f"127.0.0.1:{free_port()}", "--limit", "1", timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("logcap tap: cannot reach the agent at http://127.0.0.1:")
    assert "Connection refused" in result.stderr


def test_a_tap_passes_on_at_most_its_rate_and_reports_the_batches_it_skipped(
    tmp_path: Path, start_agent
) -> None:
    """``--rate 50`` while thousands of lines a second pass: the tap prints at most its
    rate's worth (plus one overdrawing batch and the first second's allowance), every one
    a line of the input, and says how many batches it skipped."""
    agent, address = _agent(tmp_path, start_agent, ONE_SOURCE)
    log = tmp_path / "logs" / "app.log"
    stop = threading.Event()

    def flood() -> None:  # 1,000 lines every 50 ms, for at most 60 s
        n = 0
        deadline = time.monotonic() + 60
        with open(log, "a") as out:
            while not stop.is_set() and time.monotonic() < deadline:
                out.write("".join(f"flood line {n + i}\n" for i in range(1000)))
                out.flush()
                n += 1000
                time.sleep(0.05)

    flooding = threading.Thread(target=flood, daemon=True)
    flooding.start()
    try:
        wait_for(
            lambda: agent.metric("logcap_component_sent_events_total", component="out") > 5000,
            30,
            "the flood to flow",
        )
        printed, notes = tmp_path / "tap.out", tmp_path / "tap.err"
        with open(printed, "wb") as out_file, open(notes, "wb") as err_file:
            # files, not pipes: a pipe nobody reads would stop the tap, not its rate
            command = ["-m", "logcap", "tap", "--api", f"http://{address}", "--rate", "50"]
            tap = subprocess.Popen(
                [sys.executable, *command],
                stdout=out_file,
                stderr=err_file,
            )
            wait_for(lambda: printed.stat().st_size > 0, 60, "tapping to begin")
            began = time.monotonic()
            time.sleep(3)
            tap.send_signal(signal.SIGINT)
            assert tap.wait(30) == 0
        tapped = time.monotonic() - began
    finally:
        stop.set()
        flooding.join(10)
    err = notes.read_text()
    entries = _entries(printed.read_text())
    # its rate's worth over the time it tapped, one batch it may overdraw by, the allowance
    assert 0 < len(entries) <= 50 * (tapped + 1) + 1000 + 50
    assert all(entry["message"].startswith("flood line ") for entry in entries)
    missed = [line for line in err.splitlines() if "missed" in line]
    assert missed, err
    _stop_cleanly(agent)
