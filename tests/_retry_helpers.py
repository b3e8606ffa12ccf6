"""In-process wiring of the retry process for tests: real rings, a real DLQ writer, a real
counter table and a clock that only moves when the test moves it.

Each sink gets what the supervisor gives it: a failure ring (sink → retry) and a
redelivery ring (retry → sink). :class:`SinkEnd` is the sink's side of both, so a test
can write failure records with ``retry.messages.send`` exactly as a SinkRunner
does, or hand the same rings to a real :class:`SinkRunner`.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from _component_helpers import RingFactory, build_batch, config_from_yaml

from logcap.config import Config
from logcap.dlq.record import DlqRecord, read_segment
from logcap.dlq.writer import DlqWriter, segment_paths
from logcap.metrics import NOTHING, Counter, CounterBlock, CounterTable
from logcap.retry.heap import DelayHeap
from logcap.retry.messages import read_message, send
from logcap.retry.policy import BackoffPolicy
from logcap.retry.process import spool_segment_bytes
from logcap.retry.service import RetryService, SinkLane
from logcap.retry.spool import Spool
from logcap.ringbuf import Consumer, Producer, Ring, unlink

TS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
WALL_ORIGIN_NS = 1_700_000_000_000_000_000  # wall time when the test clock reads 0
ENTRIES = 3  # entries in the batches of sample_batch()
EXCHANGE_PAYLOAD = 96 * 1024  # failure/redelivery slot payload: a batch plus its header


def sample_batch(tag: str = "b", size: int = 0) -> bytes:
    """Batch-slot bytes (dispatcher layout) of ENTRIES entries; ``size`` pads each line."""
    return build_batch([("app", TS, [f"{tag}-{i} " + "x" * size for i in range(ENTRIES)])])[0]


def at_ceiling(low: float, high: float) -> float:
    """A stand-in for random.uniform that always draws the top of the range."""
    return high


class Clock:
    """Monotonic and wall time that move only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def wall_ns(self) -> int:
        return WALL_ORIGIN_NS + round(self.now * 1e9)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run_config(tmp_path: Path, retry: str = "", dlq: str = "", sinks: int = 2) -> Config:
    """A whole run config from YAML; ``retry`` / ``dlq`` are the bodies of flow mappings."""
    names = ", ".join(f"{chr(ord('a') + i)}: {{type: blackhole}}" for i in range(sinks))
    text = f"""\
        data_dir: data
        sources: {{app: {{type: file, include: ['*.log'], max_line_bytes: 1KiB}}}}
        sinks: {{{names}}}
        dispatcher: {{batch_max_bytes: 4KiB, batch_max_events: 1}}
        retry: {{{retry}}}
        dlq: {{{dlq}}}
        """
    return config_from_yaml(textwrap.dedent(text), tmp_path)


def policy_of(
    config: Config, uniform: Callable[[float, float], float] = at_ceiling
) -> BackoffPolicy:
    """The backoff policy of ``config`` (as retry/process.py builds it)."""
    r = config.retry
    return BackoffPolicy(
        r.initial_backoff, r.max_backoff, r.max_attempts, r.max_retry_duration, uniform
    )


@dataclass(frozen=True)
class Redelivery:
    """A redelivery record copied out of its slot."""

    kind: int
    batch_seq: int
    attempts: int
    first_failure_ns: int
    entries: int
    reason: str
    batch: bytes


@dataclass
class SinkEnd:
    """A sink's side of its two rings, and its counter block."""

    name: str
    failures: Producer
    redeliveries: Consumer
    block: CounterBlock

    @property
    def owned_low(self) -> int:
        return self.block.get(Counter.OWNED_LOW)

    def taken_in(self) -> int:
        """Highest failure-ring sequence the retry service has released."""
        return self.failures.ring.consumer_cursor(0)

    def report(
        self,
        kind: int,
        batch_seq: int,
        *,
        first_ns: int,
        attempts: int = 1,
        batch: bytes = b"",
        reason: str = "boom",
        code: int = 0,
        entries: int = ENTRIES,
    ) -> int:
        """Publish one failure-ring record, as SinkRunner._report does; return its seq."""
        return send(
            self.failures,
            self.failures.claim(1, timeout=2.0),
            kind,
            batch_seq,
            attempts,
            first_ns,
            entries,
            reason,
            batch,
            code,
        )

    def redelivered(self) -> list[Redelivery]:
        """Every redelivery published and not yet taken; each slot released after copying."""
        out = []
        ring = self.redeliveries
        while ring.next_sequence <= ring.available():
            seq = ring.next_sequence
            m = read_message(ring.read(seq))
            out.append(
                Redelivery(
                    m.kind,
                    m.batch_seq,
                    m.attempts,
                    m.first_failure_ns,
                    m.entries,
                    m.reason,
                    bytes(m.batch),
                )
            )
            del m
            ring.release(seq)
        return out


