"""Docker resume and first runs, without a daemon: positions per stream, their encoding,
the skip, and which containers a first run reads.

A fake daemon serves one container's log file the way dockerd does (frames in file
order, only lines stamped at or after ``since``), a real DockerCollector reads it into a
real collector ring, and the position of the last record is what a checkpoint would
hold when the agent is killed there. Docker stamps stdout and stderr in two threads, so
the file's stamps go back where the streams interleave; every cut must resume with each
line delivered exactly once.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _component_helpers import RingFactory, drain_records, rfc3339_ns, ring_fixture

from logcap.capture._entries import decode_runs
from logcap.capture.docker import collector as collector_module
from logcap.capture.docker.collector import DockerCollector
from logcap.capture.docker.config import DockerSourceConfig
from logcap.capture.docker.container import container_key
from logcap.capture.docker.position import (
    AHEAD_BITS,
    MAX_COUNT,
    STREAM_SKEW_NS,
    ContainerPosition,
    Reading,
)
from logcap.capture.docker.stream import PARTIAL_BYTES, STDERR, STDOUT
from logcap.dispatch.checkpoint import CheckpointStore, FilePosition, Positions
from logcap.metrics import Counter, NullBlock
from logcap.ringbuf import Consumer, Producer, SleepWait

CONTAINER = "ab" * 32
T = 1_795_342_508_000_000_000
US = 1_000
# A log file as dockerd wrote it (stream, stamp, text): each stream's stamps never go
# back, but a line can follow one of the other stream stamped after it (o3 after e2,
# o7 after e5, e9 after o8), and lines share a nanosecond within a stream and across.
RACING = [
    (STDOUT, T + 1 * US, "o1"),
    (STDERR, T + 5 * US, "e2"),
    (STDOUT, T + 3 * US, "o3"),
    (STDERR, T + 10 * US, "e4"),
    (STDERR, T + 10 * US, "e5"),
    (STDOUT, T + 10 * US, "o6"),
    (STDOUT, T + 10 * US, "o7"),
    (STDOUT, T + 20 * US, "o8"),
    (STDERR, T + 18 * US, "e9"),
    (STDERR, T + 18 * US, "e10"),
    (STDOUT, T + 21 * US, "o11"),
    (STDERR, T + 19 * US, "e12"),
]


def _frame(stream: int, stamp: int, text: str) -> bytes:
    end = b"" if len(text) == PARTIAL_BYTES else b"\n"  # a Docker piece of a long line
    payload = rfc3339_ns(stamp).encode() + b" " + text.encode() + end
    return struct.pack(">BxxxI", stream, len(payload)) + payload


class _Response:
    def __init__(self, body: bytes) -> None:
        self.raw = io.BytesIO(body)

    def close(self) -> None:
        self.raw.close()


class FakeDaemon:
    """The part of ``docker.APIClient`` the collector's reader uses, over one log file."""

    def __init__(self, log: list[tuple[int, int, str]], finished_at: int = 0) -> None:
        self.log = log
        self.finished_at = finished_at  # 0: the container runs
        self.written: int | None = None  # lines of the file the agent reads before dying
        self.sent: list[int] = []  # lines each response sent (after the since filter)
        self.since: list[int | None] = []

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        finished = rfc3339_ns(self.finished_at) if self.finished_at else "0001-01-01T00:00:00Z"
        return {
            "Config": {"Tty": False},
            "State": {"Running": not self.finished_at, "FinishedAt": finished},
        }

    def containers(self, **_: Any) -> list[dict[str, Any]]:
        state = "exited" if self.finished_at else "running"
        return [{"Id": CONTAINER, "Names": ["/box"], "Image": "i", "Labels": {}, "State": state}]

    def events(self, **_: Any) -> io.BytesIO:
        return io.BytesIO()  # no event; closable

    def _url(self, path: str, *args: str) -> str:
        return path.format(*args)

    def _get(self, url: str, params: dict[str, Any], **_: Any) -> _Response:
        since = None
        if "since" in params:
            seconds, nanos = params["since"].split(".")
            since = int(seconds) * 1_000_000_000 + int(nanos)
        self.since.append(since)
        lines = [line for line in self.log[: self.written] if since is None or line[1] >= since]
        self.sent.append(len(lines))
        return _Response(b"".join(_frame(*line) for line in lines))

    def _raise_for_status(self, response: _Response) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def rings() -> Iterator[RingFactory]:
    yield from ring_fixture()


