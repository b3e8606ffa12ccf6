"""Prometheus export: turns the shared counters, ring cursors and child table into metrics.

Registered as a custom collector, so /metrics reads shared memory at scrape time and
nothing is copied between processes in between.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from logcap import __version__
from logcap.capture.pipeline.engine import DROPPED
from logcap.errors import REASON_CODES
from logcap.metrics._counters import Counter
from logcap.metrics.catalog import COMPONENT_COUNTERS, LINE_SOURCES, ROLES, counter_values
from logcap.metrics.histogram import histogram_families
from logcap.metrics.ledger import ledger_families
from logcap.plan import DISPATCHER, RETRY

if TYPE_CHECKING:
    from logcap.supervisor import Supervisor

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

_DLQ_KINDS = [
    ("permanent", Counter.DLQ_PERMANENT),
    ("exhausted", Counter.DLQ_EXHAUSTED),
    ("overflow", Counter.DLQ_OVERFLOW),
]


def _proc_stats(pid: int) -> tuple[float, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/statm", "rb") as f:
            resident = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, resident * _PAGE


def _failable_sinks(sup: Supervisor) -> list[str]:
    """Sinks whose deliveries can fail: a blackhole's never do, so it has no retry,
    circuit, DLQ or error series."""
    running = sup.plan.sinks  # a sink a reload removed is gone, even while it finishes
    return [
        c.name
        for c in sup.children
        if c.role == "sink" and c.kind != "blackhole" and c.name in running
    ]


def _retry_families(sup: Supervisor) -> Iterator[Metric]:
    retries = CounterMetricFamily(
        "logcap_retries", "Retries scheduled, by sink and reason.", labels=["component", "reason"]
    )
    records = CounterMetricFamily(
        "logcap_dlq_records",
        "Batches written to the dead letter queue, by sink and why.",
        labels=["component", "reason"],
    )
    circuit = GaugeMetricFamily(
        "logcap_sink_circuit_state",
        "A sink's circuit breaker: 0 closed, 1 open (nothing is sent), 2 half-open.",
        labels=["component"],
    )
    openings = CounterMetricFamily(
        "logcap_sink_circuit_openings", "Times a sink's circuit opened.", labels=["component"]
    )
    reprocessed = CounterMetricFamily(
        "logcap_dlq_reprocessed",
        "Dead-lettered batches moved back to the retry spool by dlq.reprocess (per sink).",
        labels=["component"],
    )
    for sink in _failable_sinks(sup):
        values = sup.table.read_all(sup.plan.counter_index(sink))
        reprocessed.add_metric([sink], values[Counter.DLQ_REPROCESSED])
        for code, name in enumerate(REASON_CODES):
            retries.add_metric([sink, name], values[Counter.RETRIES_BY_CODE + code])
        for kind, counter in _DLQ_KINDS:
            records.add_metric([sink, kind], values[counter])
        circuit.add_metric([sink], values[Counter.CIRCUIT_STATE])
        openings.add_metric([sink], values[Counter.CIRCUIT_OPENINGS])
    yield circuit
    yield openings
    yield reprocessed
    retry = sup.table.read_all(sup.plan.counter_index(RETRY))
    dispatcher = sup.table.read_all(sup.plan.counter_index(DISPATCHER))
    config = sup.plan.config
    gauges = [
        (
            "logcap_retry_heap_capacity_entries",
            "Entries the retry heap holds at most (retry.max_entries).",
            config.retry.max_entries,
        ),
        (
            "logcap_retry_heap_capacity_bytes",
            "Bytes the retry heap holds at most (retry.max_bytes); beyond, the spool.",
            int(config.retry.max_bytes),
        ),
        (
            "logcap_retry_spool_capacity_bytes",
            "Bytes the retry spool holds at most (retry.spool_max_bytes); beyond, the DLQ.",
            int(config.retry.spool_max_bytes),
        ),
        (
            "logcap_dlq_capacity_bytes",
            "Bytes the dead letter queue holds at most (dlq.max_bytes).",
            int(config.dlq.max_bytes),
        ),
        (
            "logcap_retry_heap_entries",
            "Entries waiting in the retry heap.",
            retry[Counter.RETRY_HEAP_ENTRIES],
        ),
        (
            "logcap_retry_heap_bytes",
            "Bytes waiting in the retry heap.",
            retry[Counter.RETRY_HEAP_BYTES],
        ),
        (
            "logcap_retry_spool_bytes",
            "Bytes of the retry spool's segments on disk.",
            retry[Counter.SPOOL_BYTES],
        ),
        (
            "logcap_retry_spool_batches",
            "Failed batches waiting in the retry spool.",
            retry[Counter.SPOOL_BATCHES],
        ),
        (
            "logcap_dlq_size_bytes",
            "Total size of the dead letter queue's segments.",
            retry[Counter.DLQ_TOTAL_BYTES],
        ),
        (
            "logcap_checkpoint_lag_bytes",
            "Bytes read but not yet checkpointed (all files).",
            dispatcher[Counter.CHECKPOINT_LAG_BYTES],
        ),
        (
            "logcap_checkpoint_lag_seconds",
            "Age of the oldest batch not yet acknowledged by every sink.",
            dispatcher[Counter.CHECKPOINT_LAG_MS] / 1000,
        ),
    ]
    yield retries
    yield records
    for name, text, value in gauges:
        family = GaugeMetricFamily(name, text)
        family.add_metric([], value)
        yield family
    for name, text, value in [
        (
            "logcap_dlq_dropped",
            "DLQ records deleted by when_full: drop_oldest.",
            retry[Counter.DLQ_DROPPED],
        ),
        ("logcap_dlq_expired", "DLQ records deleted by max_age.", retry[Counter.DLQ_EXPIRED]),
    ]:
        total = CounterMetricFamily(name, text)
        total.add_metric([], value)
        yield total


def _step_families(sup: Supervisor) -> Iterator[Metric]:
    """Per pipeline step: failures by reason, entries dropped, event times out of range
    (the counter table's step area; a series per outcome the step can have, so each
    exists from the start at 0)."""
    errors = CounterMetricFamily(
        "logcap_pipeline_errors",
        "Entries a pipeline step failed on, by reason (each went on unchanged).",
        labels=["component", "pipeline", "step", "reason"],
    )
    dropped = CounterMetricFamily(
        "logcap_pipeline_dropped",
        "Entries a pipeline step removed (drop, dedup, timestamp_limits with action: drop).",
        labels=["component", "pipeline", "step"],
    )
    out_of_range = CounterMetricFamily(
        "logcap_pipeline_timestamps_out_of_range",
        "Event times outside a pipeline's timestamp_limits, by the action taken.",
        labels=["component", "pipeline", "action"],
    )
    for source in sup.plan.sources:
        offset, series = sup.plan.step_area(source)
        values = sup.table.read_area(offset, len(series))
        for (pipeline, step, outcome), value in zip(series, values, strict=True):
            if step == "timestamp_limits":
                out_of_range.add_metric([source, pipeline, outcome], value)
                if outcome == "drop":
                    dropped.add_metric([source, pipeline, step], value)
            elif outcome == DROPPED:
                dropped.add_metric([source, pipeline, step], value)
            else:
                errors.add_metric([source, pipeline, step, outcome], value)
    yield from (errors, dropped, out_of_range)


def _open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class PipelineCollector(Collector):
    """Reads everything at scrape time from the supervisor's view of the run."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._hashed: tuple[object, str] | None = None

    @property
    def config_hash(self) -> str:
        """sha256 (first 12 hex) of the running config, computed once per config."""
        config = self.supervisor.config
        if self._hashed is None or self._hashed[0] is not config:
            effective = msgspec.json.encode(config, enc_hook=str)
            self._hashed = (config, hashlib.sha256(effective).hexdigest()[:12])
        return self._hashed[1]

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        labels = ["component", "kind", "role"]
        families = {
            name: CounterMetricFamily(name, text, labels=labels)
            for name, _, text, _ in COMPONENT_COUNTERS
        }
        watched = GaugeMetricFamily(
            "logcap_source_files_watched",
            "Files (or, for a docker source, containers) a source is reading.",
            labels=labels,
        )
        kafka_lag = GaugeMetricFamily(
            "logcap_source_kafka_lag_messages",
            "Messages of a kafka source's partitions past the group's committed offset "
            "(high watermark - committed), summed over the partitions it owns.",
            labels=labels,
        )
        up = GaugeMetricFamily(
            "logcap_child_up", "1 if the component's process runs.", labels=labels
        )
        restarts = CounterMetricFamily(
            "logcap_child_restarts", "Times the component's process was restarted.", labels=labels
        )
        crash_loop = GaugeMetricFamily(
            "logcap_child_crash_loop",
            "Consecutive crashes of the component's process not yet followed by a stable "
            "run (0 healthy; above 0 it is restarted with doubling backoff).",
            labels=labels,
        )
        now = time.monotonic()
        cpu = CounterMetricFamily(
            "logcap_process_cpu_seconds",
            "CPU time of the component's current process.",
            labels=labels,
        )
        rss = GaugeMetricFamily(
            "logcap_process_resident_memory_bytes",
            "Resident memory of the component's process.",
            labels=labels,
        )
        fds = GaugeMetricFamily(
            "logcap_process_open_fds",
            "Open file descriptors of the component's process.",
            labels=labels,
        )
        for child in sup.children:
            role = ROLES[child.role]
            key = [child.name, child.kind, role]
            values = sup.table.read(child.block)
            for name, value in counter_values(sup, child):
                families[name].add_metric(key, value)
            if role == "source" and child.kind in LINE_SOURCES:
                watched.add_metric(key, values[Counter.FILES_WATCHED])
            if role == "source" and child.kind == "kafka":
                kafka_lag.add_metric(key, values[Counter.KAFKA_LAG])
            up.add_metric(key, 1 if child.running else 0)
            restarts.add_metric(key, child.restarts)
            crash_loop.add_metric(key, child.crash_loop(now))
            pid = child.process.pid if child.process is not None and child.running else None
            stats = _proc_stats(pid) if pid is not None else None
            if stats is not None:
                cpu.add_metric(key, stats[0])
                rss.add_metric(key, stats[1])
            opened = _open_fds(pid) if pid is not None else None
            if opened is not None:
                fds.add_metric(key, opened)
        me = ["supervisor", "supervisor", "supervisor"]
        supervisor_stats = _proc_stats(os.getpid())
        if supervisor_stats is not None:
            cpu.add_metric(me, supervisor_stats[0])
            rss.add_metric(me, supervisor_stats[1])
        opened = _open_fds(os.getpid())
        if opened is not None:
            fds.add_metric(me, opened)
        yield from _retry_families(sup)
        yield from _step_families(sup)
        yield from _ring_families(sup)
        yield from ledger_families(sup)
        yield from histogram_families(sup)
        yield from self._run_families()
        # a family no component of this config has is left out, not shown empty
        yield from (family for family in families.values() if family.samples)
        yield from (watched, up, restarts, crash_loop, cpu, rss, fds)
        if kafka_lag.samples:
            yield kafka_lag

    def _run_families(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "logcap_build_info",
            "1, labelled with the running logcap's version and Python.",
            labels=["version", "python"],
        )
        build.add_metric([__version__, platform.python_version()], 1)
        info = GaugeMetricFamily(
            "logcap_config_info",
            "1, labelled with a hash of the effective config (sha256, first 12 hex).",
            labels=["hash"],
        )
        info.add_metric([self.config_hash], 1)
        loaded = GaugeMetricFamily(
            "logcap_config_load_timestamp_seconds", "When the running config took effect."
        )
        loaded.add_metric([], self.supervisor.config_loaded)
        reloads = self.supervisor.reloads
        applied = CounterMetricFamily(
            "logcap_config_reloads",
            "Config reloads applied (SIGHUP, POST /config/reload, "
            "watch_config), including those that changed nothing.",
        )
        applied.add_metric([], reloads.applied)
        failures = CounterMetricFamily(
            "logcap_config_reload_failures",
            "Config reloads refused: the file was invalid or needs a restart; the running "
            "config stayed (the last error is in /stats).",
        )
        failures.add_metric([], reloads.failures)
        took = GaugeMetricFamily(
            "logcap_config_reload_duration_seconds",
            "How long the last applied reload took, from reading the file to the last "
            "restarted process started.",
        )
        took.add_metric([], reloads.last_seconds)
        successful = GaugeMetricFamily(
            "logcap_config_last_reload_successful",
            "0 if the last reload was refused (the running config is older than the file), "
            "else 1 (also before any reload).",
        )
        successful.add_metric([], 0 if reloads.last_failed else 1)
        yield from (build, info, loaded, applied, failures, took, successful)


