"""JSON lines through a pipeline (json_parse + timestamp_parse + level_extract), file →
file, against rsyslog (imfile → mmjsonparse → omfile) on the same file in the same run.

    1 file ─▶ collector (cut, steps, pack) ─ring─▶ dispatcher (encode) ─batch ring─▶ sink ─▶ out
    1 file ─▶ rsyslog imfile ─▶ mmjsonparse, parse_time, lookup ─▶ omfile ─▶ out

The same file also goes through logcap without the pipeline (what the steps cost), and
each step's cost in ns/line is measured in this process on the same lines, block by
block as the collector sees them: cutting a block into lines, making entries, each step
alone, the three together, packing the entries into ring records, and the dispatcher's
decoding and encoding of them. Every case runs ``ROUNDS`` times on fresh state, each
round's output is checked by identity (bench/pipeline_peers.py) before its figures
count, and the median round is reported with the spread of the rounds.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench import pipeline_peers as pp
from bench.conftest import LINES, RESULTS, record
from bench.harness import RunResult, level_the_field, run_logcap
from logcap.capture._entries import decode_runs, pack_rich
from logcap.capture._record import HEADER_SIZE
from logcap.capture.labels import file_labels
from logcap.capture.pipeline.config import PipelineConfig
from logcap.capture.pipeline.engine import Processor
from logcap.capture.pipeline.entry import Entry
from logcap.config._units import dec_hook
from logcap.dispatch.encode import encode_entries, encode_rich, entry_prefix, entry_rest
from logcap.dispatch.lines import block_messages
from logcap.metrics import NullBlock

API = "127.0.0.1:19613"
ROUNDS = 3
SLOT_BYTES = 256 * 1024  # the default collector slot: one read of whole lines
MICRO_LINES = min(LINES, 30_000)
MICRO_REPEATS = 5
NAME_PIPELINE = "logcap json pipeline file->file"
NAME_PLAIN = "logcap json no pipeline file->file"
NAME_RSYSLOG = "rsyslog mmjsonparse file->file"
STEP_NS: dict[str, float] = {}


@dataclass
class RoundsResult(RunResult):
    """The median round, with every round's throughput and CPU seconds per process role."""

    rounds_lines_per_second: list[float] = field(default_factory=list)
    spread_percent: float = 0.0  # (max - min) / median of the rounds' lines/s
    cpu_by_role: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def json_input(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """LINES JSON lines of 200 bytes in one file."""
    path = tmp_path_factory.mktemp("bench-json") / "logs" / "app.log"
    pp.write_json_input(path, LINES)
    yield path


def _role(process: str) -> str:
    return "supervisor" if process.startswith("--config") else process.split()[0]


def _median(name: str, results: list[RunResult], loads: list[float]) -> RoundsResult:
    rates = [r.lines_per_second for r in results]
    mid = sorted(results, key=lambda r: r.lines_per_second)[len(results) // 2]
    roles: dict[str, float] = {}
    for process, cpu in mid.cpu_by_process.items():
        roles[_role(process)] = round(roles.get(_role(process), 0.0) + cpu, 2)
    return RoundsResult(
        name,
        mid.lines,
        mid.input_bytes,
        mid.seconds,
        mid.cpu_seconds,
        mid.peak_rss_bytes,
        mid.cpu_by_process,
        mid.startup_seconds,
        rounds_lines_per_second=rates,
        spread_percent=round((max(rates) - min(rates)) / statistics.median(rates) * 100, 1),
        cpu_by_role=roles,
        # other work on the box skews the figures: the 1-minute load as each round began
        figures={"load1_per_round": [round(load, 2) for load in loads]},
    )


def _report(benchmark: Any, result: RoundsResult) -> None:
    record(result)
    benchmark.extra_info.update(
        lines_per_second=result.lines_per_second,
        rounds_lines_per_second=result.rounds_lines_per_second,
        spread_percent=result.spread_percent,
        cpu_by_role=result.cpu_by_role,
        **result.figures,
    )
    print(
        f"\n{result.row()}\n  rounds {[round(r) for r in result.rounds_lines_per_second]} "
        f"lines/s, spread {result.spread_percent}%, cpu by role {result.cpu_by_role}, "
        f"load {result.figures['load1_per_round']}"
    )


def _logcap(benchmark: Any, name: str, path: Path, work: Path, with_pipeline: bool) -> None:
    output = work / "out" / "app.ndjson"
    size = pp.logcap_output_bytes(path, LINES, with_pipeline)
    results: list[RunResult] = []
    loads: list[float] = []

    def once() -> None:
        loads.append(os.getloadavg()[0])
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        config = pp.logcap_config(work, path.parent, API, with_pipeline)
        level_the_field([path])
        result = run_logcap(
            name,
            config,
            API,
            "archive",
            LINES,
            LINES * pp.LINE_BYTES,
            output=output,
            output_bytes=size,
        )
        pp.verify_logcap_output(output, LINES, with_pipeline)
        results.append(result)
        shutil.rmtree(work, ignore_errors=True)  # its page cache must not burden the next run

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    result = _median(name, results, loads)
    result.figures["cpu_us_per_line_by_role"] = {
        role: round(cpu / LINES * 1e6, 2) for role, cpu in result.cpu_by_role.items()
    }
    if with_pipeline:
        result.figures["step_ns_per_line"] = dict(STEP_NS)
    _report(benchmark, result)


# ------------------------------------------------------------------ cost per step, in-process


def _pipeline(steps: list[dict[str, Any]]) -> Processor:
    config = msgspec.convert({"steps": steps}, PipelineConfig, dec_hook=dec_hook)

    class NoCounters:
        def add(self, counter: int, n: int = 1) -> None:
            pass

    return Processor("app", [("p", config)], NoCounters())  # type: ignore[arg-type]


JSON = {"type": "json_parse"}
TIME = {"type": "timestamp_parse", "field": "fields.ts", "formats": ["rfc3339"]}
LEVEL = {"type": "level_extract", "field": "fields.level"}


def _ns_per_line(run: Callable[[Any], object], prepare: Callable[[], Any]) -> float:
    """Median over MICRO_REPEATS of ``run(prepare())`` (prepare not timed), per line."""
    times = []
    for _ in range(MICRO_REPEATS):
        arg = prepare()
        began = time.perf_counter_ns()
        run(arg)
        times.append(time.perf_counter_ns() - began)
    return round(statistics.median(times) / MICRO_LINES, 1)


def test_cost_per_step_in_process(benchmark: Any, json_input: Path) -> None:
    """Where a line's time goes: each stage on MICRO_LINES lines, in collector-sized blocks."""
    path = str(json_input)
    with open(json_input, "rb") as f:
        data = f.read(MICRO_LINES * pp.LINE_BYTES)
    per_block = SLOT_BYTES // pp.LINE_BYTES
    step = per_block * pp.LINE_BYTES
    blocks = [memoryview(data[at : at + step]) for at in range(0, len(data), step)]
    labels = file_labels("host", {}, None, path)
    read_ns = time.time_ns()
    capacity = SLOT_BYTES - HEADER_SIZE - len(path.encode())

    def cut(_: object) -> list[list[str]]:
        return [block_messages(b, False, "utf-8", None, 64 * 1024, False)[0] for b in blocks]

    texts = cut(None)

    def fresh() -> list[list[Entry]]:
        return [[Entry("app", labels, read_ns, m) for m in block] for block in texts]

    def parsed() -> list[list[Entry]]:
        out = fresh()
        for block in out:
            for e in block:
                e.fields = msgspec.json.decode(e.message)
        return out

    def steps(processor: Processor) -> Callable[[list[list[Entry]]], object]:
        return lambda entries: [processor.run(block, read_ns) for block in entries]

    everything = steps(_pipeline([JSON, TIME, LEVEL]))
    done = fresh()
    everything(done)
    records = [pack_rich(block, capacity, NullBlock()) for block in done]
    rest = entry_rest("app", labels, read_ns)

    def dispatch(_: object) -> None:
        for block in records:
            for chunk in block:
                for run in decode_runs(chunk):
                    encode_rich(rest, run.stamps, run.messages, run.levels, run.fields)

    prefix = entry_prefix("app", labels, read_ns)
    STEP_NS.update(
        {
            "collector: cut block into lines": _ns_per_line(cut, lambda: None),
            "collector: make entries": _ns_per_line(lambda _: fresh(), lambda: None),
            "step json_parse": _ns_per_line(steps(_pipeline([JSON])), fresh),
            "step timestamp_parse": _ns_per_line(steps(_pipeline([TIME])), parsed),
            "step level_extract": _ns_per_line(steps(_pipeline([LEVEL])), parsed),
            "steps all three": _ns_per_line(everything, fresh),
            "collector: pack records": _ns_per_line(
                lambda _: [pack_rich(b, capacity, NullBlock()) for b in done], lambda: None
            ),
            "dispatcher: decode records + encode_rich": _ns_per_line(dispatch, lambda: None),
            "dispatcher without pipeline: cut + encode": _ns_per_line(
                lambda _: [encode_entries(prefix, block) for block in cut(None)], lambda: None
            ),
        }
    )
    packed = sum(len(c) for block in records for c in block)
    STEP_NS["records per block"] = round(sum(map(len, records)) / len(records), 2)
    STEP_NS["packed bytes per line"] = round(packed / MICRO_LINES, 1)
    assert sum(map(len, done)) == MICRO_LINES and all(e.level for b in done for e in b)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(step_ns_per_line=STEP_NS)
    print("\nns per line, in-process:")
    for stage, ns in STEP_NS.items():
        print(f"  {stage:<45} {ns:>8}")
    if NAME_PIPELINE in RESULTS:
        RESULTS[NAME_PIPELINE].figures["step_ns_per_line"] = dict(STEP_NS)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------- the process trees


def test_json_file_to_file_without_pipeline(
    benchmark: Any, json_input: Path, tmp_path: Path
) -> None:
    """The baseline of logcap itself: the same lines as opaque messages."""
    _logcap(benchmark, NAME_PLAIN, json_input, tmp_path / "w", with_pipeline=False)


def test_json_pipeline_file_to_file(benchmark: Any, json_input: Path, tmp_path: Path) -> None:
    _logcap(benchmark, NAME_PIPELINE, json_input, tmp_path / "w", with_pipeline=True)


@pytest.mark.bench_peer
def test_rsyslog_mmjsonparse_file_to_file(benchmark: Any, json_input: Path, tmp_path: Path) -> None:
    if not pp.rsyslog_parse_available():
        pytest.fail(
            "rsyslog with imfile and mmjsonparse is not installed (scripts/install_peers.sh)"
        )
    results: list[RunResult] = []
    loads: list[float] = []

    def once() -> None:
        loads.append(os.getloadavg()[0])
        work = tmp_path / "w"
        shutil.rmtree(work, ignore_errors=True)
        level_the_field([json_input])
        r = pp.run_rsyslog_parse(json_input, work, LINES)
        shutil.rmtree(work, ignore_errors=True)
        results.append(
            RunResult(
                NAME_RSYSLOG,
                r.lines,
                r.input_bytes,
                r.seconds,
                r.cpu_seconds,
                r.peak_rss_bytes,
                {"rsyslogd": r.cpu_seconds},
                r.startup_seconds,
            )
        )

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    peer = _median(NAME_RSYSLOG, results, loads)
    ours = RESULTS.get(NAME_PIPELINE)
    if ours is not None:
        ratio = round(ours.lines_per_second / peer.lines_per_second, 2)
        steady = round(ours.steady_lines_per_second / peer.lines_per_second, 2)
        for r in (ours, peer):
            r.figures.update(ratio_logcap_to_rsyslog=ratio, steady_ratio_to_rsyslog=steady)  # type: ignore[attr-defined]
        print(f"\nratio {NAME_PIPELINE} / {NAME_RSYSLOG}: {ratio}x (steady state {steady}x)")
    _report(benchmark, peer)
