"""The kafka sink: routing, acknowledgement by delivery reports, fault handling.

Against librdkafka's mock cluster (faults injected through its C API) and Tansu, a real
Kafka-compatible broker; a consumer reads back and checks every message.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import KafkaError

from logcap.config import parse_config
from logcap.config._units import dec_hook
from logcap.dispatch.batch import Group
from logcap.dlq import reader as dlq_reader
from logcap.errors import ConfigError, Permanent, Retryable
from logcap.metrics import NullBlock
from logcap.sinks.kafka.config import KafkaSinkConfig
from logcap.sinks.kafka.sink import KafkaSink, Router, topic_renderer
from tests._component_helpers import batch_view, build_batch
from tests._kafka_helpers import MockCluster, Tansu, consume_all
from tests.conftest import free_port, wait_for, write_config

TS = 1_795_000_000_123_456_789


def kafka_config(bootstrap: str, **keys: object) -> KafkaSinkConfig:
    return msgspec.convert(
        {"type": "kafka", "bootstrap_servers": bootstrap, "topic": "logs", **keys},
        KafkaSinkConfig,
        dec_hook=dec_hook,
    )


def test_topic_templates_level_routes_keys_and_headers() -> None:
    topic = topic_renderer("logs-{labels.service}")
    assert topic(Group("app", {"service": "web"}, TS, 1, 1)) == "logs-web"
    assert topic(Group("app", {}, TS, 1, 1)) == "logs-unknown"
    assert topic_renderer("{source}/{labels.x}")(Group("a b", {"x": "é"}, TS, 1, 1)) == "a_b__"
    config = kafka_config(
        "x:1",
        topic="logs-{source}",
        level_routes=[
            {"levels": ["ERROR", "fatal", "critical"], "topic": "errors-{source}"},
            {"levels": ["debug", "trace"], "topic": "debug"},
        ],
        key_field="tenant",
        header_labels=["host", "absent"],
    )
    router = Router(config)
    group = Group("app", {"level": "Error", "tenant": "t1", "host": "h1"}, TS, 1, 10)
    assert router.route(group) == ("errors-app", b"t1", [("host", b"h1")])
    group = Group("app", {"level": "trace", "source_id": "s9"}, TS, 1, 10)
    assert router.route(group) == ("debug", b"s9", None)  # key: source_id fallback
    assert router.route(Group("app", {}, TS, 1, 10)) == ("logs-app", b"app", None)
    unkeyed = Router(kafka_config("x:1", key_field=None))
    assert unkeyed.route(Group("app", {"source_id": "s"}, TS, 1, 10))[1] is None


@pytest.mark.parametrize(
    ("sink", "problem"),
    [
        ("{type: kafka, topic: t}", "bootstrap_servers"),
        ("{type: kafka, bootstrap_servers: 'h:1'}", "topic"),
        ("{type: kafka, bootstrap_servers: 'h:1', topic: t, acks: '1'}", "idempotence needs"),
        (
            "{type: kafka, bootstrap_servers: 'h:1', topic: t, librdkafka_options: {acks: '0'}}",
            "'acks' is set by the sink's own keys",
        ),
        (
            "{type: kafka, bootstrap_servers: 'h:1', topic: t, librdkafka_options: {nope: '1'}}",
            "No such configuration property",
        ),
        (
            "{type: kafka, bootstrap_servers: 'h:1', topic: t, security_protocol: SASL_SSL}",
            "needs 'sasl'",
        ),
        (
            "{type: kafka, bootstrap_servers: 'h:1', topic: t, tls: {ca_file: /x}}",
            "set security_protocol to SSL",
        ),
        (
            "{type: kafka, bootstrap_servers: 'h:1', topic: t, compression: brotli}",
            "compression",
        ),
        ("{type: kafka, bootstrap_servers: 'h:1', topic: t, linger: 5ms, batch: 1}", "batch"),
    ],
)
def test_config_errors_of_the_kafka_sink(sink: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"sources:\n  a: {{type: http}}\nsinks:\n  k: {sink}\n")
    assert problem in str(caught.value)


def test_sasl_and_tls_settings_reach_librdkafka() -> None:
    from logcap.sinks.kafka.producer import librdkafka_config

    config = kafka_config(
        "h:9093",
        security_protocol="SASL_SSL",
        sasl={"mechanism": "SCRAM-SHA-512", "username": "u", "password": "p"},
        tls={"ca_file": "/ca.pem", "verify_hostname": False},
        compression="zstd",
        librdkafka_options={"client.id": "logcap-test"},
    )
    props = librdkafka_config(config)
    assert props["security.protocol"] == "SASL_SSL"
    assert (props["sasl.mechanism"], props["sasl.username"], props["sasl.password"]) == (
        "SCRAM-SHA-512",
        "u",
        "p",
    )
    assert props["ssl.ca.location"] == "/ca.pem"
    assert props["ssl.endpoint.identification.algorithm"] == "none"
    assert props["compression.type"] == "zstd" and props["client.id"] == "logcap-test"
    assert props["acks"] == "all" and props["enable.idempotence"] is True


def _batch(messages: list[str], labels: dict[str, str] | None = None) -> bytes:
    return build_batch([("app", TS, messages)], labels or {"host": "h", "service": "web"})[0]


def test_a_batch_is_delivered_once_with_values_keys_and_headers(
    mock_cluster: MockCluster,
) -> None:
    mock_cluster.create_topic("logs-web")
    config = kafka_config(
        mock_cluster.bootstrap, topic="logs-{labels.service}", header_labels=["host"]
    )
    sink = KafkaSink(config, NullBlock())
    slots = [_batch([f"line {b}-{i}" for i in range(500)]) for b in range(4)]
    for slot in slots:
        sink.write(batch_view(slot))
    assert sink.flush() == []
    sink.close()
    messages = consume_all(mock_cluster.bootstrap, ["logs-web"], 2000)
    values = sorted(m.value() for m in messages)
    expected = sorted(
        line for slot in slots for line in bytes(batch_view(slot).payload).split(b"\n") if line
    )
    assert values == expected  # the dispatcher's entry bytes, each exactly once
    sample = messages[0]
    assert sample.key() == b"app"  # no source_id label: keyed by the source
    assert sample.headers() == [("host", b"h")]
    assert json.loads(sample.value())["labels"]["service"] == "web"


def test_brokers_down_fail_the_batch_after_delivery_timeout_then_it_is_delivered(
    mock_cluster: MockCluster,
) -> None:
    mock_cluster.create_topic("logs")
    # 5 s: the warm-up must not time out on a loaded machine; the outage then fails soon
    sink = KafkaSink(kafka_config(mock_cluster.bootstrap, delivery_timeout=5.0), NullBlock())
    sink.write(batch_view(_batch(["warm-up"])))
    assert sink.flush() == []
    mock_cluster.brokers_down()
    sink.write(batch_view(_batch(["during the outage 1", "during the outage 2"])))
    sink.write(batch_view(_batch(["during the outage 3"])))
    failures = sink.flush()  # timed out: both batches failed, retryable, never dropped
    assert [index for index, _ in failures] == [0, 1]
    assert all(isinstance(e, Retryable) and e.code == "timeout" for _, e in failures)
    mock_cluster.brokers_up()
    sink.write(batch_view(_batch(["during the outage 1", "during the outage 2"])))
    sink.write(batch_view(_batch(["during the outage 3"])))
    assert sink.flush() == []
    sink.close()
    values = [
        json.loads(m.value())["message"] for m in consume_all(mock_cluster.bootstrap, ["logs"], 4)
    ]
    assert sorted(values) == [
        "during the outage 1",
        "during the outage 2",
        "during the outage 3",
        "warm-up",
    ]


def test_transient_produce_errors_are_retried_by_librdkafka_and_permanent_ones_reported(
    mock_cluster: MockCluster,
) -> None:
    mock_cluster.create_topic("logs", partitions=1)
    sink = KafkaSink(kafka_config(mock_cluster.bootstrap), NullBlock())
    mock_cluster.fail_produce_requests(
        KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT
    )
    sink.write(batch_view(_batch(["survives two failed requests"])))
    assert sink.flush() == []
    mock_cluster.fail_produce_requests(*[KafkaError.TOPIC_AUTHORIZATION_FAILED] * 5)
    sink.write(batch_view(_batch(["not allowed"])))
    [(index, error)] = sink.flush()
    assert index == 0 and isinstance(error, Permanent) and error.code == "rejected"
    mock_cluster.clear_produce_errors()
    sink.close()


def test_a_message_larger_than_the_broker_allows_is_permanent() -> None:
    cluster = MockCluster(brokers=1)
    try:
        sink = KafkaSink(
            kafka_config(cluster.bootstrap, librdkafka_options={"message.max.bytes": "2000"}),
            NullBlock(),
        )
        with pytest.raises(Permanent):
            sink.write(batch_view(_batch(["x" * 5000])))
        assert sink.flush() == []  # a batch that failed at once is not reported again
        sink.close()
    finally:
        cluster.close()


def test_the_local_queue_stays_bounded_while_brokers_are_down(mock_cluster: MockCluster) -> None:
    mock_cluster.create_topic("logs")
    config = kafka_config(mock_cluster.bootstrap, max_in_flight_messages=1000, delivery_timeout=3.0)
    sink = KafkaSink(config, NullBlock())
    mock_cluster.brokers_down()
    queued: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            queued.append(len(sink.producer))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for _ in range(5):  # 5,000 messages against a queue of 1,000
            sink.write(batch_view(_batch([f"m{i}" for i in range(1000)])))
        failures = sink.flush()
    finally:
        done.set()
        sampler.join()
    assert max(queued) <= 1000 + 10  # len() also counts librdkafka's own requests
    assert {index for index, _ in failures} == {0, 1, 2, 3, 4}  # all retryable, none lost
    assert all(isinstance(error, Retryable) for _, error in failures)
    mock_cluster.brokers_up()
    sink.close()


def test_a_million_entries_through_tansu_each_checked(
    tmp_path: Path, tansu: Tansu, start_agent
) -> None:
    """file source → kafka sink → Tansu; a consumer checks every message's value, key
    and topic."""
    lines = 1_000_000
    logs = tmp_path / "logs"
    logs.mkdir()
    with open(logs / "app.log", "w") as handle:
        for n in range(lines):
            handle.write(f"entry {n:07d} {'x' * 60}\n")
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  kafka: {{type: kafka, bootstrap_servers: "{tansu.bootstrap}", topic: "logs-{{source}}",
          key_field: path}}
dispatcher: {{batch_max_events: 5000, batch_timeout: 100ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="kafka") >= lines,
        300,
        "every entry acknowledged by the broker",
    )
    assert agent.stop() == 0
    messages = consume_all(tansu.bootstrap, ["logs-app"], lines, timeout=300)
    numbers = sorted(int(json.loads(m.value())["message"].split()[1]) for m in messages)
    assert numbers == list(range(lines))  # every entry, exactly once
    assert {m.topic() for m in messages} == {"logs-app"}
    assert {m.key() for m in messages} == {str(logs / "app.log").encode()}


OUTAGE_SECONDS = float(os.environ.get("LOGCAP_KAFKA_OUTAGE_SECONDS", "120"))


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


HEAP_BOUND, SPOOL_BOUND = 8 * 2**20, 16 * 2**20  # both well below what the outage makes


def test_a_broker_outage_under_load_loses_nothing_and_memory_stays_bounded(
    tmp_path: Path, mock_cluster: MockCluster, start_agent
) -> None:
    """All brokers down for two minutes while 1,000 lines a second keep coming (~40 MB of
    entries): the circuit opens, failed batches fill the retry heap's memory bound (8 MiB)
    and then wait on disk only, the spool's bound (16 MiB) overflows into the DLQ, memory
    stays within its bound, and once the brokers are back every line is delivered — the
    overflow too, re-offered by dlq.reprocess, with no command run."""
    mock_cluster.create_topic("logs", partitions=3)
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  kafka: {{type: kafka, bootstrap_servers: "{mock_cluster.bootstrap}", topic: logs,
          delivery_timeout: 5s, max_in_flight_messages: 20000,
          circuit_breaker: {{failure_threshold: 3, open_duration: 5s}}}}
dispatcher: {{batch_max_events: 500, batch_timeout: 100ms}}
retry: {{initial_backoff: 1s, max_backoff: 10s, max_attempts: 10000, max_retry_duration: 1h,
        max_bytes: {HEAP_BOUND}, spool_max_bytes: {SPOOL_BOUND}}}
dlq: {{reprocess: {{interval: 5s}}}}
""",
        address,
    )
    written = 0
    stop = threading.Event()

    def append() -> None:  # 1,000 numbered lines a second until told to stop
        nonlocal written
        with open(log, "a") as handle:
            while not stop.is_set():
                handle.write("".join(f"entry {written + i:07d} {'y' * 300}\n" for i in range(100)))
                handle.flush()
                written += 100
                time.sleep(0.1)

    agent = start_agent(config, address)
    agent.wait_ready()
    appender = threading.Thread(target=append)
    appender.start()
    try:
        wait_for(
            lambda: agent.metric("logcap_component_sent_events_total", component="kafka") >= 2000,
            60,
            "delivery before the outage",
        )
        pids = agent.children()
        watched = [pids["sink:kafka"], pids["retry:retry"], pids["dispatcher:dispatcher"]]
        before = sum(map(_rss, watched))
        mock_cluster.brokers_down()
        peak, heap_peak, spool_peak = before, 0.0, 0.0
        opened = False
        deadline = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < deadline:
            time.sleep(2)
            peak = max(peak, sum(map(_rss, watched)))
            heap_peak = max(heap_peak, agent.metric("logcap_retry_heap_bytes"))
            spool_peak = max(spool_peak, agent.metric("logcap_retry_spool_bytes"))
            opened = opened or agent.metric("logcap_sink_circuit_state", component="kafka") == 1
        overflow = agent.metric("logcap_dlq_records_total", component="kafka", reason="overflow")
        mock_cluster.brokers_up()
    finally:
        stop.set()
        appender.join()
    # batches keep overflowing while the spool drains: wait for the DLQ's live count
    wait_for(
        lambda: (
            agent.metric("logcap_dlq_reprocessed_total", component="kafka")
            >= agent.metric("logcap_dlq_records_total", component="kafka")
            and agent.metric("logcap_retry_spool_batches") == 0
            and agent.metric("logcap_sink_circuit_state", component="kafka") == 0
        ),
        300,
        "the spool and the overflowed batches to be delivered after the outage",
    )
    reprocessed = agent.metric("logcap_dlq_reprocessed_total", component="kafka")
    assert agent.stop() == 0
    messages = consume_all(mock_cluster.bootstrap, ["logs"], written, timeout=120, idle=10)
    numbers = {int(json.loads(m.value())["message"].split()[1]) for m in messages}
    left = [r for r in dlq_reader.scan(tmp_path / "data" / "dlq") if not r.replayed]
    assert left == [], f"{len(left)} records left in the DLQ"
    assert numbers == set(range(written))  # nothing lost, and no dlq command was run
    assert opened
    # the bounds were reached, and held
    assert 0.5 * HEAP_BOUND < heap_peak <= HEAP_BOUND
    assert 0.5 * SPOOL_BOUND < spool_peak <= SPOOL_BOUND
    assert overflow > 0 and reprocessed >= overflow
    # memory: the heap's bound plus allocator and librdkafka slack, however long the outage
    growth = peak - before
    print(
        f"\noutage {OUTAGE_SECONDS:.0f}s: {written} lines, {len(messages) - written} "
        f"duplicates, RSS +{growth / 2**20:.1f} MiB (sink+retry+dispatcher), heap peak "
        f"{heap_peak / 2**20:.1f} MiB, spool peak {spool_peak / 2**20:.1f} MiB, "
        f"{overflow:.0f} batches overflowed to the DLQ and {reprocessed:.0f} re-offered"
    )
    assert growth < HEAP_BOUND + 48 * 2**20


