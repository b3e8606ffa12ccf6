"""What the soak samples of the agent every few seconds, and how it sums the samples up.

Per sample, over the agent's whole process tree (bench/harness.py's ``_descendants``):
summed RSS, open file descriptors, processes, and CPU seconds so far (each process's
utime+stime, kept for processes that have exited, such as a dispatcher a reload
replaced). A trend is a least-squares slope; a latency quantile is taken from observed
values (nearest rank) or, from the agent's own histogram on /metrics, by interpolating
within its bucket as Prometheus's ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import _cpu_rss, _descendants


@dataclass(frozen=True)
class Sample:
    """The process tree at ``at`` seconds into the soak."""

    at: float
    rss: int
    fds: int
    processes: int
    cpu_seconds: float  # so far, every process that ran included
    by_process: dict[str, tuple[int, int]]  # role:name -> (RSS, fds): where a trend is


def role(pid: int, root: int) -> str:
    """A process of the tree by its role (a worker's last two arguments: role and name)."""
    if pid == root:
        return "supervisor"
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return str(pid)
    return b":".join(args[-2:]).decode(errors="replace")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0  # exited meanwhile


class TreeSampler:
    """Samples the tree of ``pid`` every ``interval`` seconds from a thread."""

    def __init__(self, pid: int, interval: float = 5.0) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._cpu: dict[int, float] = {}
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> Sample:
        by_process = {}
        for pid in _descendants(self.pid):
            cpu, resident = _cpu_rss(pid)
            if not resident:
                continue
            self._cpu[pid] = max(cpu, self._cpu.get(pid, 0.0))
            by_process[role(pid, self.pid)] = (resident, open_fds(pid))
        sample = Sample(
            time.monotonic() - self._started,
            sum(rss for rss, _ in by_process.values()),
            sum(fds for _, fds in by_process.values()),
            len(by_process),
            sum(self._cpu.values()),
            by_process,
        )
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (NaN with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values`` (NaN when there are none)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def histogram_quantile(metrics: str, name: str, component: str, q: float) -> float:
    """The ``q`` quantile of histogram ``name`` of ``component`` in a /metrics text,
    interpolated linearly within its bucket (the top finite bound if it falls in +Inf;
    NaN with no observation)."""
    buckets: list[tuple[float, float]] = []
    for line in metrics.splitlines():
        if not line.startswith(name + "_bucket{") or f'component="{component}"' not in line:
            continue
        labels, value = line.rsplit(" ", 1)
        bound = labels.split('le="', 1)[1].split('"', 1)[0]
        buckets.append((math.inf if bound == "+Inf" else float(bound), float(value)))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            inside = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / inside)
        lower_bound, lower_count = bound, count
    return lower_bound
