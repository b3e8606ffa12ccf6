"""File → blackhole and file → file through the whole process tree, and the same single
input file through rsyslog (imfile → omfile) and syslog-ng (file → file) in the same run.

    10 files ─▶ collector ─ring─▶ dispatcher (encode once) ─batch ring─▶ sink ─▶ out

Each case runs once per round on fresh state and checks its output (count, and for
file outputs every line of every input file, in order) before its figures count.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import peers
from bench.conftest import LINES, record
from bench.harness import (
    LINE_BYTES,
    RunResult,
    agent_config,
    expected_file_output_bytes,
    level_the_field,
    run_logcap,
)

API = "127.0.0.1:19611"


def _fresh(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)


def verify_file_output(output: Path, inputs: list[Path]) -> None:
    """Every input line exactly once, in order per file, message byte-exact."""
    expected = {str(p): p.read_bytes().splitlines() for p in inputs}
    seen: dict[str, list[bytes]] = {path: [] for path in expected}
    with open(output, "rb") as f:
        for line in f:
            entry = json.loads(line)
            seen[entry["labels"]["path"]].append(entry["message"].encode())
    for path, lines in expected.items():
        assert seen[path] == lines, f"{path}: output differs from input"


def _run(
    benchmark,
    name: str,
    workdir: Path,
    logs: Path,
    sink_yaml: str,
    sink: str,
    output: Path | None = None,
    inputs: list[Path] | None = None,
) -> RunResult:
    results: list[RunResult] = []
    output_bytes = expected_file_output_bytes(inputs, "app") if inputs else 0

    def once() -> None:
        _fresh(workdir)
        config = agent_config(workdir, logs, API, sink_yaml)
        level_the_field(sorted(logs.glob("*.log")))
        results.append(
            run_logcap(
                name,
                config,
                API,
                sink,
                LINES,
                LINES * LINE_BYTES,
                output=output,
                output_bytes=output_bytes,
            )
        )

    benchmark.pedantic(once, rounds=1, iterations=1)
    result = results[-1]
    benchmark.extra_info.update(
        lines_per_second=result.lines_per_second,
        steady_lines_per_second=result.steady_lines_per_second,
        cpu_seconds=result.cpu_seconds,
        peak_rss_bytes=result.peak_rss_bytes,
    )
    record(result)
    return result


def test_file_to_blackhole(benchmark, inputs, tmp_path: Path) -> None:
    logs, _ = inputs
    _run(
        benchmark,
        "logcap file->blackhole",
        tmp_path / "w",
        logs,
        "  devnull: {type: blackhole}",
        "devnull",
    )


def test_file_to_file(benchmark, inputs, tmp_path: Path) -> None:
    logs, paths = inputs
    work = tmp_path / "w"
    _run(
        benchmark,
        "logcap file->file",
        work,
        logs,
        f'  archive: {{type: file, path: "{work}/out/{{source}}.ndjson"}}',
        "archive",
    )
    verify_file_output(work / "out" / "app.ndjson", paths)
    shutil.rmtree(work, ignore_errors=True)  # its page cache must not burden the next run


def test_single_file_to_file(benchmark, single_input, tmp_path: Path) -> None:
    """The case compared with the peers: the very same single input file."""
    logs, paths = single_input
    work = tmp_path / "w"
    _run(
        benchmark,
        "logcap file->file (1 file)",
        work,
        logs,
        f'  archive: {{type: file, path: "{work}/out/{{source}}.ndjson"}}',
        "archive",
    )
    verify_file_output(work / "out" / "app.ndjson", paths)


def _peer(benchmark, name: str, runner, single_input, tmp_path: Path) -> None:
    _, (path,) = single_input
    results = []

    def once() -> None:
        work = tmp_path / "w"
        _fresh(work)
        level_the_field([path])
        results.append(runner(path, work, LINES))

    benchmark.pedantic(once, rounds=1, iterations=1)
    shutil.rmtree(tmp_path / "w", ignore_errors=True)  # its page cache must not burden the next run
    r = results[-1]
    record(
        RunResult(
            name,
            r.lines,
            LINES * LINE_BYTES,
            r.seconds,
            r.cpu_seconds,
            r.peak_rss_bytes,
            {name: r.cpu_seconds},
            getattr(r, "startup_seconds", 0.0),
        )
    )


@pytest.mark.bench_peer
def test_rsyslog_file_to_file(benchmark, single_input, tmp_path: Path) -> None:
    # a missing peer fails: a comparison that silently lost its baseline is no comparison
    assert peers.rsyslog_available(), "rsyslog not installed (scripts/install_peers.sh)"
    _peer(benchmark, "rsyslog file->file", peers.run_rsyslog, single_input, tmp_path)


@pytest.mark.bench_peer
def test_syslog_ng_file_to_file(benchmark, single_input, tmp_path: Path) -> None:
    assert peers.syslog_ng_available(), "syslog-ng not unpacked (scripts/install_peers.sh)"
    _peer(benchmark, "syslog-ng file->file", peers.run_syslog_ng, single_input, tmp_path)