class Agent:
    """One docker collector over a real ring; each ``run`` is one life of the agent."""

    def __init__(
        self, rings: RingFactory, tmp_path: Path, config: DockerSourceConfig | None = None
    ) -> None:
        self.config = config or DockerSourceConfig()
        self.ring = rings.create(64, 256 * 1024, 1, "docker")
        self.consumer = Consumer(self.ring, 0)
        self.marker = tmp_path / "started"
        self.checkpoint: dict[tuple[int, int], FilePosition] = {}
        self.delivered: list[tuple[str, int, str]] = []
        self.counters = NullBlock()  # kept across lives, as the agent's metrics are

    def collector(self, started_ns: int | None = None) -> DockerCollector:
        return DockerCollector(
            "d",
            self.config,
            Producer(self.ring, wait=SleepWait()),
            self.counters,
            dict(self.checkpoint),
            lambda: False,
            self.marker,
            started_ns,
        )

    def run(self, daemon: FakeDaemon, collector: DockerCollector | None = None) -> None:
        """Start from the checkpoint, read what the daemon serves, publish, and take
        the last record's position as the checkpoint (every line of it delivered)."""
        collector = collector or self.collector()
        container = collector._known(CONTAINER, "box", "busybox", {})
        assert container is not None
        collector._read_once(container, daemon, follow=False)  # type: ignore[arg-type]
        collector._flush(container)
        for record in drain_records(self.consumer):
            for run in decode_runs(record.data):
                for stamp, text in zip(run.stamps, run.messages, strict=True):
                    self.delivered.append((run.labels["stream"], stamp, text))
            header = record.header
            assert header.ino == container_key(CONTAINER) and header.end >= 0
            self.checkpoint = {
                (0, header.ino): FilePosition(
                    "d", record.path.decode(), 0, header.ino, header.end, header.fingerprint
                )
            }


def _names(log: list[tuple[int, int, str]]) -> list[tuple[str, int, str]]:
    return [("stdout" if s == STDOUT else "stderr", stamp, text) for s, stamp, text in log]


@pytest.mark.parametrize("cut", range(len(RACING) + 1))
def test_a_kill_anywhere_in_interleaved_streams_resumes_every_line_once(
    rings: RingFactory, tmp_path: Path, cut: int
) -> None:
    agent = Agent(rings, tmp_path)
    daemon = FakeDaemon(RACING)
    daemon.written = cut
    agent.run(daemon)
    daemon.written = None
    agent.run(daemon)
    assert sorted(agent.delivered) == sorted(_names(RACING))


def test_repeated_kills_one_line_apart_lose_and_double_nothing(
    rings: RingFactory, tmp_path: Path
) -> None:
    agent = Agent(rings, tmp_path)
    daemon = FakeDaemon(RACING)
    for written in [1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 12]:  # 1 or 2 lines more each life
        daemon.written = written
        agent.run(daemon)
        assert agent.delivered == _names(RACING)[:written]  # in file order, each once


