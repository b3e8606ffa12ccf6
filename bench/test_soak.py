"""Soak: the agent run as a service for ``LOGCAP_SOAK_SECONDS`` (default 60, what CI runs;
3600 on demand) under steady load, through rotations, a sink outage and a reload.

    logs/app.log (rotated) ─▶ collector app ────────┐             ┌▶ file sink archive ─▶ out/
    POST /api/v1/logs ──────▶ collector ingest ─────┼▶ dispatcher ─┤  (outage: retry spool)
    busybox container ──────▶ collector containers ─┘  (reloaded)  └▶ kafka sink bus ─▶ Tansu

Load: 200 numbered lines a second appended to ``app.log``, 50 numbered entries a second
POSTed (10 a request; sent again until answered 200), about 50 numbered lines a second
from a container. Meanwhile:

- rotations every ``min(60 s, soak/4)`` (a 60 s soak rotates 3 times): ``app.log.<k>``
  shifted to ``.<k+1>``, ``app.log`` renamed to ``app.log.1`` and a new one created, as
  logrotate's ``create`` does;
- a file sink outage at soak/3 for ``min(soak/6, 120 s)``: its path runs through the
  symlink ``out/link`` (to ``out/real``), which is replaced, atomically (rename), by a
  plain file, so every write fails with ENOTDIR — an outage that stops root, as
  ``chmod 0`` does not — until the symlink is put back. The file sink is the outage's
  victim because it is the sink checked line by line: what the outage sends to the retry
  spool must all come back. (Stopping Tansu would lose what it held: its storage is in
  memory);
- a reload at 2·soak/3: the config rewritten with another ``dispatcher.batch_timeout``
  and SIGHUP; applied means ``logcap_config_reloads_total`` rose to 1 (and no failure).
  It changes batching only, so the same set of processes runs before and after and the
  RSS and fd trends compare like with like (a sink added would add a process's RSS).

Every 5 s: summed RSS and open fds of the agent's process tree, its CPU, and the
delivery latency (a line's write time, carried in it, to the moment the soak sees it in
the file sink's output, polled every 0.25 s). Reported: least-squares slopes of RSS
(bytes/min) and fds (/min) over the load from its first 5 s on (at its very start the
children are still settling after /ready), RSS and fds per process at the first and last
sample, the CPU share of one core, p50/p99/max latency (all lines, and those written
outside the outage and the 10 s after it), p99 of the agent's own
``logcap_delivery_latency_seconds`` per sink (interpolated within its bucket, as
Prometheus's ``histogram_quantile``), and the ledger (``/stats``) once the input is in.
Checked before anything is reported (never a timing): every line written (file, HTTP
answered 200, the container's log as the daemon holds it) arrived in the file sink and
in Kafka, duplicates counted; the outage did fail the file sink's batches (they went to
the retry process); ``logcap_events_unaccounted`` is 0 for every sink; the reload was
applied; the agent drains and exits 0. An hour's soak: 59 rotations, a 2 min
outage at 20 min, the reload at 40 min, about 1.1 million lines (some 500 MB of output
under the test's tmp_path, and as much in Tansu's memory).

Two soaks compare: save each (``--benchmark-autosave``, under ``.benchmarks/``; the
figures are the JSON's ``extra_info``); ``--benchmark-compare`` then sets a soak's wall
time against the latest saved one, and bench/soak_compare.py its figures::

    export LOGCAP_SOAK_SECONDS=3600
    .venv/bin/python -m pytest bench/test_soak.py -p no:cacheprovider -s --benchmark-autosave
    .venv/bin/python -m pytest bench/test_soak.py -p no:cacheprovider -s --benchmark-autosave \
        --benchmark-compare
    .venv/bin/python -m bench.soak_compare .benchmarks/*/0001_*.json .benchmarks/*/0002_*.json
"""

from __future__ import annotations

import collections
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from bench.conftest import record
from bench.harness import ProgressLine, RunResult
from bench.soak_agent import Agent, Output, free_port
from bench.soak_load import DOCKER_SCRIPT, HttpLoad, OutputTail, RotatedFile, check, parse
from bench.soak_report import by_process, latency, series, summary_text
from bench.soak_sampler import TreeSampler, histogram_quantile, slope
from tests._docker_helpers import create_file, docker_log, wait_until_exited
from tests._kafka_helpers import consume_all

