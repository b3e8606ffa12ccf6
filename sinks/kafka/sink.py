"""The kafka sink: each entry is one message whose value is the entry's JSON, as the
dispatcher encoded it (never re-encoded here).

A batch counts as delivered only when the brokers acknowledged every one of its messages
(``acks`` all by default): ``write`` hands the messages to librdkafka, ``flush`` waits
until librdkafka has an outcome for each. Only failures call back into Python
(``delivery.report.only.error``), so a delivered message costs no Python call; a failure
marks the batch it came from, which the runner then hands to the retry process. A
message librdkafka gave up on (``delivery_timeout``, e.g. brokers down) is such a failure
and is retried like any other: nothing expires silently. The local queue holds at most
``max_in_flight_messages``; producing waits above that, so memory stays bounded however
long the brokers are away.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from logcap.dispatch.batch import Batch, Group
from logcap.errors import DeliveryError, Permanent
from logcap.metrics import CounterBlock
from logcap.sinks.base import Failures
from logcap.sinks.kafka.config import KafkaSinkConfig
from logcap.sinks.kafka.producer import delivery_error, librdkafka_config
from logcap.sinks.template import GroupKey, Render, compile_template, group_key, member_getter

log = logging.getLogger(__name__)
_NOT_TOPIC_CHAR = re.compile(r"[^A-Za-z0-9._-]")
CLOSE_TIMEOUT = 10.0
_CACHED_REFUSALS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
    }
)
Headers = list[tuple[str, str | bytes | None]]
Route = tuple[str, bytes | None, Headers | None]  # topic, key, headers


def topic_renderer(template: str) -> Render:
    """A topic name per group from a template (sinks/template.py); a member the group
    lacks is 'unknown', characters Kafka does not allow become '_'."""
    render = compile_template(template, "unknown")
    return lambda group: _NOT_TOPIC_CHAR.sub("_", render(group))[:249]


class Router:
    """Topic, key and headers of a group's messages (the same for every entry of it)."""

    def __init__(self, config: KafkaSinkConfig) -> None:
        self.config = config
        self.topic = topic_renderer(config.topic)
        self.routes = [
            ({level.lower() for level in route.levels}, topic_renderer(route.topic))
            for route in config.level_routes
        ]
        # key_field / header_labels: a label name, or 'level', 'labels.X', 'fields.X'
        key = config.key_field
        self.key = None if key is None else member_getter(_as_member(key), "")
        self.headers = [
            (name, member_getter(_as_member(name), "")) for name in config.header_labels
        ]
        self.cache: dict[GroupKey, Route] = {}

    def route(self, group: Group) -> Route:
        cache_key = group_key(group)
        found = self.cache.get(cache_key)
        if found is not None:
            return found
        labels = group.labels
        render = self.topic
        # a pipeline's level for the group (dispatch/route.py regroup), else the label
        level = (group.level or labels.get("level", "")).lower()
        for levels, topic in self.routes:
            if level in levels:
                render = topic
                break
        key: bytes | None = None
        if self.key is not None:
            value = self.key(group) or labels.get("source_id") or group.source
            key = value.encode()
        headers: Headers = [
            (name, value.encode()) for name, get in self.headers if (value := get(group))
        ]
        found = (render(group), key, headers or None)
        if len(self.cache) > 10_000:
            self.cache.clear()
        self.cache[cache_key] = found
        return found


def _as_member(name: str) -> str:
    """A key_field / header_labels entry as a member: a bare name is a label (as it was
    before fields and levels could be named; 'source' is the label, not the source)."""
    if name == "level" or name.startswith(("labels.", "fields.")):
        return name
    return "labels." + name