def test_a_quiet_stream_holds_the_resume_back_by_at_most_the_skew(
    rings: RingFactory, tmp_path: Path
) -> None:
    """stderr speaks once, stdout for a minute: a resume asks ``since`` no earlier than
    STREAM_SKEW_NS before the newest line, and a stderr line stamped within the skew but
    written after newer stdout lines still arrives."""
    second = 1_000_000_000
    log = [(STDERR, T, "early error")]
    log += [(STDOUT, T + n * second, f"out {n}") for n in range(1, 61)]
    log.append((STDERR, T + 55 * second, "late error"))  # stamped 5 s before it landed
    log.append((STDOUT, T + 61 * second, "out 61"))
    agent = Agent(rings, tmp_path)
    daemon = FakeDaemon(log)
    daemon.written = len(log) - 2  # the agent dies before "late error"
    agent.run(daemon)
    daemon.written = None
    agent.run(daemon)
    newest = T + 60 * second
    assert daemon.since[-1] == newest - STREAM_SKEW_NS
    assert daemon.sent[-1] <= STREAM_SKEW_NS // second + 4  # not the whole minute again
    assert sorted(agent.delivered) == sorted(_names(log))


@pytest.mark.parametrize(
    ("long_lines", "counter"),
    [("truncate", Counter.LINES_TRUNCATED), ("skip", Counter.LINES_SKIPPED)],
)
def test_lines_read_again_on_resume_are_counted_once(
    rings: RingFactory, tmp_path: Path, long_lines: str, counter: Counter
) -> None:
    """A resume starts before the newest line (stderr never spoke: up to the skew), so
    a long line joined from Docker's pieces and cut (or skipped) is read twice; it is
    counted once."""
    pieces = [(STDOUT, T, "c" * PARTIAL_BYTES)] * 9  # Docker's 16 KiB pieces of one line
    log = [(STDOUT, T - US, "first"), *pieces, (STDOUT, T, "c"), (STDOUT, T + US, "last")]
    agent = Agent(rings, tmp_path, DockerSourceConfig(long_lines=long_lines))  # type: ignore[arg-type]
    daemon = FakeDaemon(log)
    agent.run(daemon)
    agent.run(daemon)
    assert daemon.sent == [len(log), len(log)]  # the second read got it all again
    assert agent.counters.get(counter) == 1
    assert agent.counters.get(Counter.LINES_JOINED) == 1
    assert [text[:5] for _, _, text in agent.delivered] == (
        ["first", "c" * 5, "last"] if long_lines == "truncate" else ["first", "last"]
    )


def test_a_position_is_encoded_as_documented() -> None:
    position = ContainerPosition((T + 7, 3), (T + 2, 5))
    offset, fingerprint = position.encode()
    assert offset == T + 2
    assert fingerprint == 1 << 63 | 0 << 62 | 5 << 28 | 5 << 14 | 3
    assert ContainerPosition.decode(offset, fingerprint) == position
    swapped = ContainerPosition((T, 1), (T + STREAM_SKEW_NS, MAX_COUNT))
    assert ContainerPosition.decode(*swapped.encode()) == swapped
    assert swapped.encode()[1] < 1 << 64 and STREAM_SKEW_NS < 1 << AHEAD_BITS
    assert ContainerPosition().encode()[0] == 0


def test_a_position_survives_the_checkpoint_file(tmp_path: Path) -> None:
    position = ContainerPosition((T + 9, 2), (T + 4, 16))
    offset, fingerprint = position.encode()
    store = CheckpointStore(tmp_path)
    store.save(Positions(files=[FilePosition("d", "docker://x", 0, 1, offset, fingerprint)]))
    saved = store.positions_for("d")[(0, 1)]
    assert ContainerPosition.decode(saved.offset, saved.fingerprint) == position


def test_a_stream_far_behind_is_clamped_to_the_skew_with_nothing_counted() -> None:
    position = ContainerPosition((T + 3 * STREAM_SKEW_NS, 4), (T, 9))
    assert position.clamped() == ContainerPosition(
        (T + 3 * STREAM_SKEW_NS, 4), (T + 2 * STREAM_SKEW_NS, 0)
    )
    assert ContainerPosition.decode(*position.encode()) == position.clamped()
    never = ContainerPosition((T, 1), (0, 0))  # a container that never wrote stderr
    assert never.clamped().since() == T - STREAM_SKEW_NS