SOAK = float(os.environ.get("LOGCAP_SOAK_SECONDS", "60"))
SAMPLE_EVERY = 5.0
ROTATE_EVERY = min(60.0, SOAK / 4)
OUTAGE_AT, OUTAGE = SOAK / 3, min(SOAK / 6, 120.0)
RELOAD_AT = 2 * SOAK / 3
TICK, LINES_PER_TICK = 0.1, 20  # the file: 200 lines a second
DRAIN_TIMEOUT = 180.0  # after the load: until every line is in the file sink
BATCH_TIMEOUT, RELOADED_BATCH_TIMEOUT = "100ms", "150ms"


def _config(work: Path, api: str, ingest: str, docker: str, kafka: str, output: Output,
            batch_timeout: str) -> str:  # fmt: skip
    return f"""
data_dir: {work / "data"}
api: {{address: "{api}"}}
sources:
  app: {{type: file, include: ["{work / "logs"}/*.log"]}}
  ingest: {{type: http, address: "{ingest}"}}
  containers: {{type: docker, docker_host: "{docker}"}}
sinks:
  archive: {{type: file, path: "{output.sink_path}",
            circuit_breaker: {{failure_threshold: 3, open_duration: 2s}}}}
  bus: {{type: kafka, bootstrap_servers: "{kafka}", topic: "soak-{{source}}"}}
dispatcher: {{batch_timeout: {batch_timeout}}}
retry: {{initial_backoff: 500ms, max_backoff: 5s, max_attempts: 100000}}
supervisor: {{shutdown_timeout: 60s}}
"""


class Soak:
    """One soak: the load with its events (:meth:`load`), then the wait until every line
    is in (:meth:`drain`); ``events`` says when each thing happened (seconds into it)."""

    def __init__(self, agent: Agent, config: Path, text: str, output: Output, work: Path,
                 daemon: Any, ingest: str) -> None:  # fmt: skip
        self.agent, self.config, self.text, self.output = agent, config, text, output
        self.daemon = daemon
        self.file = RotatedFile(work / "logs")
        self.http = HttpLoad(f"http://{ingest}/api/v1/logs")
        self.tail = OutputTail(output.file)
        self.sampler = TreeSampler(agent.process.pid, SAMPLE_EVERY)
        self.events: dict[str, float] = {}
        self.outage_wall: tuple[float, float] = (math.inf, math.inf)
        self.reload: dict[str, Any] = {}
        self.expected: dict[str, set[int]] = {}
        self.ledger: dict[str, Any] = {}
        self.metrics = ""
        self.wall_started = 0.0

    def run(self) -> None:
        """What the benchmark times: the load, then the drain."""
        with self.tail:
            self.load()
            self.drain()

    def load(self) -> None:
        container = self.daemon.run("soak", DOCKER_SCRIPT)
        self.http.start()
        failed = healed = reloading = False
        progress = ProgressLine(f"soak {SOAK:.0f}s: file, http, docker -> file, kafka")
        with self.sampler:
            started, self.wall_started = time.monotonic(), time.time()
            rotate_at, due, check_at = ROTATE_EVERY, started, 0.0
            self.sampler.sample()
            while (now := time.monotonic() - started) < SOAK:
                self.file.write(LINES_PER_TICK)
                if now >= rotate_at:
                    self.file.rotate()
                    rotate_at += ROTATE_EVERY
                if not failed and now >= OUTAGE_AT:
                    self.output.fail()
                    failed, self.events["outage_start"] = True, now
                    self.outage_wall = (time.time(), math.inf)
                if failed and not healed and now >= OUTAGE_AT + OUTAGE:
                    self.output.heal()
                    healed, self.events["outage_end"] = True, now
                    self.outage_wall = (self.outage_wall[0], time.time())
                if not self.reload and now >= RELOAD_AT:
                    self.send_reload()
                    reloading, self.events["reload_sent"] = True, now
                if reloading and now >= check_at:
                    reloading, check_at = not self.reload_done(now), now + 1
                progress.show()
                due += TICK
                time.sleep(max(0.0, due - time.monotonic()))
            self.sampler.sample()
        progress.close()
        self.events["load_end"] = time.monotonic() - started
        self.http.stop()
        create_file(container, "/stop")
        wait_until_exited(self.daemon, ["soak"], 60)
        self.file.close()
        deadline = time.monotonic() + 60
        while reloading and time.monotonic() < deadline:
            reloading = not self.reload_done(time.monotonic() - started)
            time.sleep(0.5)
        docker = [parse(line) for stream, line in docker_log(container) if stream == "stdout"]
        self.expected = {
            "file": set(range(self.file.written)),
            "http": set(range(self.http.acked)),
            "docker": {found[1] for found in docker if found is not None},
        }

    def send_reload(self) -> None:
        self.reload = {"children_before": self.agent.children()}
        new = self.config.with_suffix(".new")
        new.write_text(self.text.replace(BATCH_TIMEOUT, RELOADED_BATCH_TIMEOUT))
        os.replace(new, self.config)
        os.kill(self.agent.process.pid, signal.SIGHUP)
        self.reload["sent"] = time.monotonic()

    def reload_done(self, now: float) -> bool:
        """Whether the reload was applied or refused (then its outcome is kept)."""
        stats = self.agent.stats()["reload"]
        if stats["applied"] + stats["failures"] == 0:
            return False
        self.events["reload_done"] = now
        self.reload.update(
            stats=stats,
            seen_after_seconds=time.monotonic() - self.reload["sent"],
            children_after=self.agent.children(),
        )
        return True

    def drain(self) -> None:
        ended = time.monotonic()
        progress = ProgressLine("soak: every line into the file sink", self.total())
        deadline = ended + DRAIN_TIMEOUT
        while not self.tail.has_all(self.expected) and time.monotonic() < deadline:
            progress.show(self.tail.count)
            time.sleep(0.5)
        progress.close(self.tail.count)
        self.events["drained_after_load"] = time.monotonic() - ended
        deadline = time.monotonic() + 60
        while True:  # the ledger once nothing is in flight any more (bounded)
            self.ledger = self.agent.stats()["ledger"]
            idle = all(s["in_ring"] + s["held_by_retry"] == 0 for s in self.ledger.values())
            if idle or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.metrics = self.agent.get("/metrics").decode()

    def total(self) -> int:
        return sum(len(numbers) for numbers in self.expected.values())


