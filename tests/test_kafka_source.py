"""The kafka source through ``logcap run`` against Tansu (a real Kafka-compatible broker):
decoding and labels, offsets committed only once every sink delivered, and kill -9 of the
agent costing duplicates, never a loss."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from logcap.capture.kafka.collector import partition_path, topic_key
from logcap.config import parse_config
from logcap.dispatch.checkpoint import CheckpointStore
from logcap.errors import ConfigError
from tests._kafka_helpers import Tansu
from tests._output import read_ndjson
from tests.conftest import free_port, wait_for, write_config


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes | None, Any]]) -> None:
    """``(value, key, headers)`` messages, partition by key (or spread), flushed."""
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "linger.ms": 5})
    for value, key, headers in values:
        producer.produce(topic, value, key, headers=headers)
        producer.poll(0)
    assert producer.flush(60) == 0


def numbered(count: int, start: int = 0) -> list[tuple[bytes, bytes | None, Any]]:
    return [(f"line {n:08d}".encode(), str(n % 7).encode(), None) for n in range(start, count)]


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The group's committed offset per partition (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0})
    try:
        found = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=30
        )
        return [tp.offset for tp in found]
    finally:
        consumer.close()


def source_yaml(tansu: Tansu, topic: str, group: str, extra: str = "") -> str:
    return (
        f'{{type: kafka, bootstrap_servers: "{tansu.bootstrap}", topics: ["{topic}"], '
        f"group_id: {group}, session_timeout: 6s, commit_interval: 200ms{extra}}}"
    )


def numbers_in(path: Path) -> list[int]:
    return [int(e["message"].split()[1]) for e in read_ndjson(path)]


JSON_KEYS = (
    ", decoding: json, labels_from: [topic, partition, offset, key], "
    "header_labels: [trace], labels: {env: prod}"
)


def test_decodings_and_labels(tmp_path: Path, tansu: Tansu, start_agent) -> None:
    """logcap entries keep their time, labels, level, fields and source; json objects
    become fields; text is the message; labels from topic, partition, offset, key and
    headers; static labels."""
    for topic in ("t-logcap", "t-json", "t-text"):
        create_topic(tansu.bootstrap, topic, 1)
    entry = {
        "timestamp": "2026-01-02T03:04:05.123456789Z",
        "ingested_at": "2026-01-02T03:04:06.000000000Z",
        "source": "app",
        "labels": {"host": "web-1", "service": "api"},
        "level": "error",
        "fields": {"user": {"id": 7}},
        "message": "it broke",
    }
    produce(tansu.bootstrap, "t-logcap", [(json.dumps(entry).encode(), None, None)])
    produce(
        tansu.bootstrap,
        "t-json",
        [(b'{"message": "hello", "n": 1}', b"k1", [("trace", b"abc"), ("other", b"x")])],
    )
    produce(
        tansu.bootstrap, "t-text", [("plain \u00e9".encode(), b"k2", None), (b"\xff", None, None)]
    )
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  lc: {source_yaml(tansu, "t-logcap", "g1")}
  js: {source_yaml(tansu, "t-json", "g1", JSON_KEYS)}
  tx: {source_yaml(tansu, "t-text", "g1", ", decoding: text, labels_from: [key]")}
sinks:
  out: {{type: file, path: "./out/{{source}}.ndjson"}}
dispatcher: {{batch_timeout: 50ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    out = tmp_path / "out"
    wait_for(
        lambda: (
            len(read_ndjson(out / "lc.ndjson")) == 1
            and len(read_ndjson(out / "js.ndjson")) == 1
            and len(read_ndjson(out / "tx.ndjson")) == 2
        ),
        60,
        "every message in the file sink",
    )
    assert agent.stop() == 0
    (lc,) = read_ndjson(out / "lc.ndjson")
    assert lc["timestamp"] == entry["timestamp"]
    assert lc["message"] == "it broke" and lc["level"] == "error"
    assert lc["fields"] == {"user": {"id": 7}}
    assert lc["source"] == "lc"
    assert lc["labels"] == {
        "host": "web-1",
        "service": "api",
        "origin_source": "app",
        "topic": "t-logcap",
        "partition": "0",
    }
    (js,) = read_ndjson(out / "js.ndjson")
    assert js["message"] == "hello" and js["fields"] == {"message": "hello", "n": 1}
    assert js["labels"] == {
        "host": js["labels"]["host"],
        "topic": "t-json",
        "partition": "0",
        "offset": "0",
        "key": "k1",
        "trace": "abc",
        "env": "prod",
    }
    text = read_ndjson(out / "tx.ndjson")
    assert [e["message"] for e in text] == ["plain \u00e9", "\ufffd"]
    assert text[0]["labels"]["key"] == "k2" and "key" not in text[1]["labels"]
    assert "topic" not in text[0]["labels"]
    assert committed(tansu.bootstrap, "g1", "t-json", 1) == [1]
    assert committed(tansu.bootstrap, "g1", "t-text", 1) == [2]


def test_offsets_are_committed_only_once_the_sink_delivered(
    tmp_path: Path, tansu: Tansu, start_agent
) -> None:
    """The file sink's process stopped (SIGSTOP): the messages are read, nothing is
    delivered and nothing is committed; once it runs again every message is delivered and
    the group's offsets reach the end of every partition."""
    create_topic(tansu.bootstrap, "held", 2)
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  k: {source_yaml(tansu, "held", "g-held", ", decoding: text")}
sinks:
  out: {{type: file, path: "./out.ndjson"}}