class KafkaSink:
    """Produces batches; ``flush`` reports which of them the brokers did not take."""

    def __init__(
        self,
        config: KafkaSinkConfig,
        counters: CounterBlock,
        make_producer: Callable[[dict[str, Any]], Producer] = Producer,
    ) -> None:
        self.config = config
        self.counters = counters
        self.make_producer = make_producer
        self.producer = self._new_producer()
        self.router = Router(config)
        # the payloads written since the last flush (views into ring slots the runner
        # holds until flush returns), to find which batch a failed message came from
        self.round: list[list[memoryview]] = []
        self.failed: list[tuple[bytes, DeliveryError]] = []
        self.fatal: KafkaError | None = None
        self.renew = False  # a topic-level refusal: librdkafka caches it, so start anew

    def _new_producer(self) -> Producer:
        props = librdkafka_config(self.config)
        # one callback for the producer, not one per message (~0.3 µs each): only
        # failures call it (delivery.report.only.error), so its cost is theirs alone
        props["on_delivery"] = self._delivery_failed
        props["logger"] = log  # librdkafka's own messages go through logging, tagged
        return self.make_producer(props)

    def _delivery_failed(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        self.failed.append((message.value() or b"", delivery_error(error, message.topic())))
        if error.fatal():
            self.fatal = error
        self.renew = self.renew or error.code() in _CACHED_REFUSALS

    def write(self, batch: Batch) -> None:
        self.round.append(batch.chunks())
        produce = self.producer.produce
        for group, data in batch.groups():
            topic, key, headers = self.router.route(group)
            values = bytes(data).split(b"\n")
            values.pop()  # every entry ends in b"\n": the last piece is empty
            # the message timestamp is the produce time (Kafka's CreateTime); the event
            # time is in the value: passing it costs ~0.25 µs a message
            for value in values:
                try:
                    produce(topic, value, key, headers=headers)
                except BufferError:
                    self._produce_when_room(topic, value, key, headers)
                except KafkaException as exc:  # refused before sending: too large...
                    raise self._refused(exc, topic) from exc
        self.producer.poll(0)

    def _produce_when_room(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers | None
    ) -> None:
        """max_in_flight_messages reached: wait for acknowledgements (or for librdkafka
        to give up on messages, which then fail their batches)."""
        while True:
            self.producer.poll(0.05)
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                continue
            except KafkaException as exc:
                raise self._refused(exc, topic) from exc

    def _refused(self, exc: KafkaException, topic: str) -> DeliveryError:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is None:
            return Permanent(f"kafka: {exc} (topic {topic})", "rejected")
        self.renew = self.renew or error.code() in _CACHED_REFUSALS
        return delivery_error(error, topic)

    def flush(self) -> Failures:
        """Wait until every message written since the last flush is acknowledged or
        failed (at most ``delivery_timeout``); return the batches that failed."""
        while self.producer.flush(1.0) > 0:
            pass
        failures = self._failed_batches()
        self.round = []
        self.failed = []
        if self.fatal is not None:
            # an idempotent producer that hit a fatal error refuses everything: start anew
            log.error("kafka producer fatal error, recreating it: %s", self.fatal.str())
            self.fatal = None
            self.producer = self._new_producer()
        elif self.renew:
            # librdkafka keeps refusing a topic it was refused (authorization, unknown)
            # until its next metadata refresh, minutes away: once the operator fixed the
            # cause, the next batches must not be dead-lettered on a stale verdict
            log.warning("kafka: a topic was refused; recreating the producer")
            self.producer = self._new_producer()
        self.renew = False
        return failures

    def _failed_batches(self) -> Failures:
        """Which batches of this round the failed messages came from (the rare path:
        each payload is searched for the failed values)."""
        if not self.failed:
            return []
        found: dict[int, DeliveryError] = {}
        payloads = [b"".join(chunks) for chunks in self.round]
        for value, error in self.failed:
            for index, payload in enumerate(payloads):
                if index not in found and payload.find(value + b"\n") >= 0:
                    found[index] = error
        if not found:  # cannot happen unless a value was lost: fail the round, never skip
            found = {index: self.failed[0][1] for index in range(len(payloads))}
        return sorted(found.items())

    def close(self) -> None:
        """Give librdkafka a bounded time to finish, then let it go."""
        remaining = self.producer.flush(CLOSE_TIMEOUT)
        if remaining:
            log.warning("kafka: %d messages not acknowledged at close", remaining)