def _kafka(bootstrap: str, expected: dict[str, set[int]]) -> dict[str, dict[str, Any]]:
    """What Tansu holds, checked as the file sink's output is."""
    total = sum(len(numbers) for numbers in expected.values())
    topics = ["soak-app", "soak-ingest", "soak-containers"]
    seen: dict[str, Any] = {kind: {} for kind in expected}
    for message in consume_all(bootstrap, topics, total, timeout=300, idle=30):
        found = parse(json.loads(message.value())["message"])
        if found is not None:
            numbers = seen.setdefault(found[0], {})
            numbers[found[1]] = numbers.get(found[1], 0) + 1
    return check(expected, {kind: collections.Counter(numbers) for kind, numbers in seen.items()})


def test_soak(benchmark, docker_daemon, tansu, tmp_path: Path) -> None:
    api, ingest = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    output = Output(tmp_path / "out")
    text = _config(tmp_path, api, ingest, docker_daemon.host, tansu.bootstrap, output,
                   BATCH_TIMEOUT)  # fmt: skip
    config = tmp_path / "logcap.yaml"
    config.write_text(text)
    (tmp_path / "logs").mkdir()
    agent = Agent(config, api, tmp_path / "agent.log")
    try:
        agent.wait_ready()
        soak = Soak(agent, config, text, output, tmp_path, docker_daemon, ingest)
        began = time.monotonic()
        benchmark.pedantic(soak.run, rounds=1, iterations=1)
        wall = time.monotonic() - began
    finally:
        code = agent.stop()
    in_file = check(soak.expected, soak.tail.seen)
    in_kafka = _kafka(tansu.bootstrap, soak.expected)
    figures = _figures(soak, wall, in_file, in_kafka)
    print(summary_text(figures))  # before the checks: a failed soak's figures tell why
    assert code == 0, f"the agent exited {code}: {agent.tail()}"
    assert soak.http.error is None, soak.http.error
    for where, result in (("file sink", in_file), ("kafka", in_kafka)):
        lost = {kind: r for kind, r in result.items() if r["missing"]}
        assert not lost, f"lines missing from the {where}: {lost}\n{agent.tail()}"
    assert figures["reloads_total"] == 1 and figures["reload_failures_total"] == 0, (
        figures["reload"],
        agent.tail(),
    )
    assert figures["outage"]["sink_retry_handoffs"] > 0, "the file sink never failed"
    assert all(s["unaccounted"] == 0 for s in soak.ledger.values()), soak.ledger
    assert figures["events_unaccounted"] == 0, soak.ledger
    benchmark.extra_info.update(figures)
    samples = soak.sampler.samples
    summary = {k: v for k, v in figures.items() if k not in ("samples", "file_sink", "kafka")}
    record(
        RunResult(
            f"soak {SOAK:.0f}s (3 sources -> file+kafka)",
            soak.total(),
            0,
            SOAK,
            samples[-1].cpu_seconds - samples[0].cpu_seconds,
            max(s.rss for s in samples),
            {},
            notes=summary,
        )
    )


