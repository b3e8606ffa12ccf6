"""File → Kafka (Tansu) against a bare confluent-kafka producer program in the same run,
and one input delivered to three sinks at once (file + kafka + blackhole).

    bare:    1 file ─▶ one loop making the same entry values ─▶ confluent-kafka ─▶ Tansu
    logcap:  1 file ─▶ collector ─▶ dispatcher (encode once) ─▶ kafka sink ─▶ Tansu

Both are timed from launching their process to the last acknowledgement.

Both use the sink's producer settings (acks=all, idempotence, lz4, linger 5 ms) against
a fresh Tansu each, and both count as done only when every message is acknowledged.
A consumer then counts what each run left in its topic before the figures count.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.conftest import LINES, record
from bench.harness import (
    LINE_BYTES,
    NETWORK_DISPATCHER,
    RunResult,
    TreeMonitor,
    agent_config,
    level_the_field,
    run_logcap,
)
from tests._kafka_helpers import Tansu, consume_all

API = "127.0.0.1:19612"


@pytest.fixture
def broker(tmp_path: Path):
    tansu = Tansu(tmp_path / "tansu.log")
    yield tansu
    tansu.stop()


def _count(bootstrap: str, topic: str) -> int:
    return len(consume_all(bootstrap, [topic], LINES, timeout=300))


def test_bare_producer_program_to_tansu(benchmark, single_input, broker: Tansu) -> None:
    """The baseline: a program that only reads the file and produces the same values with
    confluent-kafka (bench/kafka_bare_producer.py), timed from launch to its last
    acknowledgement, like logcap."""
    _, paths = single_input
    results: list[RunResult] = []

    def once() -> None:
        level_the_field(paths)
        started = time.perf_counter()
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.kafka_bare_producer"),
                *(broker.bootstrap, "bare", str(paths[0]), "app"),
            ]
        )
        with TreeMonitor(process.pid) as monitor:
            assert process.wait(timeout=300) == 0
        seconds = time.perf_counter() - started
        results.append(
            RunResult(
                "bare producer->kafka",
                LINES,
                LINES * LINE_BYTES,
                seconds,
                monitor.cpu_seconds,
                monitor.peak_rss,
                monitor.cpu_by_process(),
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
        config = agent_config(work, logs, API, sinks, NETWORK_DISPATCHER)
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
        config = agent_config(work, logs, API, sinks, NETWORK_DISPATCHER)
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
    """The closing comparison: logcap file->kafka as a share of the bare program."""
    ours, bare = results.get("logcap file->kafka"), results.get("bare producer->kafka")
    if ours is None or bare is None:
        return None
    return (
        f"  ratio logcap file->kafka / bare producer program: "
        f"{ours.lines_per_second / bare.lines_per_second:.2f}x "
        f"(steady state {ours.steady_lines_per_second / bare.lines_per_second:.2f}x)"
    )
