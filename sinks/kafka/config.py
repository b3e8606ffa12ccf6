"""Config of the ``kafka`` sink."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from logcap.config._base import StrictStruct, doc, resolve_path
from logcap.config._units import PositiveDuration
from logcap.sinks.breaker import SinkConfigBase
from logcap.sinks.template import member_problem, template_fields, template_problems, uses_level

if TYPE_CHECKING:
    from logcap.metrics import CounterBlock
    from logcap.sinks.base import Sink


class LevelRoute(StrictStruct, frozen=True):
    """Entries whose ``level`` label is one of ``levels`` go to ``topic``."""

    levels: Annotated[
        list[str], doc("Values of the entry's 'level' label (case-insensitive).", min_length=1)
    ]
    topic: Annotated[str, doc("Topic template for these entries (same fields as 'topic').")]


class KafkaTlsConfig(StrictStruct, frozen=True):
    """TLS to the brokers (security.protocol SSL or SASL_SSL)."""

    ca_file: Annotated[str | None, doc("CA certificates (PEM) to verify brokers with.")] = None
    cert_file: Annotated[str | None, doc("Client certificate (PEM) for mutual TLS.")] = None
    key_file: Annotated[str | None, doc("Private key (PEM) of cert_file.")] = None
    key_password: Annotated[str | None, doc("Password of key_file (use ${VAR}).")] = None
    verify_hostname: Annotated[
        bool, doc("Check that the broker certificate names the broker host.")
    ] = True

    def resolved(self, base: Path) -> KafkaTlsConfig:
        """Relative file names resolved against ``base`` (the config's directory)."""
        return msgspec.structs.replace(
            self,
            ca_file=self.ca_file and resolve_path(base, self.ca_file),
            cert_file=self.cert_file and resolve_path(base, self.cert_file),
            key_file=self.key_file and resolve_path(base, self.key_file),
        )


class KafkaSaslConfig(StrictStruct, frozen=True):
    """SASL authentication (security.protocol SASL_PLAINTEXT or SASL_SSL)."""

    mechanism: Annotated[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], doc("SASL mechanism.")]
    username: Annotated[str, doc("SASL user name.", min_length=1)]
    password: Annotated[str, doc("SASL password (use ${VAR}).")]


