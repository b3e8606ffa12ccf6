"""The soak's figures (bench/test_soak.py) from its samples and latencies."""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Any

from bench.soak_sampler import Sample, quantile


def latency(latencies: list[tuple[float, float]], outage: tuple[float, float]) -> dict[str, float]:
    """Own delivery latency ((written at, latency) pairs): p50/p99/max of every line, p99
    of the lines written outside the ``outage`` (wall-clock start and end), nor in the
    10 s after it, while the spool drains."""
    start, end = outage
    every = [lat for _, lat in latencies]
    steady = [lat for at, lat in latencies if not start - 1 <= at <= end + 10]
    return {
        "p50": quantile(every, 0.5),
        "p99": quantile(every, 0.99),
        "max": max(every, default=math.nan),
        "p99_outside_outage": quantile(steady, 0.99),
    }


def series(
    samples: list[Sample], latencies: list[tuple[float, float]], started: float
) -> list[dict[str, float]]:
    """Per sample: tree RSS (MiB), fds, processes, CPU share of one core since the last
    sample, p99 latency of the lines written since the last sample (``started``: the
    wall-clock time of the first sample)."""
    times = [sample.at for sample in samples]
    windows: list[list[float]] = [[] for _ in samples]
    for at, lat in latencies:  # one pass: an hour's soak has a million of them
        windows[min(len(samples) - 1, bisect.bisect_left(times, at - started))].append(lat)
    out = []
    for i, (before, sample) in enumerate(itertools.pairwise(samples), start=1):
        out.append(
            {
                "at": round(sample.at, 1),
                "rss_mib": round(sample.rss / 2**20, 2),
                "fds": sample.fds,
                "processes": sample.processes,
                "cpu_share": round(
                    (sample.cpu_seconds - before.cpu_seconds) / (sample.at - before.at), 4
                ),
                "latency_p99": round(quantile(windows[i], 0.99), 4),
            }
        )
    return out


def by_process(first: Sample, last: Sample) -> dict[str, list[list[float]]]:
    """Per process role: [RSS MiB, fds] at the first and the last sample."""
    names = sorted(first.by_process.keys() | last.by_process.keys())
    return {
        name: [
            [round(s.by_process.get(name, (0, 0))[0] / 2**20, 2), s.by_process.get(name, (0, 0))[1]]
            for s in (first, last)
        ]
        for name in names
    }


def summary_text(figures: dict[str, Any]) -> str:
    """The figures a person reads at the end of the soak."""
    latency = figures["latency_seconds"]
    return (
        f"\n  soak {figures['soak_seconds']:.0f}s (wall {figures['wall_seconds']}s): "
        f"lines {figures['lines']}, duplicates file sink {figures['duplicates_file_sink']}"
        f" kafka {figures['duplicates_kafka']}\n"
        f"  rss slope {figures['rss_slope_bytes_per_minute'] / 2**20:+.3f} MiB/min "
        f"(first/last/peak {figures['rss_mib_first_last_peak']} MiB), fds slope "
        f"{figures['fds_slope_per_minute']:+.2f}/min {figures['fds_first_last']}, "
        f"cpu {figures['cpu_share_of_one_core']:.1%} of a core\n"
        f"  latency p50 {latency['p50']:.3f}s p99 {latency['p99']:.3f}s max "
        f"{latency['max']:.2f}s (p99 outside the outage {latency['p99_outside_outage']:.3f}s);"
        f" agent histogram p99 {figures['histogram_p99_seconds']}\n"
        f"  outage (file sink) {figures['outage']}, http answers {figures['http_answers']}"
        f" {figures['http_unanswered']}\n"
        f"  reload {figures['reload']}\n  events {figures['events_seconds']}\n"
        f"  ledger {figures['ledger']}, unaccounted {figures['events_unaccounted']}"
    )
