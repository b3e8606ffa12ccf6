"""Histograms in the counter table: fixed buckets, one writer (the sink's process).

A histogram is ``len(bounds) + 3`` words of the counter table's histogram area::

    word i (0 <= i < B)   observations <= bounds[i] and > bounds[i-1] (not cumulative)
    word B                observations above the last bound (+Inf)
    word B + 1            the sum of the observed values, in millionths
    word B + 2            the count of observations

Each sink has :data:`SINK_HISTOGRAMS`, one after the other (``SINK_WORDS`` in all), at
its offset of the area (logcap/plan.py ``histogram_offset``). An observation may carry a
weight: a batch's latency counts once for each of its entries.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import HistogramMetricFamily, Metric

from logcap.metrics._counters import CounterBlock

if TYPE_CHECKING:
    from logcap.supervisor import Supervisor

_MICRO = 1_000_000
_SUM_LIMIT = 1 << 62  # the sum word saturates here (int64, with room)


class Histogram:
    """One histogram's words, for the process that observes."""

    def __init__(self, block: CounterBlock, base: int, bounds: tuple[float, ...]) -> None:
        self.block = block
        self.base = base
        self.bounds = bounds

    def observe(self, value: float, weight: int = 1) -> None:
        """Count ``value`` ``weight`` times. Never raises: the sum stops growing where its
        int64 word would overflow (a week-old batch of 5,000 redelivered entries adds
        3e15; a metric must not crash the process that delivers)."""
        block, base = self.block, self.base
        value = max(0.0, value)
        block.add(base + bisect.bisect_left(self.bounds, value), weight)
        total = base + len(self.bounds) + 1
        delta = int(min(value * weight * _MICRO, _SUM_LIMIT))
        if block.get_word(total) <= _SUM_LIMIT - delta:
            block.add(total, delta)
        block.add(base + len(self.bounds) + 2, weight)


# (name, help, bounds): every sink's histograms, in the order of their words
SINK_HISTOGRAMS: tuple[tuple[str, str, tuple[float, ...]], ...] = (
    (
        "logcap_delivery_latency_seconds",
        "Time from reading an entry to its sink's acknowledgement (a batch counts once "
        "per entry, timed from its oldest entry's read).",
        (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
    ),
    (
        "logcap_sink_send_duration_seconds",
        "Time a sink took to write and flush one round of batches.",
        (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    ),
    (
        "logcap_sink_batch_size_events",
        "Entries per batch a sink delivered.",
        (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000),
    ),
)
SINK_WORDS = sum(len(bounds) + 3 for _, _, bounds in SINK_HISTOGRAMS)


def sink_histograms(block: CounterBlock) -> tuple[Histogram, ...]:
    """A sink's histograms, over its ``SINK_WORDS`` words of the area (``block``)."""
    out = []
    at = 0
    for _, _, bounds in SINK_HISTOGRAMS:
        out.append(Histogram(block, at, bounds))
        at += len(bounds) + 3
    return tuple(out)


def histogram_families(sup: Supervisor) -> Iterator[Metric]:
    """Every sink's histograms from the table (buckets made cumulative here)."""
    families = [
        HistogramMetricFamily(name, text, labels=["component"]) for name, text, _ in SINK_HISTOGRAMS
    ]
    for sink in sup.plan.sinks:
        words = sup.table.read_area(sup.plan.histogram_offset(sink), SINK_WORDS)
        at = 0
        for family, (_, _, bounds) in zip(families, SINK_HISTOGRAMS, strict=True):
            counts = words[at : at + len(bounds) + 1]
            total, count = words[at + len(bounds) + 1], words[at + len(bounds) + 2]
            cumulative, buckets = 0, []
            for bound, n in zip([*map(_label, bounds), "+Inf"], counts, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            # +Inf equals the count by construction; the count word is what an observer
            # wrote last, so a scrape between its words still shows a valid histogram
            buckets[-1] = ("+Inf", max(cumulative, count))
            family.add_metric([sink], buckets, total / _MICRO)
            at += len(bounds) + 3
    yield from families


def _label(bound: float) -> str:
    return repr(float(bound))