def _figures(soak: Soak, wall: float, in_file: Any, in_kafka: Any) -> dict[str, Any]:
    """Everything the soak reports (extra_info)."""
    # the trends start at the first sample of the load (5 s in): the one taken as the
    # load starts still sees children settling after /ready (their imports, connections)
    samples = soak.sampler.samples[1:]
    minutes = [s.at / 60 for s in samples]
    figures: dict[str, Any] = {
        "soak_seconds": SOAK,
        "wall_seconds": round(wall, 1),
        "events_seconds": {k: round(v, 2) for k, v in soak.events.items()},
        "rotations": soak.file.rotations,
        "outage_seconds": OUTAGE,
        "lines": {kind: len(numbers) for kind, numbers in soak.expected.items()},
        "file_sink": in_file,
        "kafka": in_kafka,
        "duplicates_file_sink": sum(v["duplicates"] for v in in_file.values()),
        "duplicates_kafka": sum(v["duplicates"] for v in in_kafka.values()),
        "http_answers": {str(k): v for k, v in soak.http.answers.items()},  # 0: none
        "http_unanswered": soak.http.unanswered,
        "outage": {  # the file sink's side of it: what failed, and what came back by retry
            name: soak.agent.metric(f"logcap_{name}_total", soak.metrics, "archive")
            for name in ("component_errors", "sink_retry_handoffs", "retry_delivered")
        },
        "rss_slope_bytes_per_minute": slope(minutes, [s.rss for s in samples]),
        "fds_slope_per_minute": slope(minutes, [s.fds for s in samples]),
        "rss_mib_first_last_peak": [
            round(samples[0].rss / 2**20, 2),
            round(samples[-1].rss / 2**20, 2),
            round(max(s.rss for s in samples) / 2**20, 2),
        ],
        "fds_first_last": [samples[0].fds, samples[-1].fds],
        "by_process_first_last": by_process(samples[0], samples[-1]),
        "cpu_share_of_one_core": (samples[-1].cpu_seconds - soak.sampler.samples[0].cpu_seconds)
        / samples[-1].at,
        "latency_seconds": latency(soak.tail.latencies, soak.outage_wall),
        "histogram_p99_seconds": {
            sink: histogram_quantile(soak.metrics, "logcap_delivery_latency_seconds", sink, 0.99)
            for sink in ("archive", "bus")
        },
        "ledger": soak.ledger,
        "events_unaccounted": soak.agent.metric("logcap_events_unaccounted", soak.metrics),
        "reloads_total": soak.agent.metric("logcap_config_reloads_total", soak.metrics),
        "reload_failures_total": soak.agent.metric(
            "logcap_config_reload_failures_total", soak.metrics
        ),
        "reload": {
            **soak.reload.get("stats", {}),
            "seen_after_seconds": round(soak.reload.get("seen_after_seconds", math.nan), 2),
            "restarted": sorted(
                name
                for name, pid in soak.reload.get("children_before", {}).items()
                if soak.reload.get("children_after", {}).get(name) != pid
            ),
        },
        "samples": series(soak.sampler.samples, soak.tail.latencies, soak.wall_started),
    }
    return figures
