"""The read-only views of the API: ``/positions``, ``/dlq`` and ``/stats``."""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from logcap.dispatch.checkpoint import CheckpointStore
from logcap.dlq.reader import scan
from logcap.dlq.record import Problem
from logcap.dlq.segments import dlq_directory, segment_paths
from logcap.metrics import Counter
from logcap.metrics.catalog import ROLES, counter_values
from logcap.plan import DISPATCHER

if TYPE_CHECKING:
    from logcap.supervisor import Supervisor

log = logging.getLogger(__name__)


# -- /positions, /dlq ------------------------------------------------------------------
def positions(sup: Supervisor) -> dict[str, Any]:
    """The checkpointed positions per source (every configured source, maybe none)."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in sup.config.sources}
    for p in CheckpointStore(sup.config.data_dir).load().files:
        entry = {"path": p.path, "dev": p.dev, "ino": p.ino, "offset": p.offset}
        found.setdefault(p.source, []).append(entry)
    return {"sources": found}


def dlq_summary(sup: Supervisor) -> dict[str, Any]:
    """The DLQ counted per sink and reason, as ``logcap dlq ls`` reads it: read-only, a
    record being appended meanwhile is not seen (or is reported torn)."""
    directory = dlq_directory(sup.config.data_dir)
    segments = sizes = 0
    for segment in segment_paths(directory):
        try:
            sizes += segment.stat().st_size
        except FileNotFoundError:  # deleted meanwhile (max_age, drop_oldest, purge)
            continue
        segments += 1
    problems: list[Problem] = []
    sinks: dict[str, dict[str, Any]] = {}
    reasons: Tally[str] = Tally()
    for stored in scan(directory, problems):
        record = stored.record
        sink = sinks.setdefault(
            record.sink, {"records": 0, "entries": 0, "pending": 0, "reasons": Tally()}
        )
        sink["records"] += 1
        sink["entries"] += record.entries
        sink["pending"] += not stored.replayed
        sink["reasons"][record.kind] += 1
        reasons[record.kind] += 1
    return {
        "segments": segments,
        "bytes": sizes,
        "records": sum(s["records"] for s in sinks.values()),
        "entries": sum(s["entries"] for s in sinks.values()),
        "pending": sum(s["pending"] for s in sinks.values()),
        "reasons": dict(reasons),
        "sinks": {name: {**s, "reasons": dict(s["reasons"])} for name, s in sinks.items()},
        "problems": [f"{p.path} at byte {p.offset}: {p.what}" for p in problems],
    }


# -- /stats ----------------------------------------------------------------------------
def _components(sup: Supervisor) -> dict[str, Any]:
    """Each component's process and the counters /metrics exports for it (named as there,
    without ``logcap_`` and ``_total``)."""
    now = time.monotonic()
    out: dict[str, Any] = {}
    for child in sup.children:
        role = ROLES[child.role]
        values = sup.table.read(child.block)
        counters: dict[str, float] = {
            name.removeprefix("logcap_"): value for name, value in counter_values(sup, child)
        }
        if role == "source" and child.kind != "http":
            counters["source_files_watched"] = values[Counter.FILES_WATCHED]
        out[child.name] = {
            "role": role,
            "kind": child.kind,
            "running": child.running,
            "restarts": child.restarts,
            "crash_loop": child.crash_loop(now),
            "counters": counters,
        }
    for sink, state in sup.circuits().items():
        out[sink]["circuit"] = state
    return out


def _rings(sup: Supervisor) -> dict[str, Any]:
    return {
        name: {"used": ring.occupancy(), "capacity": ring.slot_count}
        for name, ring in sup.rings.items()
    }


def _checkpoint(sup: Supervisor) -> dict[str, Any]:
    dispatcher = sup.table.read(sup.plan.counter_index(DISPATCHER))
    return {
        "lag_bytes": dispatcher[Counter.CHECKPOINT_LAG_BYTES],
        "lag_seconds": dispatcher[Counter.CHECKPOINT_LAG_MS] / 1000,
    }


#: the members of /stats, each read at request time; a new one (the events ledger) is
#: one more entry here
def _ledger(sup: Supervisor) -> dict[str, dict[str, int]]:
    """Per sink, where its published entries are (metrics/ledger.py)."""
    from logcap.metrics.ledger import read_ledgers

    return {
        ledger.sink: {
            "published": ledger.published,
            "delivered": ledger.delivered,
            "dead_lettered": ledger.dead_lettered,
            "in_ring": ledger.in_ring,
            "held_by_retry": ledger.held_by_retry,
            "unaccounted": ledger.unaccounted,
        }
        for ledger in read_ledgers(sup)
    }


def _reload(sup: Supervisor) -> dict[str, Any]:
    """Reloads: how many applied and failed, the last one's summary, the last error."""
    stats = sup.reloads
    return {
        "generation": sup.plan.generation,
        "applied": stats.applied,
        "failures": stats.failures,
        "last_summary": stats.last_summary,
        "last_seconds": round(stats.last_seconds, 3),
        "last_applied_at": stats.last_at or None,
        "last_error": stats.last_error,
        "last_failure_at": stats.last_failure_at or None,
    }


STATS: dict[str, Callable[[Supervisor], Any]] = {
    "components": _components,
    "rings": _rings,
    "checkpoint": _checkpoint,
    "ledger": _ledger,
    "reload": _reload,
}
