"""What the supervisor tells an operator at start and at stop, as log lines.

At start, :func:`start_lines`: the version, the config, the data directory and the API,
then one line per component with where it reads or writes (paths already resolved
against the config's directory). A file source logs the files it found itself, after its
first scan (capture/file/collector.py): the supervisor does not scan.

At stop, :func:`drain_line` is the one summary of the drain: entries read and delivered
per sink, what waits in the retry spool for the next start, what was dead-lettered during
this run, and whether every child exited on its own. The children's own lines say only
what each knows (the dispatcher: every batch was released by the sinks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from logcap.cli_common import DEFAULT_CONFIG
from logcap.config import Config, component_type
from logcap.metrics import Counter, CounterTable
from logcap.plan import DISPATCHER, RETRY, RunPlan

# the keys that say where a component reads or writes, in the order they are shown; a
# component type shows those of its keys that are listed here (blackhole: none); none is
# a secret (URLs cannot carry a password: the sink configs refuse user:password@)
WHERE_KEYS = (
    "include",
    "exclude",
    "address",
    "docker_host",
    "path",
    "url",
    "bootstrap_servers",
    "topic",
    "stream",
)


def _where(component: object) -> str:
    shown = []
    for key in WHERE_KEYS:
        value = getattr(component, key, None)
        if value is None or value == []:
            continue
        text = ", ".join(value) if isinstance(value, list) else str(value)
        shown.append(f"{key} {text}")
    return "; ".join(shown)


def config_origin() -> str:
    """The ``--config`` of the ``logcap run`` command running us, if that is who runs us."""
    context = click.get_current_context(silent=True)
    if context is None:
        return "<not given>"
    path = context.params.get("config_path")
    # absolute, not resolved: a reload reads the path again (a symlink may be repointed)
    return f"<embedded {DEFAULT_CONFIG}>" if path is None else str(Path(path).absolute())


def start_lines(config: Config, origin: str, version: str, segments: str) -> list[str]:
    """The start summary: a header line, then one line per source and per sink."""
    api = f"http://{config.api.address}" if config.api.enabled else "disabled"
    lines = [
        f"logcap {version} starting: config {origin}, data_dir {config.data_dir}, "
        f"API {api}, {len(config.sources)} source(s), {len(config.sinks)} sink(s), "
        f"segments {segments}*"
    ]
    for role, components in (("source", config.sources), ("sink", config.sinks)):
        for name, component in components.items():
            where = _where(component)
            line = f"{role} {name} ({component_type(component)})"
            lines.append(f"{line}: {where}" if where else line)
    return lines


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def drain_line(plan: RunPlan, table: CounterTable, seconds: float, killed: Sequence[str]) -> str:
    """The supervisor's final word on a drain, read from the counters of the run."""
    read = table.read(plan.counter_index(DISPATCHER))[Counter.EVENTS_IN]
    sinks = {s: table.read(plan.counter_index(s)) for s in plan.sinks}
    delivered = ", ".join(f"{s} {c[Counter.EVENTS_OUT]}" for s, c in sinks.items()) or "none"
    retry = table.read(plan.counter_index(RETRY))
    dead_batches = sum(
        c[Counter.DLQ_PERMANENT] + c[Counter.DLQ_EXHAUSTED] + c[Counter.DLQ_OVERFLOW]
        for c in sinks.values()
    )
    dead_entries = sum(c[Counter.DLQ_ENTRIES] for c in sinks.values())
    how = (
        f"stopped in {seconds:.1f}s, every child exited cleanly"
        if not killed
        else f"drain timed out after {seconds:.1f}s, killed {', '.join(killed)} "
        "(entries they had not delivered were not checkpointed)"
    )
    return (
        f"{how}: {_count(read, 'entry', 'entries')} read, delivered per sink: {delivered}; "
        f"retry spool: {_count(retry[Counter.SPOOL_BATCHES], 'batch', 'batches')} "
        f"({_size(retry[Counter.SPOOL_BYTES])}) kept for the next start; "
        f"dead-lettered this run: {_count(dead_batches, 'batch', 'batches')} "
        f"({_count(dead_entries, 'entry', 'entries')})"
    )