def test_an_old_checkpoint_resumes_both_streams_at_its_time_counting_nothing() -> None:
    """Written before positions per stream: (time, lines at that time over both)."""
    assert ContainerPosition.decode(T, 2) == ContainerPosition((T, 0), (T, 0))
    reading = Reading(ContainerPosition.decode(T, 2))
    assert reading.take(STDOUT, T) and reading.take(STDERR, T)
    assert not reading.take(STDERR, T - 1)


def test_more_lines_in_one_nanosecond_than_a_count_holds_are_sent_again_not_lost() -> None:
    position = ContainerPosition((T, MAX_COUNT + 10), (T, 0))
    reading = Reading(ContainerPosition.decode(*position.encode()))
    again = [n for n in range(MAX_COUNT + 11) if reading.take(STDOUT, T)]
    assert len(again) == 11


def test_a_read_counts_per_stream_and_keeps_lines_whose_clock_went_back() -> None:
    reading = Reading(ContainerPosition((5, 1), (3, 0)))
    taken = [
        reading.take(stream, stamp)
        for stream, stamp in [(STDOUT, 5), (STDERR, 3), (STDOUT, 5), (STDERR, 7), (STDOUT, 9)]
    ]
    assert taken == [False, True, True, True, True]  # the one stdout line at 5 was sent
    assert reading.position() == ContainerPosition((9, 1), (7, 1))
    assert reading.take(STDOUT, 6)  # after the start: new, though the clock went back
    assert not reading.take(STDOUT, 4)  # before the start: sent already
    assert reading.position() == ContainerPosition((9, 1), (7, 1))
    assert reading.position().since() == 7 and reading.position().newest() == 9


class _Killed(BaseException):
    """The agent killed at this point."""


def test_a_kill_once_readers_started_leaves_no_first_run_to_repeat(
    rings: RingFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``read_from: end`` skips what running containers printed before the very first
    start only: once a reader may have read, a restart must not skip to the end again."""
    daemon = FakeDaemon(RACING)
    monkeypatch.setattr(collector_module.docker, "APIClient", lambda **_: daemon)

    def killed(*_: object) -> None:
        raise _Killed

    monkeypatch.setattr(DockerCollector, "_start_reader", killed)
    agent = Agent(rings, tmp_path, DockerSourceConfig(read_from="end"))
    with pytest.raises(_Killed):
        agent.collector()._connect()
    assert agent.marker.exists()  # the next start is not a first run


@pytest.mark.parametrize("read_from", ["beginning", "end"])
def test_a_first_run_reads_a_container_that_exited_before_the_source_connected(
    rings: RingFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_from: str
) -> None:
    """The agent is ready once its processes run; a container that then runs and exits
    before the docker source has loaded its client and connected ran while the agent
    was up: a first run reads it (with ``read_from: end`` from the agent's start), and
    skips only containers that had stopped before."""
    log = [(STDOUT, T - 2 * US, "before the start"), (STDOUT, T + US, "after the start")]
    daemon = FakeDaemon(log, finished_at=T + 2 * US)
    monkeypatch.setattr(collector_module.docker, "APIClient", lambda **_: daemon)
    started: list[str] = []
    monkeypatch.setattr(DockerCollector, "_start_reader", lambda _, c: started.append(c.id))
    agent = Agent(rings, tmp_path, DockerSourceConfig(read_from=read_from))  # type: ignore[arg-type]
    collector = agent.collector(started_ns=T)
    collector._connect()
    collector._disconnect()
    assert started == [CONTAINER]
    agent.run(daemon, collector)
    wanted = log if read_from == "beginning" else log[1:]
    assert [text for _, _, text in agent.delivered] == [text for _, _, text in wanted]

    agent.marker.unlink()  # another first run, of an agent started after the exit
    agent.checkpoint = {}
    started.clear()
    later = agent.collector(started_ns=T + 3 * US)
    later._connect()
    later._disconnect()
    assert started == []
