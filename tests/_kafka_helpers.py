"""Kafka for the tests: librdkafka's mock cluster (with fault injection through its C
API, via ctypes on the librdkafka bundled in confluent-kafka), and Tansu, a real
Kafka-compatible broker (installed by scripts/install_tansu.sh)."""

from __future__ import annotations

import ctypes
import glob
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import Consumer

TANSU = Path(os.environ.get("LOGCAP_TANSU", "/opt/logcap-peers/bin/tansu"))
API_PRODUCE = 0  # Kafka protocol ApiKey of Produce requests


def _librdkafka() -> ctypes.CDLL:
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = glob.glob(str(libs / "librdkafka-*.so*"))
    if not found:
        pytest.fail(f"no bundled librdkafka under {libs}")
    lib = ctypes.CDLL(found[0])  # the library confluent-kafka already loaded
    void, i16, i32, cint, size = (
        ctypes.c_void_p,
        ctypes.c_int16,
        ctypes.c_int32,
        ctypes.c_int,
        ctypes.c_size_t,
    )
    for name, result, args in (
        ("rd_kafka_conf_new", void, []),
        ("rd_kafka_conf_set", cint, [void, ctypes.c_char_p, ctypes.c_char_p, void, size]),
        ("rd_kafka_new", void, [cint, void, ctypes.c_char_p, size]),
        ("rd_kafka_destroy", None, [void]),
        ("rd_kafka_err2name", ctypes.c_char_p, [cint]),
        ("rd_kafka_mock_cluster_new", void, [void, cint]),
        ("rd_kafka_mock_cluster_destroy", None, [void]),
        ("rd_kafka_mock_cluster_bootstraps", ctypes.c_char_p, [void]),
        ("rd_kafka_mock_topic_create", cint, [void, ctypes.c_char_p, cint, cint]),
        ("rd_kafka_mock_broker_set_down", cint, [void, i32]),
        ("rd_kafka_mock_broker_set_up", cint, [void, i32]),
        ("rd_kafka_mock_broker_set_rtt", cint, [void, i32, cint]),
        ("rd_kafka_mock_push_request_errors_array", None, [void, i16, size, void]),
        ("rd_kafka_mock_clear_request_errors", None, [void, i16]),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = result, args
    return lib


class MockCluster:
    """A mock cluster of its own (on 127.0.0.1 ports), owned by a bare librdkafka handle."""

    def __init__(self, brokers: int = 3) -> None:
        self.lib = lib = _librdkafka()
        error = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        lib.rd_kafka_conf_set(conf, b"log_level", b"0", error, 512)
        self.handle = lib.rd_kafka_new(0, conf, error, 512)  # takes the conf
        if not self.handle:
            raise RuntimeError(error.value.decode())
        self.cluster = lib.rd_kafka_mock_cluster_new(self.handle, brokers)
        self.brokers = brokers
        self.bootstrap = lib.rd_kafka_mock_cluster_bootstraps(self.cluster).decode()

    def _check(self, code: int, what: str) -> None:
        if code:
            raise RuntimeError(f"{what}: {self.lib.rd_kafka_err2name(code).decode()}")

    def create_topic(self, name: str, partitions: int = 3, replication: int = 1) -> None:
        self._check(
            self.lib.rd_kafka_mock_topic_create(
                self.cluster, name.encode(), partitions, replication
            ),
            "create topic",
        )

    def brokers_down(self) -> None:
        for broker in range(1, self.brokers + 1):
            self._check(self.lib.rd_kafka_mock_broker_set_down(self.cluster, broker), "down")

    def brokers_up(self) -> None:
        for broker in range(1, self.brokers + 1):
            self._check(self.lib.rd_kafka_mock_broker_set_up(self.cluster, broker), "up")

    def slow_brokers(self, rtt_ms: int) -> None:
        for broker in range(1, self.brokers + 1):
            self._check(self.lib.rd_kafka_mock_broker_set_rtt(self.cluster, broker, rtt_ms), "rtt")

    def fail_produce_requests(self, *errors: int) -> None:
        """The next Produce requests (any broker) fail with these Kafka error codes."""
        array = (ctypes.c_int * len(errors))(*errors)
        self.lib.rd_kafka_mock_push_request_errors_array(
            self.cluster, API_PRODUCE, len(errors), array
        )

    def clear_produce_errors(self) -> None:
        self.lib.rd_kafka_mock_clear_request_errors(self.cluster, API_PRODUCE)

    def close(self) -> None:
        if self.cluster:
            self.lib.rd_kafka_mock_cluster_destroy(self.cluster)
            self.cluster = None
        if self.handle:
            self.lib.rd_kafka_destroy(self.handle)
            self.handle = None


@pytest.fixture
def mock_cluster() -> Iterator[MockCluster]:
    cluster = MockCluster()
    try:
        yield cluster
    finally:
        cluster.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Tansu:
    """A Tansu broker process with in-memory storage on a free 127.0.0.1 port."""

    def __init__(self, log: Path) -> None:
        if not TANSU.exists():
            pytest.fail(f"{TANSU} missing: run `bash scripts/install_tansu.sh`")
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        self.bootstrap = f"127.0.0.1:{port}"
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                str(TANSU),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"tansu did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[Tansu]:
    broker = Tansu(tmp_path / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()


def consume_all(
    bootstrap: str,
    topics: list[str],
    expected: int,
    timeout: float = 120,
    idle: float | None = None,
) -> list[Any]:
    """Every message of ``topics`` from the beginning, until ``expected`` arrived, or
    nothing new came for ``idle`` seconds once the first did (or ``timeout`` passed: the
    caller's assertions then show what is missing)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,  # Tansu holds a join for about half of it
            "log_level": 0,
        }
    )
    consumer.subscribe(topics)
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.2):
                if message.error() is None:
                    messages.append(message)
                    last_new = time.monotonic()
            if idle is not None and messages and time.monotonic() - last_new > idle:
                break
    finally:
        consumer.close()
    return messages
