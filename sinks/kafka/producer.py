"""librdkafka settings of the kafka sink, and how its errors map onto logcap's.

Kept apart from the sink so ``logcap validate`` can check a config (librdkafka refuses
unknown or malformed properties when a client is created) without producing anything.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from logcap.errors import DeliveryError, Permanent, Retryable
from logcap.sinks.kafka.config import KafkaSaslConfig, KafkaSinkConfig, KafkaTlsConfig

# Failures that the same message can never get past: it is too large, the topic does not
# exist (auto-creation off) or we may not write to it, or the record itself is refused.
_PERMANENT_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError._INVALID_ARG,
    }
)
_TIMEOUT_CODES = frozenset(
    {KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT}
)
# the settings the sink owns: librdkafka_options may not change them
OWNED = frozenset(
    {
        "bootstrap.servers",
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "compression.type",
        "compression.codec",
        "linger.ms",
        "queue.buffering.max.ms",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "delivery.report.only.error",
        "security.protocol",
    }
)


def librdkafka_config(config: KafkaSinkConfig) -> dict[str, Any]:
    """The producer properties for ``config``."""
    props: dict[str, Any] = dict(config.librdkafka_options)
    props.update(
        {
            "bootstrap.servers": config.bootstrap_servers,
            "acks": config.acks,
            "enable.idempotence": config.idempotence,
            "compression.type": config.compression,
            "linger.ms": max(0, round(config.linger * 1000)),
            "message.timeout.ms": max(1, round(config.delivery_timeout * 1000)),
            "queue.buffering.max.messages": config.max_in_flight_messages,
            # messages, not bytes, bound the queue: the byte cap only must not come first
            "queue.buffering.max.kbytes": 2 * 1024 * 1024,
            # success needs no callback: flush() returning means every message is done,
            # and only failures call back (one Python call per failed message, not each)
            "delivery.report.only.error": True,
            "security.protocol": config.security_protocol,
        }
    )
    props.update(security_settings(config.sasl, config.tls))
    return props


def security_settings(sasl: KafkaSaslConfig | None, tls: KafkaTlsConfig | None) -> dict[str, Any]:
    """librdkafka's SASL and TLS properties (the kafka sink's and the kafka source's)."""
    props: dict[str, Any] = {}
    if sasl is not None:
        props["sasl.mechanism"] = sasl.mechanism
        props["sasl.username"] = sasl.username
        props["sasl.password"] = sasl.password
    if tls is not None:
        for key, value in (
            ("ssl.ca.location", tls.ca_file),
            ("ssl.certificate.location", tls.cert_file),
            ("ssl.key.location", tls.key_file),
            ("ssl.key.password", tls.key_password),
        ):
            if value is not None:
                props[key] = value
        props["ssl.endpoint.identification.algorithm"] = "https" if tls.verify_hostname else "none"
    return props


def config_problems(config: KafkaSinkConfig) -> list[tuple[str, str]]:
    """(key, problem) pairs for a config librdkafka or logcap would refuse."""
    problems: list[tuple[str, str]] = []
    for key in sorted(OWNED & set(config.librdkafka_options)):
        problems.append(("librdkafka_options", f"{key!r} is set by the sink's own keys"))
    if config.acks == "0" and config.idempotence:
        problems.append(("acks", "acks '0' cannot be used with idempotence (it needs 'all')"))
    if config.idempotence and config.acks != "all":
        problems.append(("acks", "idempotence needs acks 'all'"))
    sasl_protocol = config.security_protocol.startswith("SASL_")
    if sasl_protocol and config.sasl is None:
        problems.append(("sasl", f"security_protocol {config.security_protocol} needs 'sasl'"))
    if not sasl_protocol and config.sasl is not None:
        problems.append(("sasl", "set security_protocol to SASL_PLAINTEXT or SASL_SSL"))
    if config.tls is not None and config.security_protocol not in ("SSL", "SASL_SSL"):
        problems.append(("tls", "set security_protocol to SSL or SASL_SSL"))
    if problems:
        return problems
    from confluent_kafka import KafkaException, Producer

    try:  # librdkafka checks names and values when a client is made; nothing is sent
        # log_level 0: this client only checks the settings; its connection attempts
        # (brokers unreachable from where the config is checked) are not news
        Producer({**librdkafka_config(config), "log_level": 0})
    except (KafkaException, ValueError, TypeError) as exc:
        problems.append(("librdkafka_options", f"refused by librdkafka: {exc}"))
    return problems


def delivery_error(error: KafkaError, topic: str | None) -> DeliveryError:
    """logcap's error for a failed delivery report."""
    text = f"kafka: {error.str()} (topic {topic})"
    code = error.code()
    if code in _PERMANENT_CODES:
        return Permanent(text, "rejected")
    if code in _TIMEOUT_CODES:
        return Retryable(text, "timeout")
    if code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE):
        return Retryable(text, "connection")
    return Retryable(text, "server_error")