def _ring_families(sup: Supervisor) -> Iterator[Metric]:
    used = GaugeMetricFamily(
        "logcap_ring_used_slots",
        "Slots published and not yet released by the slowest consumer.",
        labels=["ring"],
    )
    capacity = GaugeMetricFamily(
        "logcap_ring_capacity_slots", "Slots in the ring.", labels=["ring"]
    )
    fill = GaugeMetricFamily(
        "logcap_ring_fill_ratio",
        "Used slots over capacity (1: the producer waits).",
        labels=["ring"],
    )
    for name, ring in sup.rings.items():
        occupied = ring.occupancy()
        used.add_metric([name], occupied)
        capacity.add_metric([name], ring.slot_count)
        fill.add_metric([name], occupied / ring.slot_count)
    behind = GaugeMetricFamily(
        "logcap_batch_ring_consumer_lag_slots",
        "Batches published that a sink has not released yet: the largest gates the "
        "dispatcher once the ring is full.",
        labels=["component"],
    )
    batches = sup.rings.get("batches")
    if batches is not None:
        published = batches.published
        plan = sup.plan
        for sink in plan.sinks:
            cursor = batches.consumer_cursor(plan.slots[sink])
            behind.add_metric([sink], max(0, published - cursor))
    yield from (used, capacity, fill, behind)
