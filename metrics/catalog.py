"""The metrics catalog: which counter families exist, for which components.

A component gets a family's series only where its config lets the value change (no
rotation counter for a file sink that never rotates, no circuit for a blackhole, no
pipeline counters for a source without pipelines), so every exported series can move;
tests/test_metrics_catalog.py drives each through ``logcap run``. /metrics
(metrics/export.py) and /stats (logcap/api.py) both read components through here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from logcap.metrics._counters import Counter

if TYPE_CHECKING:
    from logcap.supervisor import Child, Supervisor

# counters kept in milliseconds, exported in seconds
_IN_MILLISECONDS = {Counter.RATE_LIMITED_MS}
_MILLIS = 0.001
ROLES = {"collector": "source", "sink": "sink", "dispatcher": "dispatcher", "retry": "retry"}


@dataclass(frozen=True)
class Part:
    """A component as the catalog sees it: its role, type and config (None for the
    dispatcher and the retry process)."""

    role: str  # source, sink, dispatcher, retry
    kind: str
    config: Any
    timestamp_limits: bool = False  # a source with a pipeline that has timestamp_limits


Applies = Callable[[Part], bool]


def _roles(*roles: str) -> Applies:
    return lambda part: part.role in roles


def _failable(*roles: str) -> Applies:
    """Components of ``roles`` that can fail (a blackhole sink never does)."""
    return lambda part: part.role in roles and part.kind != "blackhole"


def _sources(*kinds: str, having: Callable[[Any], bool] = lambda config: True) -> Applies:
    return lambda part: part.role == "source" and part.kind in kinds and having(part.config)


def _sinks(kind: str, having: Callable[[Any], bool] = lambda config: True) -> Applies:
    return lambda part: part.role == "sink" and part.kind == kind and having(part.config)


_ALL_SOURCES = ("file", "http", "docker", "kafka")
LINE_SOURCES = ("file", "docker")


def _rotates(config: Any) -> bool:
    return config.max_file_bytes is not None or config.rotate_every is not None


def _limited(config: Any) -> bool:
    return getattr(config, "rate_limit", None) is not None  # (a kafka source has none)


# (metric name, counter, help, which components have it): a series is exported only for
# components whose config lets it change
COMPONENT_COUNTERS: list[tuple[str, Counter, str, Applies]] = [
    (
        "logcap_component_received_events",
        Counter.EVENTS_IN,
        "Entries received: read by a source (before its pipelines), taken in by the "
        "dispatcher, or given to a sink in fresh batches.",
        _roles("source", "dispatcher", "sink"),
    ),
    (
        "logcap_component_received_bytes",
        Counter.BYTES_IN,
        "Bytes received (read by a source, taken in by the dispatcher, given to a sink).",
        _roles("source", "dispatcher", "sink"),
    ),
    (
        "logcap_component_sent_events",
        Counter.EVENTS_OUT,
        "Entries sent on: by a source to the dispatcher, in published batches, or "
        "delivered by a sink.",
        _roles("source", "dispatcher", "sink"),
    ),
    (
        "logcap_component_sent_bytes",
        Counter.BYTES_OUT,
        "Bytes of published batches (dispatcher) or delivered batches (sink).",
        _roles("dispatcher", "sink"),
    ),
    (
        "logcap_component_errors",
        Counter.ERRORS,
        "Errors: failed reads, refused records, failed deliveries, failed housekeeping.",
        _failable("source", "dispatcher", "sink", "retry"),
    ),
    (
        "logcap_component_batches",
        Counter.BATCHES,
        "Batches published (dispatcher) or delivered (sink).",
        _roles("dispatcher", "sink"),
    ),
    (
        "logcap_source_lines_truncated",
        Counter.LINES_TRUNCATED,
        "Lines cut to max_line_bytes.",
        _sources(*LINE_SOURCES, having=lambda c: c.long_lines == "truncate"),
    ),
    (
        "logcap_source_lines_skipped",
        Counter.LINES_SKIPPED,
        "Lines over max_line_bytes dropped (long_lines: skip).",
        _sources(*LINE_SOURCES, having=lambda c: c.long_lines == "skip"),
    ),
    (
        "logcap_source_http_throttled",
        Counter.HTTP_THROTTLED,
        "HTTP ingest requests refused with 429 while the pipeline was backpressured.",
        _sources("http"),
    ),
    (
        "logcap_source_docker_reconnects",
        Counter.DOCKER_RECONNECTS,
        "Reconnection attempts after losing the Docker daemon.",
        _sources("docker"),
    ),
    (
        "logcap_source_lines_joined",
        Counter.LINES_JOINED,
        "Lines joined from Docker's 16 KiB partial pieces.",
        _sources("docker"),
    ),
    (
        "logcap_source_file_resets",
        Counter.FILE_RESETS,
        "Files found shorter than their read position and read again from 0.",
        _sources("file"),
    ),
    (
        "logcap_source_pipeline_errors",
        Counter.PIPELINE_ERRORS,
        "Pipeline steps that failed on an entry (it went on unchanged).",
        _sources(*_ALL_SOURCES, having=lambda c: bool(c.pipelines)),
    ),
    (
        "logcap_source_pipeline_dropped",
        Counter.PIPELINE_DROPPED,
        "Entries dropped by pipeline rules (drop, dedup, timestamp_limits).",
        _sources(*_ALL_SOURCES, having=lambda c: bool(c.pipelines)),
    ),
    (
        "logcap_source_timestamps_out_of_range",
        Counter.TIMESTAMPS_OUT_OF_RANGE,
        "Event times outside a pipeline's timestamp_limits (clamped, kept or dropped).",
        lambda part: part.timestamp_limits,
    ),
    (
        "logcap_source_rate_limited_seconds",
        Counter.RATE_LIMITED_MS,
        "Time the source held back reading, or refused requests, for its rate_limit.",
        _sources(*_ALL_SOURCES, having=_limited),
    ),
    (
        "logcap_source_rate_limit_dropped",
        Counter.RATE_LIMIT_DROPPED,
        "Entries dropped over the source's rate_limit (when_exceeded: drop).",
        _sources(
            *_ALL_SOURCES, having=lambda c: _limited(c) and c.rate_limit.when_exceeded == "drop"
        ),
    ),
    (
        "logcap_checkpoints_written",
        Counter.CHECKPOINTS,
        "Checkpoint files written.",
        _roles("dispatcher"),
    ),
    (
        "logcap_sink_file_rotations",
        Counter.ROTATIONS,
        "Output files rotated (by size or age).",
        _sinks("file", _rotates),
    ),
    (
        "logcap_sink_file_compressed",
        Counter.FILES_COMPRESSED,
        "Rotated files compressed.",
        _sinks("file", lambda c: _rotates(c) and c.compression != "none"),
    ),
    (
        "logcap_sink_file_deleted",
        Counter.FILES_DELETED,
        "Rotated files deleted beyond max_files.",
        _sinks("file", lambda c: _rotates(c) and c.max_files is not None),
    ),
    (
        "logcap_sink_loki_entries_pruned",
        Counter.LOKI_ENTRIES_PRUNED,
        "Entries sent without a label that max_label_values stopped sending.",
        _sinks("loki"),
    ),
    (
        "logcap_sink_loki_entries_skipped",
        Counter.LOKI_ENTRIES_SKIPPED,
        "Entries left out of a retry because an earlier attempt delivered them.",
        _sinks("loki"),
    ),
    (
        "logcap_sink_retry_handoffs",
        Counter.RETRY_HANDOFFS,
        "Failed batches a sink handed to the retry process.",
        _failable("sink"),
    ),
    (
        "logcap_retry_scheduled",
        Counter.RETRY_SCHEDULED,
        "Retries put on the retry process's timer (per sink), spool reloads included.",
        _failable("sink"),
    ),
    (
        "logcap_retry_delivered",
        Counter.RETRY_DELIVERED,
        "Batches delivered by a retry (per sink).",
        _failable("sink"),
    ),
    (
        "logcap_dlq_bytes",
        Counter.DLQ_BYTES,
        "Bytes written to the dead letter queue (per sink).",
        _failable("sink"),
    ),
    (
        "logcap_dlq_entries",
        Counter.DLQ_ENTRIES,
        "Entries written to the dead letter queue (per sink).",
        _failable("sink"),
    ),
]


def part_of(sup: Supervisor, role: str, name: str, kind: str) -> Part:
    """The component ``name`` as the catalog sees it."""
    config = sup.plan.config
    if role == "source":
        source = config.sources[name]
        limits = any(config.pipelines[p].timestamp_limits is not None for p in source.pipelines)
        return Part(role, kind, source, limits)
    return Part(role, kind, config.sinks[name] if role == "sink" else None)


def counter_values(sup: Supervisor, child: Child) -> list[tuple[str, float]]:
    """(family name, value) of every catalog family ``child`` has, in catalog order:
    milliseconds in seconds, a file sink's housekeeping failures among its errors."""
    role = ROLES[child.role]
    running = {"source": sup.plan.sources, "sink": sup.plan.sinks}.get(role, [child.name])
    if child.name not in running:
        return []  # removed by a reload, still finishing: its series are gone already
    part = part_of(sup, role, child.name, child.kind)
    values = sup.table.read(child.block)
    out: list[tuple[str, float]] = []
    for name, counter, _, applies in COMPONENT_COUNTERS:
        if not applies(part):
            continue
        value: float = values[counter]
        if counter is Counter.ERRORS and part.kind == "file" and role == "sink":
            value += values[Counter.HOUSEKEEPING_FAILURES]  # its housekeeper's own word
        if counter in _IN_MILLISECONDS:
            value *= _MILLIS
        out.append((name, value))
    return out
