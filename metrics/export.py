"""Prometheus export: turns the shared counters, ring cursors and child table into metrics.

Registered as a custom collector, so /metrics reads shared memory at scrape time and
nothing is copied between processes in between.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from logcap.capture.pipeline.engine import DROPPED
from logcap.errors import REASON_CODES
from logcap.metrics._counters import Counter
from logcap.plan import DISPATCHER, RETRY, step_areas

if TYPE_CHECKING:
    from logcap.supervisor import Supervisor

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

# counters kept in milliseconds, exported in seconds
_IN_MILLISECONDS = {Counter.RATE_LIMITED_MS}
_MILLIS = 0.001
# (metric name, counter, help) for the counters every component kind may have
_COMPONENT_COUNTERS = [
    ("logcap_component_received_events", Counter.EVENTS_IN, "Entries received."),
    ("logcap_component_received_bytes", Counter.BYTES_IN, "Bytes received."),
    ("logcap_component_sent_events", Counter.EVENTS_OUT, "Entries sent on."),
    ("logcap_component_sent_bytes", Counter.BYTES_OUT, "Bytes sent on."),
    ("logcap_component_errors", Counter.ERRORS, "Errors (failed reads, deliveries)."),
    ("logcap_component_batches", Counter.BATCHES, "Batches produced or delivered."),
    ("logcap_source_lines_truncated", Counter.LINES_TRUNCATED, "Lines cut to max_line_bytes."),
    (
        "logcap_source_http_throttled",
        Counter.HTTP_THROTTLED,
        "HTTP ingest requests refused with 429 while the pipeline was backpressured.",
    ),
    (
        "logcap_source_lines_skipped",
        Counter.LINES_SKIPPED,
        "Lines over max_line_bytes dropped (long_lines: skip).",
    ),
    (
        "logcap_source_docker_reconnects",
        Counter.DOCKER_RECONNECTS,
        "Reconnection attempts after losing the Docker daemon.",
    ),
    (
        "logcap_source_lines_joined",
        Counter.LINES_JOINED,
        "Lines joined from Docker's 16 KiB partial pieces.",
    ),
    (
        "logcap_source_file_resets",
        Counter.FILE_RESETS,
        "Files found shorter than their read position and read again from 0.",
    ),
    (
        "logcap_source_pipeline_errors",
        Counter.PIPELINE_ERRORS,
        "Pipeline steps that failed on an entry (it went on unchanged).",
    ),
    (
        "logcap_source_pipeline_dropped",
        Counter.PIPELINE_DROPPED,
        "Entries dropped by pipeline rules (drop, dedup, timestamp_limits).",
    ),
    (
        "logcap_source_timestamps_out_of_range",
        Counter.TIMESTAMPS_OUT_OF_RANGE,
        "Event times outside a pipeline's timestamp_limits (clamped, kept or dropped).",
    ),
    (
        "logcap_source_rate_limited_seconds",
        Counter.RATE_LIMITED_MS,
        "Time the source held back reading, or refused requests, for its rate_limit.",
    ),
    (
        "logcap_source_rate_limit_dropped",
        Counter.RATE_LIMIT_DROPPED,
        "Entries dropped over the source's rate_limit (when_exceeded: drop).",
    ),
    ("logcap_checkpoints_written", Counter.CHECKPOINTS, "Checkpoint files written."),
    ("logcap_sink_file_rotations", Counter.ROTATIONS, "Output files rotated (by size or age)."),
    (
        "logcap_sink_retry_handoffs",
        Counter.RETRY_HANDOFFS,
        "Failed batches a sink handed to the retry process.",
    ),
    ("logcap_retry_delivered", Counter.RETRY_DELIVERED, "Batches delivered by a retry (per sink)."),
    ("logcap_dlq_bytes", Counter.DLQ_BYTES, "Bytes written to the dead letter queue (per sink)."),
    (
        "logcap_dlq_entries",
        Counter.DLQ_ENTRIES,
        "Entries written to the dead letter queue (per sink).",
    ),
]
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
    for sink in sup.plan.sinks:
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
    gauges = [
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
    for source, (offset, series) in step_areas(sup.plan.config, sup.plan.sources).items():
        values = sup.table.read_steps(offset, len(series))
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


class PipelineCollector(Collector):
    """Reads everything at scrape time from the supervisor's view of the run."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        labels = ["component", "kind"]
        families = {
            name: CounterMetricFamily(name, text, labels=labels)
            for name, _, text in _COMPONENT_COUNTERS
        }
        watched = GaugeMetricFamily(
            "logcap_source_files_watched",
            "Files (or, for a docker source, containers) a source is reading.",
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
        for child in sup.children:
            key = [child.name, child.kind]
            values = sup.table.read(sup.plan.counter_index(child.name))
            for name, counter, _ in _COMPONENT_COUNTERS:
                scale = _MILLIS if counter in _IN_MILLISECONDS else 1
                families[name].add_metric(key, values[counter] * scale)
            if child.role == "collector":
                watched.add_metric(key, values[Counter.FILES_WATCHED])
            up.add_metric(key, 1 if child.running else 0)
            restarts.add_metric(key, child.restarts)
            crash_loop.add_metric(key, child.crash_loop(now))
            stats = _proc_stats(child.process.pid) if child.process is not None else None
            if stats is not None:
                cpu.add_metric(key, stats[0])
                rss.add_metric(key, stats[1])
        supervisor_stats = _proc_stats(os.getpid())
        if supervisor_stats is not None:
            cpu.add_metric(["supervisor", "supervisor"], supervisor_stats[0])
            rss.add_metric(["supervisor", "supervisor"], supervisor_stats[1])
        yield from _retry_families(sup)
        yield from _step_families(sup)
        used = GaugeMetricFamily(
            "logcap_ring_used_slots",
            "Slots published and not yet released by the slowest consumer.",
            labels=["ring"],
        )
        capacity = GaugeMetricFamily(
            "logcap_ring_capacity_slots", "Slots in the ring.", labels=["ring"]
        )
        for name, ring in sup.rings.items():
            used.add_metric([name], ring.occupancy())
            capacity.add_metric([name], ring.slot_count)
        yield from families.values()
        yield from (watched, up, restarts, crash_loop, cpu, rss, used, capacity)
