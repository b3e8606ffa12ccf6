"""The same delivery contract, run against every network sink through `logcap run`.

Each case runs the agent with the sink under test (file on a tmpfs that fills up, http
against a scripted server, kafka against librdkafka's mock cluster, loki against the fake)
next to a file sink (the witness) and checks: every line delivered once; a retryable
failure retried to the failing sink only (the witness gets each line once); a permanent
failure dead-lettered; the circuit breaker opening (metric, /ready) and recovering; the
per-sink metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from tests._fault_helpers import dlq_payload, dlq_records, fill, tmpfs
from tests._kafka_helpers import MockCluster, consume_all
from tests._loki_fake import LokiFake
from tests.conftest import Agent, free_port, wait_for, write_config
from tests.test_http_sink import Server, start_server  # noqa: F401 (fixture)

LINES = 2000


@dataclass
class Destination:
    """A sink under test and the hands to break it."""

    sink_yaml: str
    received: Callable[[], list[str]]  # messages that arrived, in arrival order
    fail_retryable: Callable[[], None]
    fail_permanent: Callable[[], None]
    heal: Callable[[], None]
    # entries that arrived again but are not in received() (Loki drops identical entries)
    dropped_duplicates: Callable[[], int] = lambda: 0


def _http(start: Callable[..., Server]) -> Destination:
    server = start()
    mode = {"answer": 200}
    server.answer = lambda request: (mode["answer"], {}, b"")

    def received() -> list[str]:
        return [json.loads(line)["message"] for line in server.lines()]

    return Destination(
        f'{{type: http, url: "{server.url}", timeout: 2s, '
        "circuit_breaker: {failure_threshold: 2, open_duration: 1s}}",
        received,
        lambda: mode.update(answer=503),
        lambda: mode.update(answer=400),
        lambda: mode.update(answer=200),
    )


def _kafka(cluster: MockCluster) -> Destination:
    cluster.create_topic("logs", partitions=1)

    def received() -> list[str]:
        messages = consume_all(cluster.bootstrap, ["logs"], 10**9, timeout=30, idle=1.0)
        return [json.loads(m.value())["message"] for m in messages]

    return Destination(
        f'{{type: kafka, bootstrap_servers: "{cluster.bootstrap}", topic: logs, '
        # long enough for a first connection on a loaded machine (1 s failed once in CI),
        # short enough that brokers down fail batches soon
        "delivery_timeout: 5s, circuit_breaker: {failure_threshold: 2, open_duration: 1s}}",
        received,
        cluster.brokers_down,
        lambda: cluster.fail_produce_requests(*[KafkaError.TOPIC_AUTHORIZATION_FAILED] * 50),
        lambda: (cluster.brokers_up(), cluster.clear_produce_errors()),
    )


def _loki(fake: LokiFake) -> Destination:
    def script(status: int, body: str = "") -> None:
        with fake._lock:  # replace whatever was scripted before
            fake._script.clear()
        fake.script(status, body, times=10**6)

    def heal() -> None:
        with fake._lock:
            fake._script.clear()

    return Destination(
        f'{{type: loki, url: "{fake.url}", timeout: 2s, '
        "circuit_breaker: {failure_threshold: 2, open_duration: 1s}}",
        fake.lines,
        lambda: script(503),
        lambda: script(400, "entry out of order"),
        heal,
        lambda: fake.duplicates,
    )


def _file(disk: Path) -> Destination:
    output = disk / "target.ndjson"
    filler = disk / "filler"

    def received() -> list[str]:
        if not output.exists():
            return []
        lines = output.read_bytes().split(b"\n")
        return [json.loads(line)["message"] for line in lines if line.endswith(b"}")]

    return Destination(
        f'{{type: file, path: "{output}", '
        "circuit_breaker: {failure_threshold: 2, open_duration: 1s}}",
        received,
        lambda: fill(filler),
        lambda: pytest.fail("a file sink has no permanent failure to inject"),
        lambda: filler.unlink(missing_ok=True),
    )


@pytest.fixture
def destination(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    start_server,  # noqa: F811 (the fixture imported above)
) -> Iterator[Destination]:
    if request.param == "http":
        yield _http(start_server)
        return
    if request.param == "file":
        with tmpfs(tmp_path / "disk", "2m") as disk:  # a disk that really fills up
            yield _file(disk)
        return
    if request.param == "loki":
        with LokiFake(unordered=True) as fake:  # retried batches arrive after later ones
            yield _loki(fake)
        return
    cluster = MockCluster(brokers=1)
    try:
        yield _kafka(cluster)
    finally:
        cluster.close()


def _agent(tmp_path: Path, start_agent, destination: Destination) -> tuple[Agent, Path]:
    logs = tmp_path / "logs"
    logs.mkdir()
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  target: {destination.sink_yaml}
  witness: {{type: file, path: "./out/witness.ndjson"}}
dispatcher: {{batch_max_events: 200, batch_timeout: 50ms}}
retry: {{initial_backoff: 200ms, max_backoff: 1s}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    return agent, logs / "app.log"


def _append(log: Path, first: int, count: int) -> None:
    with open(log, "a") as handle:
        for n in range(first, first + count):
            handle.write(f"line {n}\n")


def _dead_lettered(tmp_path: Path, sink: str) -> list[str]:
    """The messages of every DLQ record of ``sink``."""
    return [
        json.loads(raw)["message"]
        for record in dlq_records(tmp_path / "data" / "dlq")
        if record.sink == sink
        for raw in bytes(dlq_payload(record)).splitlines()
    ]


def _witness(tmp_path: Path) -> list[str]:
    path = tmp_path / "out" / "witness.ndjson"
    if not path.exists():
        return []
    return [json.loads(line)["message"] for line in path.read_text().splitlines()]


ALL = ["file", "http", "kafka", "loki"]
# a file sink fails permanently only for a path no file system takes (a name too long):
# a config, nothing a running test can cause (an unwritable directory is retryable,
# tests/test_file_sink_unwritable.py)
REFUSING = ["http", "kafka", "loki"]


@pytest.mark.parametrize("destination", ALL, indirect=True)
def test_every_line_is_delivered_once(tmp_path: Path, start_agent, destination) -> None:
    agent, log = _agent(tmp_path, start_agent, destination)
    _append(log, 0, LINES)
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="target") >= LINES,
        60,
        "every line delivered",
    )
    assert agent.metric("logcap_component_errors_total", component="target") == 0
    assert agent.stop() == 0
    assert sorted(destination.received()) == sorted(f"line {n}" for n in range(LINES))
    assert destination.dropped_duplicates() == 0, "lines were delivered more than once"


@pytest.mark.parametrize("destination", ALL, indirect=True)
def test_a_retryable_failure_opens_the_circuit_retries_that_sink_only_and_recovers(
    tmp_path: Path, start_agent, destination
) -> None:
    agent, log = _agent(tmp_path, start_agent, destination)
    destination.fail_retryable()
    _append(log, 0, LINES)
    wait_for(
        lambda: agent.metric("logcap_sink_circuit_state", component="target") == 1,
        60,
        "the circuit to open",
    )
    status, body = agent.json("/ready")
    assert status == 503 and body["components"]["target"]["circuit"] == "open"
    assert agent.metric("logcap_sink_circuit_openings_total", component="target") >= 1
    wait_for(lambda: len(_witness(tmp_path)) >= LINES, 60, "the witness sink, unaffected")
    destination.heal()
    wait_for(
        lambda: sorted(set(destination.received())) == sorted(f"line {n}" for n in range(LINES)),
        120,
        "every line at the healed destination",
    )
    wait_for(
        lambda: agent.metric("logcap_sink_circuit_state", component="target") == 0,
        30,
        "the circuit to close",
    )
    assert agent.json("/ready")[0] == 200
    assert agent.metric("logcap_retry_delivered_total", component="target") >= 1
    assert agent.stop() == 0
    # the retries went to the failing sink alone: the witness has every line once
    assert sorted(_witness(tmp_path)) == sorted(f"line {n}" for n in range(LINES))


@pytest.mark.parametrize("destination", REFUSING, indirect=True)
def test_a_permanent_failure_is_dead_lettered_and_the_rest_delivered(
    tmp_path: Path, start_agent, destination
) -> None:
    agent, log = _agent(tmp_path, start_agent, destination)
    _append(log, 0, 100)
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="target") >= 100,
        60,
        "the first lines",
    )
    destination.fail_permanent()
    _append(log, 100, 100)
    wait_for(
        lambda: (
            agent.metric("logcap_dlq_records_total", component="target", reason="permanent") >= 1
        ),
        60,
        "the refused batch in the dead letter queue",
    )
    assert agent.metric("logcap_sink_circuit_state", component="target") == 0  # not opened
    destination.heal()
    _append(log, 200, 100)
    wait_for(
        lambda: {f"line {n}" for n in range(200, 300)} <= set(destination.received()),
        60,
        "the lines after the refusal",
    )
    dead = agent.metric("logcap_dlq_entries_total", component="target")
    assert agent.stop() == 0
    delivered, dead_lettered = destination.received(), _dead_lettered(tmp_path, "target")
    assert dead >= 1 and len(dead_lettered) == dead
    # every line is either delivered or in the dead letter queue, once, and none lost
    assert sorted(delivered + dead_lettered) == sorted(f"line {n}" for n in range(300))
    assert destination.dropped_duplicates() == 0, "lines were delivered more than once"
    assert sorted(_witness(tmp_path)) == sorted(f"line {n}" for n in range(300))
