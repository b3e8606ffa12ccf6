"""Kafka (Tansu) → file: the kafka source through ``logcap run`` against a bare
confluent-kafka consumer loop writing the same values to a file, in the same run.

    bare:    Tansu ─▶ confluent-kafka consume() loop ─▶ file (the values as they are)
    logcap:  Tansu ─▶ kafka collector ─▶ dispatcher (encode once) ─▶ file sink

The topic (4 partitions) is filled once with LOGCAP_BENCH_LINES logcap entries; each
round reads all of it as a new consumer group, timed from launching the process to the
last entry written; rounds alternate between the two (at least 3 each), and the median
and spread of each are reported with their ratio.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.conftest import LINES, record
from bench.harness import NETWORK_DISPATCHER, RunResult, TreeMonitor, count_lines, run_logcap
from logcap.dispatch.encode import entry_prefix
from tests._kafka_helpers import Tansu

API = "127.0.0.1:19613"
ROUNDS = 3
TOPIC = "logs-bench"
VALUE_BYTES = 200


def _fill(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    for future in admin.create_topics([NewTopic(TOPIC, 4, 1)]).values():
        future.result(timeout=30)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"}
    )
    prefix = entry_prefix("app", {"host": socket.gethostname(), "path": "/var/log/app.log"}, 0)
    pad = "x" * max(0, VALUE_BYTES - len(prefix) - 20)
    for n in range(LINES):
        value = prefix + f'"line {n:09d} {pad}"}}'.encode()
        while True:
            try:
                producer.produce(TOPIC, value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(300) == 0


def _bare(bootstrap: str, work: Path, group: str) -> RunResult:
    output = work / "bare.ndjson"
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.kafka_bare_consumer"),
            *(bootstrap, TOPIC, group, str(output), str(LINES)),
        ]
    )
    first: float | None = None  # launch -> first value written, as run_logcap times it
    with TreeMonitor(process.pid) as monitor:
        deadline = started + 600
        while process.poll() is None and time.perf_counter() < deadline:
            if first is None and output.exists() and output.stat().st_size:
                first = time.perf_counter()
            time.sleep(0.005)
        assert process.wait(timeout=10) == 0
    seconds = time.perf_counter() - started
    assert count_lines(output) == LINES
    return RunResult(
        "bare consumer->file",
        LINES,
        os.path.getsize(output),
        seconds,
        monitor.cpu_seconds,
        monitor.peak_rss,
        monitor.cpu_by_process(),
        (first or started) - started,
    )


def _logcap(bootstrap: str, work: Path, group: str) -> RunResult:
    out = work / "out.ndjson"
    config = work / "logcap.yaml"
    config.write_text(f"""
data_dir: {work / "data"}
api: {{address: "{API}"}}
sources:
  k: {{type: kafka, bootstrap_servers: "{bootstrap}", topics: [{TOPIC}], group_id: {group},
      decoding: logcap, labels_from: [], max_poll_records: 5000, session_timeout: 6s}}
sinks:
  out: {{type: file, path: "{out}"}}
{NETWORK_DISPATCHER}
""")
    result = run_logcap("logcap kafka->file", config, API, "out", LINES, 0, timeout=600)
    assert count_lines(out) >= LINES
    result.input_bytes = os.path.getsize(out)
    return result


def _spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):,.0f}, min {min(values):,.0f}, max {max(values):,.0f}"
    )


def test_kafka_to_file_against_a_bare_consumer_loop(benchmark, tmp_path: Path) -> None:
    tansu = Tansu(tmp_path / "tansu.log")
    try:
        _fill(tansu.bootstrap)
        bare: list[RunResult] = []
        ours: list[RunResult] = []

        def rounds() -> None:
            for number in range(ROUNDS):
                for kind, run, into in (("bare", _bare, bare), ("logcap", _logcap, ours)):
                    work = tmp_path / f"{kind}-{number}"
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir()
                    into.append(run(tansu.bootstrap, work, f"bench-{kind}-{number}"))
                    shutil.rmtree(work, ignore_errors=True)

        benchmark.pedantic(rounds, rounds=1, iterations=1)
    finally:
        tansu.stop()
    bare_rates = [r.lines_per_second for r in bare]
    our_rates = [r.lines_per_second for r in ours]
    ratio = statistics.median(our_rates) / statistics.median(bare_rates)
    steady = statistics.median(r.steady_lines_per_second for r in ours) / statistics.median(
        r.steady_lines_per_second for r in bare
    )
    median = sorted(ours, key=lambda r: r.lines_per_second)[len(ours) // 2]
    median.notes.update(
        ratio_to_bare=round(ratio, 3),
        steady_ratio_to_bare=round(steady, 3),
        rounds=ROUNDS,
        lines_per_second=our_rates,
        bare_lines_per_second=bare_rates,
    )
    record(median)
    record(sorted(bare, key=lambda r: r.lines_per_second)[len(bare) // 2])
    benchmark.extra_info.update(
        lines=LINES,
        logcap_lines_per_second=our_rates,
        bare_lines_per_second=bare_rates,
        ratio=ratio,
        steady_ratio=steady,
        logcap_startup_seconds=[r.startup_seconds for r in ours],
        bare_startup_seconds=[r.startup_seconds for r in bare],
    )
    print(
        f"\nkafka->file, {LINES:,} entries, {ROUNDS} rounds each: logcap {_spread(our_rates)} "
        f"lines/s; bare consumer loop {_spread(bare_rates)} lines/s; ratio {ratio:.2f}x "
        f"(steady state {steady:.2f}x; start "
        f"{statistics.median(r.startup_seconds for r in ours):.1f}s against "
        f"{statistics.median(r.startup_seconds for r in bare):.1f}s)"
    )
