"""Two soaks' figures side by side (``--benchmark-compare`` shows only their wall times).

    .venv/bin/python -m bench.soak_compare .benchmarks/*/0001_*.json .benchmarks/*/0002_*.json

Each file is a pytest-benchmark JSON (``--benchmark-autosave`` or ``--benchmark-json``)
holding a run of ``test_soak``; its ``extra_info`` holds the figures
(bench/test_soak.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# (label, path into extra_info, scale): the figures a soak is judged by
ROWS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("soak seconds", ("soak_seconds",), 1),
    ("RSS slope (MiB/min)", ("rss_slope_bytes_per_minute",), 1 / 2**20),
    ("fds slope (/min)", ("fds_slope_per_minute",), 1),
    ("CPU (share of a core)", ("cpu_share_of_one_core",), 1),
    ("latency p50 (s)", ("latency_seconds", "p50"), 1),
    ("latency p99 (s)", ("latency_seconds", "p99"), 1),
    ("latency p99 outside the outage (s)", ("latency_seconds", "p99_outside_outage"), 1),
    ("agent histogram p99, file sink (s)", ("histogram_p99_seconds", "archive"), 1),
    ("agent histogram p99, kafka sink (s)", ("histogram_p99_seconds", "bus"), 1),
    ("duplicates in the file sink", ("duplicates_file_sink",), 1),
    ("duplicates in kafka", ("duplicates_kafka",), 1),
    ("reload applied in (s)", ("reload", "last_seconds"), 1),
)


def figures(path: Path) -> dict[str, Any]:
    """The ``extra_info`` of the soak in a pytest-benchmark JSON file."""
    runs = json.loads(path.read_text())["benchmarks"]
    soak = next((r for r in runs if r["name"].startswith("test_soak")), None)
    if soak is None:
        raise SystemExit(f"{path}: no test_soak in it")
    return dict(soak["extra_info"])


def value(info: dict[str, Any], keys: tuple[str, ...], scale: float) -> str:
    for key in keys:
        info = info.get(key, {}) if isinstance(info, dict) else {}
    return f"{info * scale:.4g}" if isinstance(info, int | float) else "-"


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    infos = [figures(Path(arg)) for arg in argv]
    width = max(len(label) for label, _, _ in ROWS)
    print(" " * width + "".join(f"  {Path(a).stem[:18]:>18}" for a in argv))
    for label, keys, scale in ROWS:
        print(f"{label:<{width}}" + "".join(f"  {value(i, keys, scale):>18}" for i in infos))


if __name__ == "__main__":
    main(sys.argv[1:])
