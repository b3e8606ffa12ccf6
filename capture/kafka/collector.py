"""The kafka collector: a consumer-group member whose offsets follow delivery.

Nothing is committed by librdkafka (``enable.auto.commit`` and ``enable.auto.offset.store``
off). Every record published for a partition carries its position (capture/_entries.py):
``ino`` a 63-bit hash of the topic, ``dev`` the partition, ``end`` the next offset; the
dispatcher checkpoints it into ``data_dir/checkpoints.json`` like a file's offset once
every sink delivered the entries before it, or the retry spool/DLQ holds them
(dispatch/acks.py). Every ``commit_interval`` this collector reads that file and commits
those offsets to the group, for the partitions it owns, and only within what it
published since it was assigned them: never beyond what was delivered.

Rebalances. On revoke, nothing more is taken from the partitions (librdkafka stops
fetching them; every message handed to us is already in the ring), the collector waits
up to ``revoke_timeout`` for the checkpoint to reach what it published, commits what the
checkpoint holds, then gives them up. On assign it resumes from the group's committed
offset, or from this agent's own checkpoint when that is ahead (a kill -9 after the
checkpoint was saved and before it was committed): a checkpointed offset is a prefix
this agent delivered, which started at or after an offset the group had committed, so
starting there skips only what was delivered. A crash anywhere costs duplicates, never a
loss: the next owner starts from the last commit, which is never past a delivery.
On stop (SIGTERM, a drain or a reload) it publishes what it took, waits the same way,
commits, closes its ring and leaves the group.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from logcap.capture._entries import (
    NO_RUNS,
    Position,
    pack_records,
    pack_rich,
    record_capacity,
    write_entries,
)
from logcap.capture.kafka.consumer import librdkafka_config
from logcap.capture.kafka.decode import Decoder, KafkaEntry
from logcap.dispatch.checkpoint import CheckpointStore
from logcap.errors import EntryTooLarge
from logcap.metrics import Counter

if TYPE_CHECKING:
    from logcap.capture.base import CollectorEnv
    from logcap.capture.kafka.config import KafkaSourceConfig

log = logging.getLogger(__name__)
PartitionKey = tuple[str, int]
_pack = msgspec.msgpack.Encoder().encode
WAIT_STEP = 0.05  # seconds between looks at the checkpoint while giving partitions up


def topic_key(topic: str) -> int:
    """The position's ``ino`` for a topic: 63 bits of its sha256, never 0."""
    return int.from_bytes(hashlib.sha256(topic.encode()).digest()[:8], "big") >> 1 | 1


def partition_path(topic: str, partition: int) -> str:
    """The position's path, which names the partition in checkpoints.json."""
    return f"kafka://{topic}/{partition}"


@dataclass
class Owned:
    """A partition assigned to this member, since its assignment."""

    start: int | None  # offset it resumed from (None: the reset policy's, not yet seen)
    published: int | None  # next offset after the last one published (None: nothing yet)
    committed: int | None  # offset last committed to the group (None: unknown)


def _runs(entries: list[KafkaEntry]) -> list[list[Any]]:
    """Consecutive entries with equal labels as ``[labels, stamps, messages, levels,
    fields]`` runs (capture/_entries.py), levels/fields None when no entry has one."""
    runs: list[list[Any]] = []
    last: dict[str, str] | None = None
    for labels, stamp, message, level, fields in entries:
        if labels is not last and labels != last:
            runs.append([labels, [], [], [], []])
            last = labels
        run = runs[-1]
        run[1].append(stamp)
        run[2].append(message)
        run[3].append(level)
        run[4].append(fields)
    for run in runs:
        if all(level is None for level in run[3]):
            run[3] = None
        if all(fields is None for fields in run[4]):
            run[4] = None
    return runs


