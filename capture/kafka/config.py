"""Config of the ``kafka`` source."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec

from logcap.capture.base import Problems
from logcap.capture.labels import LABELS_DOC, LabelName, check_static
from logcap.config._base import StrictStruct, doc
from logcap.config._units import PositiveDuration
from logcap.sinks.kafka.config import KafkaSaslConfig, KafkaTlsConfig

if TYPE_CHECKING:
    from logcap.capture.base import Collector, CollectorEnv

MessageLabel = Literal["topic", "partition", "offset", "key"]


class KafkaSourceConfig(StrictStruct, tag_field="type", tag="kafka", frozen=True):
    """Consume topics as a member of a consumer group; a partition's offset is committed
    only once every sink delivered (or the retry spool/DLQ holds) what came before it."""

    #: labels a message's labels_from / header_labels set (static labels cannot replace
    #: them); `host` is the aggregator's, or (decoding logcap) the entry's own
    BUILT_IN_LABELS: ClassVar[frozenset[str]] = frozenset(
        {"host", "topic", "partition", "offset", "key"}
    )

    bootstrap_servers: Annotated[
        str, doc("Comma-separated host:port list of brokers to bootstrap from.", min_length=1)
    ]
    topics: Annotated[
        list[str],
        doc(
            "Topic names to subscribe to, or one regular expression starting with '^' "
            "(e.g. '^logs-.*'): every topic it matches, new ones included.",
            min_length=1,
        ),
    ]
    group_id: Annotated[
        str,
        doc(
            "The consumer group: agents with the same group_id split the partitions "
            "between them, and a partition's committed offset is the group's.",
            min_length=1,
        ),
    ]
    auto_offset_reset: Annotated[
        Literal["earliest", "latest"],
        doc(
            "Where to start in a partition the group has no committed offset for: its "
            "first message, or the next one produced."
        ),
    ] = "earliest"
    decoding: Annotated[
        Literal["logcap", "json", "text"],
        doc(
            "What a message value is: 'logcap' (an entry a logcap kafka sink produced: "
            "its timestamp, labels, level, fields and message are kept, its source becomes "
            "the label origin_source), 'json' (an object that becomes the entry's fields; "
            "its 'message' member, if a string, the message), or 'text' (the message, "
            "UTF-8). A value that does not decode is taken as text and counted as an error."
        ),
    ] = "logcap"
    labels_from: Annotated[
        list[MessageLabel],
        doc(
            "Labels taken from each message: topic, partition, offset, key (the key as "
            "UTF-8). 'offset' gives every message its own labels, which costs a run of "
            "labels per message downstream."
        ),
    ] = msgspec.field(default_factory=lambda: ["topic", "partition"])
    header_labels: Annotated[
        list[str],
        doc("Message headers copied into labels of the same name (left out when absent)."),
    ] = []
    labels: Annotated[dict[LabelName, str], doc(LABELS_DOC)] = {}
    pipelines: Annotated[
        list[str],
        doc(
            "Names of pipelines (top-level `pipelines`) run on the messages, in order "
            "(decoding text only: a logcap entry is processed already, and a json "
            "object's fields are its own)."
        ),
    ] = []
    max_poll_records: Annotated[
        int,
        doc(
            "Messages taken from the consumer at a time, at most: one such batch per "
            "partition is what a crash can have read and not yet committed.",
            ge=1,
            le=100_000,
        ),
    ] = 1000
    fetch_min_bytes: Annotated[
        int, doc("A fetch waits for this many bytes (or fetch_max_wait).", ge=1, le=100_000_000)
    ] = 1
    fetch_max_bytes: Annotated[
        int,
        doc("Bytes one fetch request may return, at most.", ge=1024, le=2_147_483_135),
    ] = 52_428_800
    fetch_max_wait: Annotated[
        PositiveDuration, doc("How long the broker may hold a fetch to reach fetch_min_bytes.")
    ] = PositiveDuration(0.1)
    session_timeout: Annotated[
        PositiveDuration,
        doc(
            "A member not heard from for this long is dropped from the group and its "
            "partitions go to the others (what a kill -9 costs before they move)."
        ),
    ] = PositiveDuration(10.0)
    commit_interval: Annotated[
        PositiveDuration,
        doc(
            "How often the acknowledged offsets (data_dir/checkpoints.json) are committed "
            "to the group."
        ),
    ] = PositiveDuration(1.0)
    revoke_timeout: Annotated[
        PositiveDuration,
        doc(
            "On a rebalance or a stop, how long to wait for what was read from a "
            "partition to be delivered before its offset is committed and it is given up "
            "(what is not delivered by then is read again by the next owner); keep it "
            "below supervisor.shutdown_timeout, which bounds a stop."
        ),
    ] = PositiveDuration(5.0)
    security_protocol: Annotated[
        Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
        doc("How to reach the brokers; SASL_* needs 'sasl', SSL and SASL_SSL use 'tls'."),
    ] = "PLAINTEXT"
    sasl: Annotated[KafkaSaslConfig | None, doc("SASL credentials.")] = None
    tls: Annotated[KafkaTlsConfig | None, doc("TLS settings.")] = None
    librdkafka_options: Annotated[
        dict[str, str],
        doc(
            "Extra librdkafka consumer properties, passed through as they are (checked "
            "by librdkafka when the config is validated); they cannot override the "
            "settings above, nor turn on auto-commit or incremental (cooperative) rebalancing."
        ),
    ] = {}

    def with_base(self, base: Path) -> KafkaSourceConfig:
        """Resolve relative TLS file names against ``base``."""
        if self.tls is None:
            return self
        return msgspec.structs.replace(self, tls=self.tls.resolved(base))

    def check(self, collector_slot_bytes: int) -> Problems:
        """Topics, labels, and what librdkafka would refuse (loaded only here)."""
        problems: Problems = []
        patterns = [t for t in self.topics if t.startswith("^")]
        if patterns and len(self.topics) > 1:
            problems.append((("topics",), "a regular expression must be the only topic"))
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append((("topics",), f"{pattern!r} is not a regular expression: {exc}"))
        if self.pipelines and self.decoding != "text":
            problems.append((("pipelines",), "pipelines run on decoding text only"))
        for key in ("ca_file", "cert_file", "key_file"):
            file = getattr(self.tls, key, None)
            if file is not None and not (os.path.isfile(file) and os.access(file, os.R_OK)):
                problems.append((("tls", key), f"no readable file {file}"))
        if self.fetch_min_bytes > self.fetch_max_bytes:
            problems.append((("fetch_min_bytes",), "is larger than fetch_max_bytes"))
        problems += check_static(self.labels, self.BUILT_IN_LABELS)
        from logcap.capture.kafka.consumer import config_problems

        problems += [((key,), problem) for key, problem in config_problems(self)]
        return problems

    def build(self, env: CollectorEnv) -> Collector:
        """The consumer-group member (librdkafka loads only where it is used)."""
        from logcap.capture.kafka.collector import KafkaCollector

        return KafkaCollector(env.name, self, env)

    def line_rules(self, collector_slot_bytes: int) -> dict[str, Any]:
        """Entries come cut and bounded from the collector; a logcap entry keeps its host."""
        return {
            "max_line_bytes": collector_slot_bytes,
            "static_labels": dict(self.labels),
            "keep_host": self.decoding == "logcap",
        }

    def longest_entry_bytes(self, collector_slot_bytes: int) -> int:
        """Encoded bytes of the longest entry: a collector slot, each byte escaped to 6."""
        return 6 * collector_slot_bytes
