"""In-process wiring shared by the component tests: configs from YAML, real rings, records.

Nothing here replaces a logcap component: rings are real shared-memory segments, records
are written with the collector's own record layout, batches with the dispatcher's.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from logcap.capture._record import HEADER_SIZE, BlockHeader, read_header, write_header
from logcap.config import Config, parse_config
from logcap.dispatch.batch import PREFIX, Batch, BatchMeta, Group
from logcap.dispatch.checkpoint import FilePosition
from logcap.ringbuf import Consumer, Producer, Ring, unlink


def config_from_yaml(text: str, base_dir: Path) -> Config:
    """A validated config from YAML text (dedented), relative paths under ``base_dir``."""
    return parse_config(textwrap.dedent(text), base_dir=base_dir)


def ring_name(role: str) -> str:
    """A segment name no other test (or run) uses; the pid prefix lets sweeps find it."""
    return f"logcap-{os.getpid()}-test-{uuid.uuid4().hex[:10]}-{role}"


class RingFactory:
    """Creates real rings and unlinks every one of them at teardown."""

    def __init__(self) -> None:
        self._rings: list[Ring] = []

    def create(self, slots: int, slot_payload: int, consumers: int = 1, role: str = "r") -> Ring:
        """A new ring of ``slots`` slots holding ``slot_payload`` bytes each."""
        ring = Ring.create(ring_name(role), slots, slot_payload, consumers)
        self._rings.append(ring)
        return ring

    def attach(self, ring: Ring) -> Ring:
        """A second mapping of ``ring`` (what another process would see)."""
        other = Ring.attach(ring.shm.name)
        self._rings.append(other)
        return other

    def close_all(self) -> None:
        """Unmap and unlink everything created here."""
        for ring in self._rings:
            ring.close()
            unlink(ring.shm.name)
        self._rings.clear()


def ring_fixture() -> Iterator[RingFactory]:
    """Body of a ``rings`` fixture: yields a factory, then removes its segments."""
    factory = RingFactory()
    try:
        yield factory
    finally:
        factory.close_all()


@dataclass(frozen=True)
class Record:
    """A collector record copied out of its slot."""

    header: BlockHeader
    path: bytes
    data: bytes


def read_record(view: memoryview) -> Record:
    """Copy the record in ``view`` (a published collector slot)."""
    header = read_header(view)
    path_end = HEADER_SIZE + header.path_len
    return Record(
        header,
        bytes(view[HEADER_SIZE:path_end]),
        bytes(view[path_end : path_end + header.data_len]),
    )


def drain_records(consumer: Consumer) -> list[Record]:
    """Every record published and not yet consumed; each slot is released after copying."""
    records = []
    while consumer.next_sequence <= consumer.available():
        seq = consumer.next_sequence
        records.append(read_record(consumer.read(seq)))
        consumer.release(seq)
    return records


def publish_block(
    producer: Producer,
    path: str,
    data: bytes,
    *,
    start: int = 0,
    read_ns: int = 1_700_000_000_123_456_789,
    dev: int = 11,
    ino: int = 22,
    flags: int = 0,
    end: int | None = None,
) -> int:
    """Publish one collector record the way a FileTailer does; return its sequence."""
    path_bytes = os.fsencode(path)
    seq = producer.claim(1, timeout=2.0)
    slot = producer.payload(seq)
    header = BlockHeader(
        read_ns,
        start,
        start + len(data) if end is None else end,
        dev,
        ino,
        0,  # fingerprint: unknown (tests of identity use real files)
        len(data),
        len(path_bytes),
        flags,
    )
    at = write_header(slot, header, path_bytes)
    slot[at : at + len(data)] = data
    producer.commit(seq, at + len(data))
    producer.publish(seq)
    return int(seq)


@dataclass(frozen=True)
class ReadBatch:
    """A batch copied out of its slot, with its payload already split into entries."""

    meta: BatchMeta
    payload: bytes
    entries: list[dict[str, Any]]
    slot_length: int


def read_batches(consumer: Consumer, release: bool = True) -> list[ReadBatch]:
    """Every batch published past the consumer's position (optionally released)."""
    batches = []
    while consumer.next_sequence <= consumer.available():
        seq = consumer.next_sequence
        view = consumer.read(seq)
        batch = Batch.from_slot(view)
        payload = bytes(batch.payload)
        entries = [json.loads(line) for line in payload.splitlines()]
        batches.append(ReadBatch(batch.meta, payload, entries, len(view)))
        del batch, view
        if release:
            consumer.release(seq)
        else:
            consumer.next_sequence = seq + 1
    return batches


def encode_entry(source: str, labels: dict[str, str], timestamp_ns: int, message: str) -> bytes:
    """One NDJSON entry line, written independently of the dispatcher's encoder."""
    stamp = rfc3339_ns(timestamp_ns)
    entry = {
        "timestamp": stamp,
        "ingested_at": stamp,
        "source": source,
        "labels": labels,
        "message": message,
    }
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def rfc3339_ns(ns: int) -> str:
    """``2024-01-01T00:00:00.000000001Z``."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def build_batch(
    groups: list[tuple[str, int, list[str]]],
    labels: dict[str, str] | None = None,
) -> tuple[bytes, BatchMeta]:
    """Slot bytes of a batch whose groups are ``(source, timestamp_ns, messages)``.

    Laid out by hand from the format documented in dispatch/batch.py, so sink tests do not
    depend on how the dispatcher assembles its pieces.
    """
    labels = labels if labels is not None else {"host": "h", "path": "/var/log/app.log"}
    pieces = [b"".join(encode_entry(s, labels, ts, m) for m in msgs) for s, ts, msgs in groups]
    meta = BatchMeta(
        created_ns=1,
        count=sum(len(m) for _, _, m in groups),
        groups=[
            Group(s, labels, ts, len(msgs), len(piece))
            for (s, ts, msgs), piece in zip(groups, pieces, strict=True)
        ],
        progress=[FilePosition("app", "/var/log/app.log", 1, 2, 3)],
    )
    encoded = msgspec.msgpack.encode(meta)
    return PREFIX.pack(len(encoded), 0) + encoded + b"".join(pieces), meta


def batch_view(slot_bytes: bytes) -> Batch:
    """A Batch over a private copy of ``slot_bytes`` (for sinks tested without a ring)."""
    return Batch.from_slot(memoryview(bytearray(slot_bytes)))


def publish_batch(producer: Producer, slot_bytes: bytes) -> int:
    """Copy prepared batch bytes into the next slot of a batch ring and publish it."""
    seq = producer.claim(1, timeout=2.0)
    producer.write(seq, slot_bytes)
    producer.publish(seq)
    return int(seq)
