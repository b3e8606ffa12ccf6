"""Shared fixtures of the benchmarks and the end-of-run comparison table.

``LOGCAP_BENCH_LINES`` sets the input size (default 1,000,000; CI runs a short variant
so the benchmarks cannot rot). Every benchmark checks its own output before reporting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import LINE_BYTES, RunResult, reach_terminal_with, write_inputs

LINES = int(os.environ.get("LOGCAP_BENCH_LINES", "1000000"))
FILES = 10
RESULTS: dict[str, RunResult] = {}


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Path]]]:
    """LINES lines of ~200 bytes across FILES files, written once per session."""
    directory = tmp_path_factory.mktemp("bench-input")
    paths = write_inputs(directory / "logs", FILES, LINES)
    yield directory / "logs", paths


@pytest.fixture(scope="session")
def single_input(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Path]]]:
    """The same LINES lines in one file: what logcap and the peers are compared on."""
    directory = tmp_path_factory.mktemp("bench-single")
    paths = write_inputs(directory / "logs", 1, LINES)
    yield directory / "logs", paths


def pytest_configure(config: pytest.Config) -> None:
    """Progress lines reach the terminal while pytest captures the test's output."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        reach_terminal_with(capture.global_and_fixture_disabled)


def record(result: RunResult) -> None:
    """Keep a result for the comparison table."""
    RESULTS[result.name] = result


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write(f"logcap benchmark ({LINES:,} lines of {LINE_BYTES} bytes, {FILES} files)")
    for result in RESULTS.values():
        write("  " + result.row())
    from bench.test_kafka import kafka_ratio_line
    from bench.test_tap_overhead import tap_ratio_line

    for ratio in (kafka_ratio_line(RESULTS), tap_ratio_line(RESULTS)):
        if ratio is not None:
            write(ratio)
    peers = [r for n, r in RESULTS.items() if n in ("rsyslog file->file", "syslog-ng file->file")]
    ours = RESULTS.get("logcap file->file (1 file)")
    if ours and peers:
        best = max(peers, key=lambda r: r.lines_per_second)
        write(
            f"  ratio logcap file->file / {best.name}: "
            f"{ours.lines_per_second / best.lines_per_second:.2f}x "
            f"(steady state {ours.steady_lines_per_second / best.lines_per_second:.2f}x)"
        )
    for result in RESULTS.values():
        write(f"  cpu by process, {result.name}: {result.cpu_by_process}")
    out = Path(os.environ.get("LOGCAP_BENCH_REPORT", "bench-results.json"))
    out.write_text(
        json.dumps(
            {
                n: {
                    **r.__dict__,
                    "lines_per_second": r.lines_per_second,
                    "steady_lines_per_second": r.steady_lines_per_second,
                }
                for n, r in RESULTS.items()
            },
            indent=2,
        )
    )


# the real services of the soak (bench/test_soak.py): the tests' own Docker daemon (an
# image of busybox-static) and Tansu broker fixtures
from tests._docker_helpers import docker_daemon, dockerd  # noqa: E402, F401
from tests._kafka_helpers import tansu  # noqa: E402, F401