class KafkaSinkConfig(SinkConfigBase, tag_field="type", tag="kafka", frozen=True):
    """Produce every entry as one Kafka message; a batch is acknowledged only once the
    brokers acknowledged every message of it."""

    bootstrap_servers: Annotated[
        str, doc("Comma-separated host:port list of brokers to bootstrap from.", min_length=1)
    ]
    topic: Annotated[
        str,
        doc(
            "Topic template: '{source}', '{labels.NAME}', '{level}' (a pipeline's level, "
            "else the level label), '{fields.NAME[.SUB]}' (a pipeline's field); e.g. "
            "'logs-{labels.service}'. A member an entry lacks renders as 'unknown'.",
            min_length=1,
        ),
    ]
    level_routes: Annotated[
        list[LevelRoute],
        doc(
            "Routes by the entries' level (a pipeline's level_extract, else their 'level' "
            "label), tried in order before 'topic', e.g. "
            "[{levels: [error, fatal, critical], topic: logs-errors}]."
        ),
    ] = []
    key_field: Annotated[
        str | None,
        doc(
            "What the message key is: a label name, or 'labels.NAME', 'level' or "
            "'fields.NAME[.SUB]'; entries without it are keyed by their source_id "
            "label, then the source name. Null: no key (spread evenly)."
        ),
    ] = "source_id"
    header_labels: Annotated[
        list[str],
        doc(
            "Members copied into message headers, each a label name or 'labels.NAME', "
            "'level', 'fields.NAME[.SUB]' (header name = the entry as written; left out "
            "when the entry lacks it)."
        ),
    ] = []
    compression: Annotated[
        Literal["none", "gzip", "snappy", "lz4", "zstd"], doc("Message set compression.")
    ] = "lz4"
    acks: Annotated[
        Literal["all", "1", "0"],
        doc(
            "Broker acknowledgement required per message ('all': every in-sync "
            "replica). '0' cannot tell delivered from lost and is refused with "
            "idempotence."
        ),
    ] = "all"
    idempotence: Annotated[
        bool, doc("Idempotent producer: broker-side de-duplication of retried sends.")
    ] = True
    max_in_flight_messages: Annotated[
        int,
        doc(
            "Messages handed to librdkafka and not yet acknowledged, at most; producing "
            "waits above it, so memory stays bounded while brokers are down.",
            ge=1000,
            le=10_000_000,
        ),
    ] = 200_000
    delivery_timeout: Annotated[
        PositiveDuration,
        doc(
            "How long librdkafka retries one message before reporting it failed; the "
            "batch is then handed to the retry process (retried, never dropped)."
        ),
    ] = PositiveDuration(30.0)
    linger: Annotated[PositiveDuration, doc("How long librdkafka waits to fill a message set.")] = (
        PositiveDuration(0.005)
    )
    security_protocol: Annotated[
        Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
        doc("How to reach the brokers; SASL_* needs 'sasl', SSL and SASL_SSL use 'tls'."),
    ] = "PLAINTEXT"
    sasl: Annotated[KafkaSaslConfig | None, doc("SASL credentials.")] = None
    tls: Annotated[KafkaTlsConfig | None, doc("TLS settings.")] = None
    librdkafka_options: Annotated[
        dict[str, str],
        doc(
            "Extra librdkafka producer properties, passed through as they are (checked "
            "by librdkafka when the config is validated); they cannot override the "
            "settings above."
        ),
    ] = {}

    def with_base(self, base: Path) -> KafkaSinkConfig:
        """Resolve relative TLS file names against ``base``."""
        if self.tls is None:
            return self
        return msgspec.structs.replace(self, tls=self.tls.resolved(base))

    def check(self) -> list[tuple[tuple[str, ...], str]]:
        """What librdkafka or logcap would refuse (librdkafka loads only for configs that
        have a kafka sink); TLS files must exist."""
        from logcap.sinks.kafka.producer import config_problems

        problems: list[tuple[tuple[str, ...], str]] = []
        problems += [(("topic",), problem) for problem in template_problems(self.topic)]
        for i, route in enumerate(self.level_routes):
            for problem in template_problems(route.topic):
                problems.append((("level_routes",), f"route {i} topic: {problem}"))
        members = [("header_labels", name) for name in self.header_labels]
        if self.key_field is not None:
            members.append(("key_field", self.key_field))
        for key, member in members:
            if (refused := member_problem(member)) is not None:
                problems.append(((key,), refused))
        for key in ("ca_file", "cert_file", "key_file"):
            file = getattr(self.tls, key, None)
            if file is not None and not (os.path.isfile(file) and os.access(file, os.R_OK)):
                problems.append((("tls", key), f"no readable file {file}"))
        missing_file = any(path[0] == "tls" for path, _ in problems)
        for key, problem in config_problems(self):
            # librdkafka would only repeat a missing TLS file, naming no key
            if not (missing_file and problem.startswith("refused by librdkafka")):
                problems.append(((key,), problem))
        return problems

    def routed_fields(self) -> set[str]:
        """The fields the topics, the key and the headers name."""
        names = set().union(
            *(template_fields(t) for t in [self.topic] + [r.topic for r in self.level_routes])
        )
        for member in [self.key_field or "", *self.header_labels]:
            if member.startswith("fields."):
                names.add(member[len("fields.") :])
        return names

    def routes_by_level(self) -> bool:
        """Level routes, or the level in a topic, the key or a header."""
        topics = [self.topic, *(route.topic for route in self.level_routes)]
        members = [self.key_field, *self.header_labels]
        return bool(self.level_routes) or any(map(uses_level, topics)) or "level" in members

    def build(self, counters: CounterBlock) -> Sink:
        """The sink this config describes. A librdkafka producer."""
        from logcap.sinks.kafka.sink import KafkaSink  # librdkafka loads only where used

        return KafkaSink(self, counters)
