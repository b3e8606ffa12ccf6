"""File → Kafka (Tansu) against a bare confluent-kafka producer loop in the same run, and
one input delivered to three sinks at once (file + kafka + blackhole).

    bare loop:  the same entry values ─▶ confluent-kafka Producer ─▶ Tansu
    logcap:     1 file ─▶ collector ─▶ dispatcher (encode once) ─▶ kafka sink ─▶ Tansu

Both use the sink's producer settings (acks=all, idempotence, lz4, linger 5 ms) against
a fresh Tansu each, and both count as done only when every message is acknowledged.
A consumer then counts what each run left in its topic before the figures count.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from bench.conftest import LINES, record
from bench.harness import LINE_BYTES, RunResult, level_the_field, run_logcap
from logcap.dispatch.encode import entry_prefix
from tests._kafka_helpers import Tansu, consume_all

API = "127.0.0.1:19612"


@pytest.fixture
def broker(tmp_path: Path):
    tansu = Tansu(tmp_path / "tansu.log")
    yield tansu
    tansu.stop()


def _config(workdir: Path, logs: Path, sinks: str) -> Path:
    config = workdir / "logcap.yaml"
    config.write_text(f"""
data_dir: {workdir / "data"}
api: {{address: "{API}"}}
sources:
  app: {{type: file, include: ["{logs}/*.log"]}}
sinks:
{sinks}
dispatcher: {{batch_max_events: 5000, batch_timeout: 50ms}}
""")
    return config


def _count(bootstrap: str, topic: str) -> int:
    return len(consume_all(bootstrap, [topic], LINES, timeout=300))


def test_bare_producer_loop_to_tansu(benchmark, single_input, broker: Tansu) -> None:
    """The baseline: what confluent-kafka alone does with the same values."""
    _, paths = single_input
    prefix = entry_prefix("app", {"host": socket.gethostname(), "path": str(paths[0])}, 0)
    values = [
        prefix + b'"' + line + b'"}' for line in paths[0].read_bytes().splitlines()
    ]  # the entries logcap sends (these lines need no escaping)
    results: list[RunResult] = []

    def once() -> None:
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "compression.type": "lz4",
                "linger.ms": 5,
                "queue.buffering.max.messages": 200_000,
                "delivery.report.only.error": True,
            }
        )
        started = time.perf_counter()
        cpu = time.process_time()
        produce = producer.produce
        for value in values:
            while True:
                try:
                    produce("bare", value, b"app")
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(300) == 0
        seconds = time.perf_counter() - started
        results.append(
            RunResult(
                "bare producer->kafka",
                LINES,
                LINES * LINE_BYTES,
                seconds,
                time.process_time() - cpu,
                0,
                {},
            )
        )

    benchmark.pedantic(once, rounds=1, iterations=1)
    assert _count(broker.bootstrap, "bare") == LINES
    record(results[-1])
    benchmark.extra_info.update(lines_per_second=results[-1].lines_per_second)


def test_file_to_kafka(benchmark, single_input, broker: Tansu, tmp_path: Path) -> None:
    logs, _ = single_input
    work = tmp_path / "w"
    results: list[RunResult] = []

    def once() -> None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        sinks = f'  kafka: {{type: kafka, bootstrap_servers: "{broker.bootstrap}", topic: logs}}'
        config = _config(work, logs, sinks)
        level_the_field(sorted(logs.glob("*.log")))
        results.append(
            run_logcap("logcap file->kafka", config, API, "kafka", LINES, LINES * LINE_BYTES)
        )

    benchmark.pedantic(once, rounds=1, iterations=1)
    assert _count(broker.bootstrap, "logs") == LINES
    record(results[-1])
    benchmark.extra_info.update(
        lines_per_second=results[-1].lines_per_second, cpu_seconds=results[-1].cpu_seconds
    )


def test_file_to_file_kafka_and_blackhole(
    benchmark, single_input, broker: Tansu, tmp_path: Path
) -> None:
    """One batch encoded once, read in place by three sink processes."""
    logs, _ = single_input
    work = tmp_path / "w"
    results: list[RunResult] = []

    def once() -> None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        sinks = (
            f'  archive: {{type: file, path: "{work}/out/{{source}}.ndjson"}}\n'
            f'  kafka: {{type: kafka, bootstrap_servers: "{broker.bootstrap}", topic: logs}}\n'
            "  devnull: {type: blackhole}"
        )
        config = _config(work, logs, sinks)
        level_the_field(sorted(logs.glob("*.log")))
        result = run_logcap("logcap file->3 sinks", config, API, "kafka", LINES, LINES * LINE_BYTES)
        results.append(result)

    benchmark.pedantic(once, rounds=1, iterations=1)
    assert _count(broker.bootstrap, "logs") == LINES
    result = results[-1]
    record(result)
    per_sink = {
        name: cpu for name, cpu in result.cpu_by_process.items() if name.startswith("sink ")
    }
    benchmark.extra_info.update(
        lines_per_second=result.lines_per_second, cpu_by_sink_process=per_sink
    )
    print(f"\nCPU seconds per sink process: {per_sink}")
    shutil.rmtree(work, ignore_errors=True)


def kafka_ratio_line(results: dict[str, RunResult]) -> str | None:
    """The closing comparison: logcap file->kafka as a share of the bare loop."""
    ours, bare = results.get("logcap file->kafka"), results.get("bare producer->kafka")
    if ours is None or bare is None:
        return None
    return (
        f"  ratio logcap file->kafka / bare producer loop: "
        f"{ours.lines_per_second / bare.lines_per_second:.2f}x "
        f"(steady state {ours.steady_lines_per_second / bare.lines_per_second:.2f}x)"
    )
