"""What a connected ``logcap tap`` costs the pipeline: file → file, measured as
bench/test_file_pipeline.py measures it, with and without a tap reading all the time.

    10 files ─▶ collector ─ring─▶ dispatcher ─batch ring─▶ file sink ─▶ out
                                                    └─(GET /tap, no cursor)─▶ logcap tap ─▶ pipe

The tap never gates the ring (logcap/tap.py), so what it can cost is CPU: the API thread
copying slots and the client reading them, on the same cores as the pipeline. Rounds
alternate (without, with, without, ...) so drift of the machine falls on both cases alike;
each round starts fresh and checks its output line by line before it counts, and a tapped
round must have printed entries. The figures are the median round per case and the spread
(min..max); the ratio is reported (extra_info, the end-of-run table), never asserted.

The tap client is started, its modules imported, before the clock starts, and connects as
soon as the agent's API listens, so it reads from the first batch (one with ``--limit``
larger than any input, so it reads the whole run and ends when the agent stops).
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from bench.conftest import LINES, record
from bench.harness import (
    LINE_BYTES,
    RunResult,
    agent_config,
    expected_file_output_bytes,
    level_the_field,
    run_logcap,
)
from bench.test_file_pipeline import verify_file_output

API = "127.0.0.1:19614"
ROUNDS = int(os.environ.get("LOGCAP_BENCH_TAP_ROUNDS", "3"))  # per case, interleaved
WITHOUT, WITH = "logcap file->file (no tap)", "logcap file->file (+tap)"

# `logcap tap` itself, launched ahead of the run: it says "ready" once imported, then waits
# for the API to listen (a refused connect costs microseconds) and taps until the stop.
TAP_CLIENT = """
import socket, sys, time
from logcap.cli_tap import tap
host, port, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print("ready", file=sys.stderr, flush=True)
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        socket.create_connection((host, port), timeout=1).close()
        break
    except OSError:
        time.sleep(0.005)
tap.main(["--api", f"http://{host}:{port}", "--limit", limit], prog_name="logcap tap")
"""


class TapClient:
    """A ``logcap tap`` process whose stdout a thread drains, counting the entries."""

    def __init__(self, workdir: Path) -> None:
        host, port = API.rsplit(":", 1)
        self.stderr_path = workdir / "tap.stderr"
        self._stderr = open(self.stderr_path, "w+")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-c", TAP_CLIENT, host, port, str(10 * LINES + 1)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.entries = 0
        self.first_line = b""
        self.cpu_seconds = 0.0
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while "ready" not in self.stderr_path.read_text():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the tap client did not start: {self.stderr()}")
            time.sleep(0.01)

    def _drain(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        for chunk in iter(lambda: os.read(fd, 1 << 20), b""):
            if not self.first_line:
                self.first_line = chunk.split(b"\n", 1)[0]
            self.entries += chunk.count(b"\n")

    def stop(self) -> None:
        """Wait for the tap to end (the agent stopped: it says so), and take its CPU."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # only the tap was reaped
        self.cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self._reader.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def missed_batches(self) -> int:
        """Batches the tap said it missed (``logcap tap: missed N batch(es): ...``)."""
        return sum(
            int(line.split("missed ", 1)[1].split()[0])
            for line in self.stderr().splitlines()
            if line.startswith("logcap tap: missed ")
        )


def _round(name: str, work: Path, logs: Path, paths: list[Path], tapped: bool) -> RunResult:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    output = work / "out" / "app.ndjson"
    config = agent_config(work, logs, API, f'  archive: {{type: file, path: "{output}"}}')
    level_the_field(paths)
    client = TapClient(work) if tapped else None
    try:
        result = run_logcap(
            name,
            config,
            API,
            "archive",
            LINES,
            LINES * LINE_BYTES,
            output=output,
            output_bytes=expected_file_output_bytes(paths, "app"),
        )
    finally:
        if client is not None:
            client.stop()
    verify_file_output(output, paths)
    if client is not None:
        assert client.process.returncode == 0, client.stderr()
        assert client.entries > 0 and b'"message"' in client.first_line, client.stderr()
        result.cpu_by_process["logcap tap (client)"] = round(client.cpu_seconds, 2)
        _TAPPED.append((client.entries, client.missed_batches()))
    shutil.rmtree(work, ignore_errors=True)  # its page cache must not burden the next round
    return result