@dataclass
class RetryRig:
    """A RetryService over real rings, a real DLQ, a real spool and a real counter table."""

    service: RetryService
    sinks: dict[str, SinkEnd]
    clock: Clock
    dlq_dir: Path
    table: CounterTable
    retry_block: CounterBlock
    rebuild: Callable[[], RetryService]

    def step(self, times: int = 1) -> None:
        for _ in range(times):
            self.service.step()

    def restart(self) -> None:
        """The retry process dies (nothing closed) and a new one starts on the same
        rings, spool and DLQ directory."""
        self.service.spool.sync()  # what the dead process's writes left in the page cache
        self.service = self.rebuild()

    @property
    def spooled(self) -> list[int]:
        """Batch sequences waiting in the spool, oldest first."""
        return [s.batch_seq for s in sorted(self.service.spool.live.values(), key=lambda s: s.id)]

    def dlq_records(self) -> list[DlqRecord]:
        return [r for path in segment_paths(self.dlq_dir) for _, r in read_segment(path)]


class RigFactory:
    """Builds RetryRigs; removes their segments and closes their DLQ writers at teardown."""

    def __init__(self, rings: RingFactory, tmp_path: Path) -> None:
        self.rings = rings
        self.tmp_path = tmp_path
        self._tables: list[CounterTable] = []
        self._writers: list[DlqWriter] = []
        self._spools: list[Spool] = []

    def __call__(
        self,
        retry: str = "",
        dlq: str = "",
        sinks: int = 2,
        heap: DelayHeap | None = None,
        redelivery_slots: int = 4,
        on_low: Callable[[Ring, int], None] | None = None,
    ) -> RetryRig:
        config = run_config(self.tmp_path, retry, dlq, sinks)
        clock = Clock()
        table = CounterTable.create(f"logcap-{os.getpid()}-test-{uuid.uuid4().hex[:10]}-ct", 8)
        self._tables.append(table)
        ends: dict[str, SinkEnd] = {}
        exchanges = []
        for index, name in enumerate(config.sinks):
            fail = self.rings.create(4, EXCHANGE_PAYLOAD, role=f"fail-{name}")
            redo = self.rings.create(redelivery_slots, EXCHANGE_PAYLOAD, role=f"redo-{name}")
            block = table.block(index)
            block.set(Counter.OWNED_LOW, NOTHING)  # as the supervisor does on creation

            def publish_low(low: int, block: CounterBlock = block, ring: Ring = fail) -> None:
                if on_low is not None:
                    on_low(ring, low)
                block.set(Counter.OWNED_LOW, low)

            exchanges.append((index, name, fail, redo, block, publish_low))
            ends[name] = SinkEnd(name, Producer(fail), Consumer(redo), block)
        dlq_dir = Path(config.data_dir) / "dlq"
        retry_block = table.block(7)
        r = config.retry

        def build(first_heap: DelayHeap | None = heap) -> RetryService:
            writer = DlqWriter(dlq_dir, config.dlq)
            self._writers.append(writer)
            lanes = [
                SinkLane(index, name, Consumer(fail), Producer(redo), block, publish_low)
                for index, name, fail, redo, block, publish_low in exchanges
            ]
            spool = Spool(
                Path(config.data_dir) / "spool",
                r.spool_max_bytes,
                spool_segment_bytes(r),
                wall_ns=clock.wall_ns,
            )
            self._spools.append(spool)
            return RetryService(
                policy_of(config),
                first_heap if first_heap is not None else DelayHeap(r.max_entries, r.max_bytes),
                writer,
                lanes,
                retry_block,
                spool,
                clock=clock,
                wall_ns=clock.wall_ns,
            )

        return RetryRig(build(), ends, clock, dlq_dir, table, retry_block, lambda: build(None))

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        for spool in self._spools:
            spool.close()
        for table in self._tables:
            name = table.shm.name
            table.close()
            unlink(name)


def rig_fixture(rings: RingFactory, tmp_path: Path) -> Iterator[RigFactory]:
    """Body of a ``make_rig`` fixture."""
    factory = RigFactory(rings, tmp_path)
    try:
        yield factory
    finally:
        factory.close()
