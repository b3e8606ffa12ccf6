"""librdkafka settings of the kafka source, checked apart from the collector so that
``logcap validate`` can refuse a config librdkafka would (a client is created, nothing is
consumed)."""

from __future__ import annotations

from typing import Any

from logcap.capture.kafka.config import KafkaSourceConfig
from logcap.sinks.kafka.producer import security_settings

# the settings the source owns: librdkafka_options may not change them (auto-commit and
# the offset store above all: offsets are committed only once delivered)
OWNED = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "auto.offset.reset",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "fetch.min.bytes",
        "fetch.max.bytes",
        "fetch.wait.max.ms",
        "session.timeout.ms",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
    }
)


def librdkafka_config(config: KafkaSourceConfig) -> dict[str, Any]:
    """The consumer properties for ``config``."""
    props: dict[str, Any] = dict(config.librdkafka_options)
    props.update(
        {
            "bootstrap.servers": config.bootstrap_servers,
            "group.id": config.group_id,
            "auto.offset.reset": config.auto_offset_reset,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "fetch.min.bytes": config.fetch_min_bytes,
            "fetch.max.bytes": config.fetch_max_bytes,
            "fetch.wait.max.ms": max(1, round(config.fetch_max_wait * 1000)),
            "session.timeout.ms": max(1, round(config.session_timeout * 1000)),
            "security.protocol": config.security_protocol,
        }
    )
    props.update(security_settings(config.sasl, config.tls))
    return props


def config_problems(config: KafkaSourceConfig) -> list[tuple[str, str]]:
    """(key, problem) pairs for a config librdkafka or logcap would refuse."""
    problems: list[tuple[str, str]] = []
    for key in sorted(OWNED & set(config.librdkafka_options)):
        problems.append(("librdkafka_options", f"{key!r} is set by the source's own keys"))
    strategy = config.librdkafka_options.get("partition.assignment.strategy", "")
    if "cooperative" in strategy or "group.protocol" in config.librdkafka_options:
        # the rebalance callbacks give up and take whole assignments (eager protocol)
        problems.append(
            (
                "librdkafka_options",
                "incremental rebalancing (cooperative-sticky, group.protocol) "
                "is not supported: use range or roundrobin",
            )
        )
    sasl_protocol = config.security_protocol.startswith("SASL_")
    if sasl_protocol and config.sasl is None:
        problems.append(("sasl", f"security_protocol {config.security_protocol} needs 'sasl'"))
    if not sasl_protocol and config.sasl is not None:
        problems.append(("sasl", "set security_protocol to SASL_PLAINTEXT or SASL_SSL"))
    if config.tls is not None and config.security_protocol not in ("SSL", "SASL_SSL"):
        problems.append(("tls", "set security_protocol to SSL or SASL_SSL"))
    if problems:
        return problems
    from confluent_kafka import Consumer, KafkaException

    try:  # librdkafka checks names and values when a client is made; nothing is consumed
        Consumer({**librdkafka_config(config), "log_level": 0}).close()
    except (KafkaException, ValueError, TypeError, RuntimeError) as exc:
        problems.append(("librdkafka_options", f"refused by librdkafka: {exc}"))
    return problems