dispatcher: {{batch_timeout: 50ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    sink = agent.children()["sink:out"]
    os.kill(sink, signal.SIGSTOP)
    try:
        produce(tansu.bootstrap, "held", numbered(500))
        wait_for(
            lambda: agent.metric("logcap_component_received_events_total", component="k") >= 500,
            60,
            "the source to read every message",
        )
        time.sleep(2)  # ten commit intervals: a commit of undelivered offsets would show
        assert committed(tansu.bootstrap, "g-held", "held", 2) == [-1001, -1001]
        assert numbers_in(tmp_path / "out.ndjson") == []
        wait_for(
            lambda: agent.metric("logcap_source_kafka_lag_messages", component="k") == 500,
            30,
            "the lag to count every uncommitted message",
        )
    finally:
        os.kill(sink, signal.SIGCONT)
    wait_for(
        lambda: sorted(numbers_in(tmp_path / "out.ndjson")) == list(range(500)),
        60,
        "every message delivered",
    )

    def all_committed() -> bool:
        offsets = committed(tansu.bootstrap, "g-held", "held", 2)
        return sum(max(0, o) for o in offsets) == 500

    wait_for(all_committed, 60, "the delivered offsets committed")
    wait_for(
        lambda: agent.metric("logcap_source_kafka_lag_messages", component="k") == 0,
        30,
        "no lag once committed",
    )
    assert agent.stop() == 0
    # the checkpoint names each partition by topic hash and partition number
    saved = CheckpointStore(tmp_path / "data").positions_for("k")
    paths = {p.path: (p.dev, p.ino, p.offset) for p in saved.values()}
    assert sum(offset for _, _, offset in paths.values()) == 500
    for path, (dev, ino, _) in paths.items():
        assert path == partition_path("held", dev) and ino == topic_key("held")


def test_kill_9_of_the_agent_loses_nothing(tmp_path: Path, tansu: Tansu, start_agent) -> None:
    """kill -9 of the whole agent tree while it reads a 4-partition topic: restarted on
    the same data_dir it goes on; every message arrives at least once."""
    create_topic(tansu.bootstrap, "killed", 4)
    total = 20_000
    produce(tansu.bootstrap, "killed", numbered(total // 2))
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  k: {source_yaml(tansu, "killed", "g-kill", ", decoding: text, max_poll_records: 200")}
sinks:
  out: {{type: file, path: "./out.ndjson"}}
dispatcher: {{batch_timeout: 50ms, batch_max_events: 200}}
""",
        address,
    )
    out = tmp_path / "out.ndjson"
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(lambda: len(read_ndjson(out)) >= total // 8, 60, "some messages delivered")
    agent.process.send_signal(signal.SIGKILL)
    agent.process.wait()
    produce(tansu.bootstrap, "killed", numbered(total, total // 2))
    again = start_agent(config, address)
    again.wait_ready(60)
    wait_for(lambda: set(numbers_in(out)) >= set(range(total)), 120, "every message")
    assert again.stop() == 0
    seen = numbers_in(out)
    assert set(seen) == set(range(total))
    print(f"\nkill -9: {total} messages, {len(seen) - total} duplicates")


BASE = "type: kafka, bootstrap_servers: 'h:1', group_id: g"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (f"{{{BASE}}}", "topics"),
        (f"{{{BASE}, topics: []}}", "topics"),
        (f"{{{BASE}, topics: ['^a.*', b]}}", "a regular expression must be the only topic"),
        (f"{{{BASE}, topics: ['^a(']}}", "is not a regular expression"),
        (f"{{{BASE}, topics: [a], colour: red}}", "colour"),
        (f"{{{BASE}, topics: [a], decoding: avro}}", "decoding"),
        (f"{{{BASE}, topics: [a], auto_offset_reset: middle}}", "auto_offset_reset"),
        (f"{{{BASE}, topics: [a], labels_from: [size]}}", "labels_from"),
        (f"{{{BASE}, topics: [a], labels: {{topic: x}}}}", "built-in label"),
        (f"{{{BASE}, topics: [a], pipelines: [p]}}", "pipelines run on decoding text only"),
        (f"{{{BASE}, topics: [a], max_poll_records: 0}}", "max_poll_records"),
        (f"{{{BASE}, topics: [a], fetch_min_bytes: 5000, fetch_max_bytes: 4096}}", "fetch_min"),
        (
            f"{{{BASE}, topics: [a], librdkafka_options: {{enable.auto.commit: 'true'}}}}",
            "'enable.auto.commit' is set by the source's own keys",
        ),
        (
            f"{{{BASE}, topics: [a], librdkafka_options: {{no.such.option: '1'}}}}",
            "refused by librdkafka",
        ),
        (
            f"{{{BASE}, topics: [a], librdkafka_options: "
            "{partition.assignment.strategy: cooperative-sticky}}",
            "incremental rebalancing",
        ),
        (f"{{{BASE}, topics: [a], security_protocol: SASL_SSL}}", "needs 'sasl'"),
        (f"{{{BASE}, topics: [a], tls: {{ca_file: /nonexistent}}}}", "set security_protocol"),
        (
            f"{{{BASE}, topics: [a], security_protocol: SSL, tls: {{ca_file: /nonexistent}}}}",
            "no readable file",
        ),
    ],
)
def test_config_errors_of_the_kafka_source(source: str, problem: str) -> None:
    text = (
        f"sources:\n  k: {source}\nsinks:\n  c: {{type: console}}\n"
        "pipelines:\n  p: {steps: [{type: drop, when: {field: message, equals: x}}]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert problem in str(caught.value)


def test_settings_reach_librdkafka() -> None:
    from logcap.capture.kafka.consumer import librdkafka_config

    config = parse_config(
        f"sources:\n  k: {{{BASE}, topics: [a], auto_offset_reset: latest, fetch_min_bytes: 10,"
        " fetch_max_bytes: 2000000, fetch_max_wait: 250ms, session_timeout: 7s,"
        " security_protocol: SASL_SSL, sasl: {mechanism: PLAIN, username: u, password: p},"
        " tls: {verify_hostname: false}, librdkafka_options: {client.rack: r1}}\n"
        "sinks:\n  c: {type: console}\n"
    )
    props = librdkafka_config(config.sources["k"])  # type: ignore[arg-type]
    assert props["enable.auto.commit"] is False and props["enable.auto.offset.store"] is False
    assert props["group.id"] == "g" and props["auto.offset.reset"] == "latest"
    assert props["fetch.min.bytes"] == 10 and props["fetch.max.bytes"] == 2_000_000
    assert props["fetch.wait.max.ms"] == 250 and props["session.timeout.ms"] == 7000
    assert props["sasl.mechanism"] == "PLAIN" and props["sasl.username"] == "u"
    assert props["security.protocol"] == "SASL_SSL"
    assert props["ssl.endpoint.identification.algorithm"] == "none"
    assert props["client.rack"] == "r1"


TIER_LINES = int(os.environ.get("LOGCAP_KAFKA_TIER_LINES", "40000"))
TIER_WAIT = 180 + TIER_LINES / 2000  # seconds: the 1,000,000 on demand take minutes


class Tier:
    """Two agents (file source → kafka sink) and two aggregators (kafka source → file
    sink) in one consumer group, each aggregator with its own data_dir and output."""

    def __init__(self, root: Path, tansu: Tansu, start_agent: Any, topic: str) -> None:
        self.root, self.tansu, self.start_agent, self.topic = root, tansu, start_agent, topic
        self.aggregators: dict[str, Any] = {}
        create_topic(tansu.bootstrap, topic, 4)
        for name in ("agent1", "agent2"):
            home = root / name
            (home / "logs").mkdir(parents=True)
            address = f"127.0.0.1:{free_port()}"
            config = write_config(
                home,
                f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  kafka: {{type: kafka, bootstrap_servers: "{tansu.bootstrap}", topic: {topic},
          key_field: null}}
dispatcher: {{batch_max_events: 2000, batch_timeout: 50ms}}
""",
                address,
            )
            start_agent(config, address).wait_ready()

    def write(self, start: int, end: int) -> None:
        """Lines ``start:end``, half into each agent's log."""
        middle = (start + end) // 2
        for name, (lo, hi) in (("agent1", (start, middle)), ("agent2", (middle, end))):
            with open(self.root / name / "logs" / "app.log", "a") as handle:
                handle.write("".join(f"line {n:08d}\n" for n in range(lo, hi)))

    def start(self, name: str) -> Any:
        home = self.root / name
        home.mkdir(exist_ok=True)
        address = f"127.0.0.1:{free_port()}"
        config = write_config(
            home,
            f"""
data_dir: ./data
sources:
  k: {source_yaml(self.tansu, self.topic, "aggregators", ", max_poll_records: 2000")}
sinks:
  out: {{type: file, path: "./out.ndjson"}}
dispatcher: {{batch_max_events: 2000, batch_timeout: 50ms}}
""",
            address,
        )
        agent = self.start_agent(config, address)
        agent.wait_ready()
        self.aggregators[name] = agent
        return agent

    def numbers(self) -> list[int]:
        return [n for name in ("agg1", "agg2") for n in numbers_in(self.root / name / "out.ndjson")]

    def has_every(self, end: int) -> bool:
        return set(self.numbers()) >= set(range(end))

    def committed_total(self) -> int:
        return sum(max(0, o) for o in committed(self.tansu.bootstrap, "aggregators", self.topic, 4))


def _counts(numbers: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for n in numbers:
        counts[n] = counts.get(n, 0) + 1
    return counts


def test_two_aggregators_one_killed_the_survivor_takes_its_partitions(
    tmp_path: Path, tansu: Tansu, start_agent
) -> None:
    """Two agents ship numbered lines through a 4-partition topic to two aggregators in one
    group. One aggregator is killed with kill -9 midway, holding messages it read and had
    not delivered (its sink process stopped): the survivor takes its partitions and every
    line arrives at least once (duplicates reported). Then both are stopped
    gracefully and restarted, more lines are shipped: none is read twice."""
    total = TIER_LINES
    tier = Tier(tmp_path, tansu, start_agent, "logs-tier")
    first, second = tier.start("agg1"), tier.start("agg2")
    tier.write(0, total // 2)

    def both_deliver() -> bool:
        return all(numbers_in(tmp_path / name / "out.ndjson") for name in ("agg1", "agg2"))

    wait_for(both_deliver, TIER_WAIT, "both aggregators delivering")
    # the one to die has read what it could not deliver yet: its sink process is stopped
    os.kill(first.children()["sink:out"], signal.SIGSTOP)
    read_before = first.metric("logcap_component_received_events_total", component="k")
    tier.write(total // 2, total)  # half of it into the partitions of the one to die
    wait_for(
        lambda: first.metric("logcap_component_received_events_total", component="k") > read_before,
        TIER_WAIT,
        "the aggregator to die reading what it cannot deliver",
    )
    first.process.send_signal(signal.SIGKILL)  # its children die with it (PDEATHSIG)
    first.process.wait()
    wait_for(lambda: tier.has_every(total), TIER_WAIT, "every line, the survivor taking over")
    wait_for(lambda: tier.committed_total() == total, TIER_WAIT, "the survivor's commits")
    taken = [line for line in second.log.read_text().splitlines() if "assigned" in line]
    assert len(taken[-1].split("@")) == 5, "the survivor owns all four partitions"
    counts = _counts(tier.numbers())
    duplicates = sum(c - 1 for c in counts.values())
    print(f"\nkill -9 of one aggregator: {total} lines, {duplicates} duplicates")
    assert set(counts) == set(range(total))
    # graceful stop and restart of both: nothing is read twice
    assert second.stop() == 0
    before = _counts(tier.numbers())
    tier.start("agg1"), tier.start("agg2")
    tier.write(total, total + total // 4)
    end = total + total // 4
    wait_for(lambda: tier.has_every(end), TIER_WAIT, "every line after the restart")
    wait_for(lambda: tier.committed_total() == end, TIER_WAIT, "every offset committed")
    for agent in tier.aggregators.values():
        assert agent.stop() == 0
    after = _counts(tier.numbers())
    assert {n: after[n] for n in before} == before, "lines delivered before were read again"
    assert all(after[n] == 1 for n in range(total, end)), "a line was read twice"


def test_a_rolling_restart_of_the_aggregators_loses_nothing(
    tmp_path: Path, tansu: Tansu, start_agent
) -> None:
    """Lines keep coming while each aggregator in turn is stopped (SIGTERM) and started
    again: every line arrives, and at most one uncommitted batch (max_poll_records) per
    partition is read again."""
    total, batch = TIER_LINES, 2000
    tier = Tier(tmp_path, tansu, start_agent, "logs-rolling")
    tier.start("agg1"), tier.start("agg2")
    written = 0
    step = max(1, total // 8)
    for name in ("agg1", "agg2"):
        tier.write(written, written + step)
        written += step
        wait_for(lambda end=written: tier.has_every(end), TIER_WAIT, "the lines so far")
        tier.write(written, written + step)  # in flight while it stops
        written += step
        assert tier.aggregators[name].stop() == 0
        tier.start(name)
    tier.write(written, total)
    wait_for(lambda: tier.has_every(total), TIER_WAIT, "every line")
    wait_for(lambda: tier.committed_total() == total, TIER_WAIT, "every offset committed")
    for agent in tier.aggregators.values():
        assert agent.stop() == 0
    counts = _counts(tier.numbers())
    duplicates = sum(c - 1 for c in counts.values())
    print(f"\nrolling restart: {total} lines, {duplicates} duplicates")
    assert set(counts) == set(range(total))
    assert duplicates <= 4 * batch


def test_the_shipped_agent_and_aggregator_configs_validate() -> None:
    """configs/agent.yaml (files + Docker -> Kafka) and configs/aggregator.yaml (Kafka ->
    Loki + file archive) are valid as shipped, with their variables set."""
    from logcap.capture.kafka.config import KafkaSourceConfig
    from logcap.config import load_config
    from logcap.sinks.kafka.config import KafkaSinkConfig

    configs = Path(__file__).parent.parent / "configs"
    env = {"KAFKA_BROKERS": "kafka-1:9092,kafka-2:9092", "LOKI_URL": "http://loki:3100"}
    agent = load_config(configs / "agent.yaml", env=env)
    assert {type(s).__name__ for s in agent.sources.values()} == {
        "FileSourceConfig",
        "DockerSourceConfig",
    }
    assert isinstance(agent.sinks["kafka"], KafkaSinkConfig) and agent.sinks["kafka"].acks == "all"
    aggregator = load_config(configs / "aggregator.yaml", env=env)
    source = aggregator.sources["agents"]
    assert isinstance(source, KafkaSourceConfig) and source.topics == ["^logs-.*"]
    assert source.group_id == "logcap-aggregators" and source.decoding == "logcap"
    assert {type(s).__name__ for s in aggregator.sinks.values()} == {
        "LokiSinkConfig",
        "FileSinkConfig",
    }


def test_a_topic_regex_pipelines_and_auto_offset_reset_latest(
    tmp_path: Path, tansu: Tansu, start_agent
) -> None:
    """`topics: ['^re-.*']` reads every matching topic and no other; a text source's
    pipelines run on its messages (a drop step); `auto_offset_reset: latest` skips what a
    partition held before the group first had it."""
    for topic in ("re-a", "re-b", "other", "late"):
        create_topic(tansu.bootstrap, topic, 1)
    produce(tansu.bootstrap, "re-a", [(b"a keep", None, None), (b"a drop", None, None)])
    produce(tansu.bootstrap, "re-b", [(b"b keep", None, None)])
    produce(tansu.bootstrap, "other", [(b"never", None, None)])
    produce(tansu.bootstrap, "late", [(b"before", None, None)])
    address = f"127.0.0.1:{free_port()}"
    regex = (
        f'{{type: kafka, bootstrap_servers: "{tansu.bootstrap}", topics: ["^re-.*"], '
        "group_id: g-re, decoding: text, pipelines: [p], session_timeout: 6s}"
    )
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  re: {regex}
  late: {source_yaml(tansu, "late", "g-late", ", decoding: text, auto_offset_reset: latest")}
pipelines:
  p: {{steps: [{{type: drop, when: {{field: message, matches: drop}}}}]}}
sinks:
  out: {{type: file, path: "./out/{{source}}.ndjson"}}
dispatcher: {{batch_timeout: 50ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    out = tmp_path / "out"
    wait_for(lambda: len(read_ndjson(out / "re.ndjson")) == 2, 60, "the matching topics")
    wait_for(lambda: "source late: assigned late[0]" in agent.log.read_text(), 60, "the assignment")
    for _ in range(60):  # until the start (the end when assigned) is resolved and read
        produce(tansu.bootstrap, "late", [(b"after", None, None)])
        if read_ndjson(out / "late.ndjson"):
            break
        time.sleep(1)
    assert agent.metric("logcap_source_pipeline_dropped_total", component="re") == 1
    assert agent.stop() == 0
    kept = read_ndjson(out / "re.ndjson")
    assert sorted((e["labels"]["topic"], e["message"]) for e in kept) == [
        ("re-a", "a keep"),
        ("re-b", "b keep"),
    ]
    late = {e["message"] for e in read_ndjson(out / "late.ndjson")}
    assert late == {"after"}  # never the message from before


def _message(value: bytes, offset: int = 0, **keys: Any) -> Any:
    from confluent_kafka import Message

    return Message(
        topic="t", partition=1, offset=offset, value=value, timestamp=(1, 1_700_000_000_000), **keys
    )


def test_the_decoder_takes_each_logcap_entry_once_and_refuses_nothing() -> None:
    """A partition's logcap entries through the batch path: equal labels are one mapping
    (one run downstream), times to the nanosecond, a value that is no logcap entry (or
    has odd members) is kept as text or without them and counted."""
    from logcap.capture.kafka.decode import Decoder

    def value(n: int, stamp: str = "2026-01-02T03:04:05.000000007Z", **extra: Any) -> bytes:
        entry = {"timestamp": stamp, "source": "app", "labels": {"host": "h"}, "message": f"m{n}"}
        return json.dumps({**entry, **extra}).encode()

    decoder = Decoder("logcap", ["partition"], [])
    messages = [
        _message(value(0)),
        _message(value(1, fields={"a": 1}, level="warn")),
        _message(value(2, stamp="2026-01-02T03:04:05.12Z")),
        _message(value(3, stamp="2026-01-02T03:04:05.00000000xZ")),
        _message(value(4, fields=[1, 2])),
        _message(b"not json"),
        _message(value(6, labels={"host": "other"})),
    ]
    entries = decoder.entries(messages, read_ns=42)
    labels = {"host": "h", "origin_source": "app", "partition": "1"}
    assert [e[2] for e in entries] == ["m0", "m1", "m2", "m3", "m4", "not json", "m6"]
    assert entries[0][0] == labels and entries[1][0] is entries[0][0]
    assert entries[6][0] == {**labels, "host": "other"}
    assert entries[0][1] == 1_767_323_045_000_000_007
    assert entries[1][3:] == ("warn", b'{"a":1}'.replace(b":", b": "))
    assert entries[2][1] == 1_767_323_045_120_000_000
    assert entries[3][1] == 1_700_000_000_000 * 1_000_000  # unreadable: the message's time
    assert entries[4][4] is None  # fields that are no object are left out
    assert entries[5] == ({"partition": "1"}, 1_700_000_000_000 * 1_000_000, "not json", None, None)
    assert decoder.failed == 1
    text = Decoder("text", ["offset", "key"], ["h"])
    (entry,) = text.entries([_message(b"x", 9, key=b"k", headers=[("h", b"v"), ("z", b"1")])], 0)
    assert entry[0] == {"offset": "9", "key": "k", "h": "v"} and entry[2] == "x"


def test_a_reload_that_changes_the_source_reads_nothing_twice(
    tmp_path: Path, tansu: Tansu, start_agent
) -> None:
    """A SIGHUP with a changed kafka source restarts its collector: it stops as in a drain
    (waits for delivery, commits, leaves the group) and its successor goes on from there:
    every message once."""
    create_topic(tansu.bootstrap, "reloaded", 2)
    address = f"127.0.0.1:{free_port()}"
    body = f"""
data_dir: ./data
sources:
  k: {source_yaml(tansu, "reloaded", "g-reload", ", decoding: text, max_poll_records: 100")}
sinks:
  out: {{type: file, path: "./out.ndjson"}}
dispatcher: {{batch_timeout: 50ms}}
"""
    config = write_config(tmp_path, body, address)
    agent = start_agent(config, address)
    agent.wait_ready()
    produce(tansu.bootstrap, "reloaded", numbered(1000))
    out = tmp_path / "out.ndjson"
    wait_for(lambda: len(numbers_in(out)) >= 1000, 60, "the first messages")
    config.write_text(config.read_text().replace("max_poll_records: 100", "max_poll_records: 50"))
    agent.process.send_signal(signal.SIGHUP)
    wait_for(lambda: agent.metric("logcap_config_reloads_total") == 1, 60, "the reload")
    produce(tansu.bootstrap, "reloaded", numbered(2000, 1000))
    wait_for(lambda: len(numbers_in(out)) >= 2000, 60, "the messages after the reload")
    assert agent.stop() == 0
    assert sorted(numbers_in(out)) == list(range(2000))