def test_a_pipeline_level_routes_and_fills_level_in_topics() -> None:
    """A level a pipeline set is the group's (dispatch/route.py regroup), not a label:
    level_routes and '{level}' use it, and fall back to the level label."""
    config = kafka_config(
        "x:1",
        topic="logs-{level}",
        level_routes=[{"levels": ["error"], "topic": "errors-{source}"}],
    )
    router = Router(config)
    assert router.route(Group("app", {}, TS, 1, 10, [], 0, "error"))[0] == "errors-app"
    assert router.route(Group("app", {}, TS, 1, 10, [], 0, "warning"))[0] == "logs-warning"
    assert router.route(Group("app", {"level": "info"}, TS, 1, 10))[0] == "logs-info"
    assert router.route(Group("app", {}, TS, 1, 10))[0] == "logs-unknown"


def test_fields_name_topics_keys_and_headers_per_group() -> None:
    """'{fields.x}' in topics and 'fields.x' as key_field or header: the group's value
    (the dispatcher cut groups by it); a group without it gets 'unknown' in topics, the
    source_id fallback as key, and no header."""
    config = kafka_config(
        "x:1",
        topic="logs-{fields.service}",
        key_field="fields.user.id",
        header_labels=["level", "fields.service", "host"],
    )
    router = Router(config)
    group = Group(
        "app", {"host": "h"}, TS, 1, 10, [], 0, "error", {"service": "web", "user.id": "7"}
    )
    assert router.route(group) == (
        "logs-web",
        b"7",
        [("level", b"error"), ("fields.service", b"web"), ("host", b"h")],
    )
    bare = Group("app", {"source_id": "abc"}, TS, 1, 10)
    assert router.route(bare) == ("logs-unknown", b"abc", None)
    # a bare name is a label, as before fields could be named: 'source' is no label here
    by_label = Router(kafka_config("x:1", key_field="source", header_labels=["source"]))
    assert by_label.route(bare) == ("logs", b"abc", None)