class KafkaCollector:
    """Consumes until told to stop; see the module docstring."""

    def __init__(self, name: str, config: KafkaSourceConfig, env: CollectorEnv) -> None:
        self.name = name
        self.config = config
        self.producer = env.producer
        self.counters = env.counters
        self.should_stop = env.should_stop
        self.processor = env.processor()
        self.static_labels = dict(config.labels)
        self.store = CheckpointStore(env.data_dir)
        self.decoder = Decoder(config.decoding, list(config.labels_from), config.header_labels)
        self.owned: dict[PartitionKey, Owned] = {}
        self.consumer: Consumer | None = None
        self._entry_bytes = 256  # packed bytes per entry, as last seen (_pack_slices)

    # -- the main loop -------------------------------------------------------------------
    def run(self) -> None:
        """Consume, publish, commit what was delivered; on stop, give everything up."""
        consumer = self.consumer = Consumer(
            {**librdkafka_config(self.config), "logger": log, "client.id": f"logcap-{self.name}"}
        )
        consumer.subscribe(
            list(self.config.topics),
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )
        next_commit = time.monotonic() + self.config.commit_interval
        try:
            while not self.should_stop():
                messages = consumer.consume(self.config.max_poll_records, 0.1)
                if messages:
                    self._publish(messages)
                if time.monotonic() >= next_commit:
                    self._commit(self._saved(), list(self.owned))
                    self._report_lag(consumer)
                    next_commit = time.monotonic() + self.config.commit_interval
        finally:
            try:
                self._give_up(list(self.owned))
            finally:
                self.producer.close()
                consumer.close()  # leaves the group (its revoke finds nothing owned)

    # -- publishing ------------------------------------------------------------------------
    def _publish(self, messages: list[Any]) -> None:
        read_ns = time.time_ns()
        by_partition: dict[PartitionKey, list[Any]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self.counters.add(Counter.ERRORS)
                    log.warning("source %s: %s", self.name, error.str())
                continue
            key = (message.topic(), message.partition())
            if key in self.owned:  # (a revoked partition's messages are not ours to send)
                by_partition.setdefault(key, []).append(message)
        for (topic, partition), taken in by_partition.items():
            failed = self.decoder.failed
            entries = self.decoder.entries(taken, read_ns)
            if self.decoder.failed > failed:
                self.counters.add(Counter.ERRORS, self.decoder.failed - failed)
            end = taken[-1].offset() + 1
            position = Position(
                partition_path(topic, partition).encode(), topic_key(topic), end, 0, partition
            )
            capacity = record_capacity(self.producer, position.path)
            chunks = self._pack(entries, capacity)
            for number, data in enumerate(chunks, 1):
                seq = self.producer.claim(1)
                last = number == len(chunks)
                write_entries(self.producer, seq, data, read_ns, position if last else None)
                self.producer.publish(seq)
            state = self.owned[(topic, partition)]
            if state.start is None:
                state.start = taken[0].offset()
            state.published = end
            self.counters.add(Counter.EVENTS_IN, len(taken))
            self.counters.add(Counter.BYTES_IN, sum(len(m) for m in taken))  # value bytes

    def _pack(self, entries: list[KafkaEntry], capacity: int) -> list[bytes]:
        if self.processor is not None:
            processed = self.processor.run_tuples(
                [(labels, stamp, message) for labels, stamp, message, _, _ in entries],
                time.time_ns(),
                self.static_labels,
            )
            return pack_rich(processed, capacity, self.counters) or [NO_RUNS]
        try:
            return self._pack_slices(entries, capacity)
        except EntryTooLarge:
            return self._pack_slices([self._fit(e, capacity) for e in entries], capacity)

    def _pack_slices(self, entries: list[KafkaEntry], capacity: int) -> list[bytes]:
        """:func:`pack_records` over slices of about one slot's worth (by the packed size
        per entry seen last): a poll's 5,000 entries are not packed whole first only to
        learn that they need 20 slots."""
        chunks: list[bytes] = []
        start = 0
        while start < len(entries):
            count = max(1, capacity * 15 // (16 * max(1, self._entry_bytes)))
            packed = pack_records(entries[start : start + count], capacity, _runs)
            taken = min(count, len(entries) - start)
            self._entry_bytes = max(1, sum(map(len, packed)) // taken)
            chunks += packed
            start += taken
        return chunks

    def _fit(self, entry: KafkaEntry, capacity: int) -> KafkaEntry:
        """An entry too large for a collector slot: its fields go, then its message's end."""
        if len(_pack(_runs([entry]))) <= capacity:
            return entry
        self.counters.add(Counter.ERRORS)
        labels, stamp, message, level, _ = entry
        overflow = len(_pack(_runs([(labels, stamp, message, level, None)]))) - capacity
        if overflow > 0:
            raw = message.encode("utf-8", "surrogatepass")
            message = raw[: max(0, len(raw) - overflow - 16)].decode("utf-8", "ignore")
        return labels, stamp, message, level, None

    # -- offsets ---------------------------------------------------------------------------
    def _saved(self) -> dict[PartitionKey, int]:
        """This source's checkpointed (delivered) offsets, by partition."""
        saved: dict[PartitionKey, int] = {}
        for position in self.store.positions_for(self.name).values():
            topic, _, partition = position.path.removeprefix("kafka://").rpartition("/")
            if topic and partition.isdigit():
                saved[(topic, int(partition))] = position.offset
        return saved

    def _commit(self, saved: dict[PartitionKey, int], keys: list[PartitionKey]) -> None:
        """Commit, for the owned partitions among ``keys``, the checkpointed offset when it
        lies within what was published since the assignment and is new to the group."""
        offsets = []
        for key in keys:
            state, offset = self.owned.get(key), saved.get(key)
            if state is None or offset is None or state.start is None:
                continue
            top = state.start if state.published is None else state.published
            if not state.start <= offset <= top:
                continue  # a position of an earlier ownership, or not ours to vouch for
            if state.committed is not None and offset <= state.committed:
                continue
            offsets.append((key, offset))
        if not offsets or self.consumer is None:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, offset) for (t, p), offset in offsets],
                asynchronous=False,
            )
        except KafkaException as exc:  # e.g. a rebalance under way: the next round retries
            log.info("source %s: commit not accepted: %s", self.name, exc)
            return
        for key, offset in offsets:
            self.owned[key].committed = offset

    def _report_lag(self, consumer: Consumer) -> None:
        """Messages past the group's committed offset (the resumed one until a commit),
        over the owned partitions: what a crash now would make the group read again, and
        what the sinks have yet to take (the high watermark is the last fetch's)."""
        lag = 0
        for (topic, partition), state in self.owned.items():
            done = state.committed if state.committed is not None else state.start
            if done is None:
                continue
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high is not None and high >= 0:
                lag += max(0, high - done)
        self.counters.set(Counter.KAFKA_LAG, lag)

    def _give_up(self, keys: list[PartitionKey]) -> None:
        """Wait (up to revoke_timeout) until the checkpoint holds what was published from
        ``keys``, commit it, and forget them."""
        deadline = time.monotonic() + self.config.revoke_timeout
        saved = self._saved()
        while True:
            waiting = [
                key
                for key in keys
                if (state := self.owned.get(key)) is not None
                and state.published is not None
                and saved.get(key, -1) < state.published
            ]
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(WAIT_STEP)
            saved = self._saved()
        if waiting:
            log.warning(
                "source %s: %d partition(s) given up before their last messages were "
                "delivered: the next owner reads those again",
                self.name,
                len(waiting),
            )
        self._commit(saved, keys)
        for key in keys:
            self.owned.pop(key, None)

    # -- rebalance callbacks (run inside consume() or close()) ----------------------------
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        saved = self._saved()
        try:
            committed = consumer.committed(partitions, timeout=30)
        except KafkaException as exc:
            log.warning("source %s: committed offsets unknown: %s", self.name, exc)
            committed = partitions
        for tp in committed:
            key = (tp.topic, tp.partition)
            group = tp.offset if tp.offset >= 0 else None
            own = saved.get(key)
            if own is not None and (group is None or own > group):
                tp.offset = own  # delivered here already (see the module docstring)
            start = tp.offset if tp.offset >= 0 else None
            self.owned[key] = Owned(start, None, group)
        consumer.assign(committed)
        log.info(
            "source %s: assigned %s",
            self.name,
            ", ".join(f"{t.topic}[{t.partition}]@{t.offset}" for t in committed) or "nothing",
        )

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._give_up([key for key in keys if key in self.owned])
        log.info("source %s: gave up %d partition(s)", self.name, len(keys))

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a revoke (the session expired): another member
        may own them now, so nothing is committed for them."""
        for tp in partitions:
            self.owned.pop((tp.topic, tp.partition), None)
        log.warning("source %s: lost %d partition(s) to the group", self.name, len(partitions))
