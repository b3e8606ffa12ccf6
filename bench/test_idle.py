"""An idle agent sleeps: the whole process tree's CPU while no input arrives.

    (no input) ─▶ collector ─▶ dispatcher ─▶ file sink + blackhole (+ retry process),
    /metrics not scraped

Measured over ``LOGCAP_IDLE_SECONDS`` (default 10 s) after start-up has settled; the
result check is the goal itself: under 2 % of one core for the whole tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.conftest import record
from bench.harness import RunResult, TreeMonitor

IDLE_SECONDS = float(os.environ.get("LOGCAP_IDLE_SECONDS", "10"))


def test_idle_tree_uses_under_two_percent_of_a_core(benchmark, tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_bytes(b"one line so every stage has worked once\n")
    config = tmp_path / "logcap.yaml"
    config.write_text(f"""
data_dir: {tmp_path / "data"}
api: {{address: "127.0.0.1:19612"}}
sources:
  app: {{type: file, include: ["{tmp_path}/logs/*.log"]}}
sinks:
  archive: {{type: file, path: "{tmp_path}/out/{{source}}.ndjson"}}
  devnull: {{type: blackhole}}
""")
    process = subprocess.Popen(
        [sys.executable, "-m", "logcap", "run", "--config", str(config)], stderr=subprocess.DEVNULL
    )
    shares: list[float] = []
    try:
        time.sleep(3)  # start-up, the one line, the first checkpoint

        def measure() -> None:
            with TreeMonitor(process.pid, interval=1.0) as monitor:
                monitor.sample()
                before = monitor.cpu_seconds
                time.sleep(IDLE_SECONDS)
            shares.append((monitor.cpu_seconds - before) / IDLE_SECONDS)
            # supervisor, collector, dispatcher, two sinks, retry
            assert len(monitor.cpu) == 6, f"expected 6 processes, saw {monitor.names}"

        benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    share = shares[-1]
    benchmark.extra_info["idle_cpu_share_of_one_core"] = share
    record(
        RunResult(
            f"idle tree ({IDLE_SECONDS:.0f}s, {share:.2%} of a core)",
            0,
            0,
            IDLE_SECONDS,
            share * IDLE_SECONDS,
            0,
            {},
        )
    )
    assert share < 0.02, f"idle tree used {share:.2%} of a core"