_TAPPED: list[tuple[int, int]] = []  # per tapped round: entries printed, batches missed


def _median_of(values: Iterable[float]) -> float:
    """The median of the values that are numbers (a steady rate is NaN when too short)."""
    numbers = [v for v in values if not math.isnan(v)]
    return statistics.median(numbers) if numbers else math.nan


def _median(results: list[RunResult]) -> RunResult:
    return sorted(results, key=lambda r: r.seconds)[len(results) // 2]


def test_tap_overhead_on_file_to_file(benchmark, inputs, tmp_path: Path) -> None:
    logs, paths = inputs
    runs: dict[str, list[RunResult]] = {WITHOUT: [], WITH: []}
    _TAPPED.clear()

    def interleaved() -> None:
        for n in range(ROUNDS):
            for name in (WITHOUT, WITH):
                runs[name].append(_round(name, tmp_path / f"w{n}", logs, paths, name == WITH))

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    without, with_tap = _median(runs[WITHOUT]), _median(runs[WITH])
    ratio = with_tap.lines_per_second / without.lines_per_second
    steady = {  # first entry out -> last: start-up, noisy at the CI size, left out
        name: _median_of(r.steady_lines_per_second for r in rs) for name, rs in runs.items()
    }
    steady_ratio = steady[WITH] / steady[WITHOUT]
    spread = {
        name: [round(min(r.seconds for r in rs), 3), round(max(r.seconds for r in rs), 3)]
        for name, rs in runs.items()
    }
    benchmark.extra_info.update(
        rounds_per_case=ROUNDS,
        seconds={name: [round(r.seconds, 3) for r in rs] for name, rs in runs.items()},
        median_seconds_without=without.seconds,
        median_seconds_with=with_tap.seconds,
        spread_seconds=spread,
        cpu_seconds_without=statistics.median(r.cpu_seconds for r in runs[WITHOUT]),
        cpu_seconds_with=statistics.median(r.cpu_seconds for r in runs[WITH]),
        ratio_lines_per_second_with_over_without=ratio,
        ratio_steady_lines_per_second_with_over_without=steady_ratio,
        tap_entries_printed=[entries for entries, _ in _TAPPED],
        tap_batches_missed=[missed for _, missed in _TAPPED],
    )
    with_tap.notes.update(
        ratio_lines_per_second_with_over_without=ratio,
        ratio_steady_lines_per_second_with_over_without=steady_ratio,
        rounds_per_case=ROUNDS,
        spread_seconds=spread,
        tap_entries_printed=benchmark.extra_info["tap_entries_printed"],
        tap_batches_missed=benchmark.extra_info["tap_batches_missed"],
    )
    without.notes.update(rounds_per_case=ROUNDS, spread_seconds=spread)
    record(without)
    record(with_tap)
    print(tap_ratio_line({WITHOUT: without, WITH: with_tap}))
    for name, rs in runs.items():
        print(f"  {name}: seconds {[round(r.seconds, 2) for r in rs]}")
    print(f"  tap printed {benchmark.extra_info['tap_entries_printed']} entries of {LINES}")


def tap_ratio_line(results: dict[str, RunResult]) -> str | None:
    """The closing comparison: file->file throughput with a tap reading, as a share of it
    without one (median rounds)."""
    ours, bare = results.get(WITH), results.get(WITHOUT)
    if ours is None or bare is None:
        return None
    steady = ours.notes.get("ratio_steady_lines_per_second_with_over_without", math.nan)
    return (
        f"  ratio logcap file->file with a tap reading / without: "
        f"{ours.lines_per_second / bare.lines_per_second:.2f}x "
        f"(steady state {steady:.2f}x;"
        f" median of {ROUNDS} interleaved rounds each: {ours.seconds:.2f}s vs {bare.seconds:.2f}s)"
    )
