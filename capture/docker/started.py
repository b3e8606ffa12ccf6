"""When this collector process started, on the wall clock Docker stamps lines with.

A source's first run reads the containers already running from their first line, or
from ``read_from: end``'s "now", and skips containers that had stopped before it. "Now"
and "before" must mean before the agent started, not before the collector first
reached the daemon: ``/ready`` answers once every child process runs, and a container
that runs and exits in the second or so a collector takes to load the Docker client and
connect ran while the agent was up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def process_started_ns() -> int:
    """Wall-clock ns at which this process started (Linux ``/proc``; now elsewhere).

    The kernel counts a process's start in clock ticks since boot (``CLOCK_BOOTTIME``),
    so the result is early by less than a tick (10 ms): a first run then reads a
    little more, never less.
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
        per_second = os.sysconf("SC_CLK_TCK")
        since_boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time_ns()
    return time.time_ns() - since_boot + ticks * 1_000_000_000 // per_second
