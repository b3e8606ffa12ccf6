"""Nothing is lost across reloads: 20 reloads while lines arrive (issue 13).

    a/*.log, b/*.log ─▶ collector ─▶ dispatcher ─┬─▶ keep   (never changes)
                                                 ├─▶ x      (its path changes: x-<n>.ndjson)
                                                 └─▶ y      (added, then removed, ...)

A writer appends numbered lines at a steady rate (``LOGCAP_BENCH_LINES``, default
1,000,000; the issue asks for 500,000 and CI runs 100,000) to ``a/app.log`` and
``b/app.log`` while the test cycles through five reloads four times: add ``y``; change
``x``'s path; change the source's globs (``b/*.log`` dropped or taken back: its lines are
read when it returns, from its checkpoint); change batching; remove ``y``. Each reload is a
``POST /config/reload`` answered once applied.

Verified, by identity: every line is in ``keep``; every line is in one of ``x``'s files
(each batch goes out under exactly one of its configs); every line of ``y``'s files is a
real line. Reported (never asserted as a time): each reload's duration as the API
answered it, the pause in delivery around each (the longest time ``keep``'s file did not
grow from the reload's start to a second after its end, while lines kept arriving),
duplicates per sink, throughput.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from bench.conftest import LINES
from bench.harness import ProgressLine

API = "127.0.0.1:19618"
TOKEN = "bench-reload-token"
RELOADS = 20
CYCLE = ("add y", "change x", "change globs", "change batching", "remove y")


def _config(tmp: Path, state: dict[str, int]) -> str:
    include = [f"{tmp}/a/*.log"] + ([f"{tmp}/b/*.log"] if state["b"] else [])
    sinks = (
        f"  keep: {{type: file, path: '{tmp}/keep.ndjson'}}\n"
        f"  x: {{type: file, path: '{tmp}/x-{state['x']}.ndjson'}}\n"
    )
    if state["y"]:  # y-<n>: n is the reload that added it
        sinks += f"  y: {{type: file, path: '{tmp}/y-{state['y']}.ndjson'}}\n"
    return (
        f'api: {{address: "{API}", token: "{TOKEN}"}}\n'
        f"data_dir: {tmp}/data\n"
        f"dispatcher: {{batch_timeout: 20ms, batch_max_events: {state['events']}}}\n"
        "supervisor: {shutdown_timeout: 30s}\n"
        "sources:\n"
        f"  app: {{type: file, include: {json.dumps(include)}, read_from: beginning, "
        "glob_interval: 200ms}\n"
        f"sinks:\n{sinks}"
    )


def _post_reload() -> dict[str, object]:
    request = urllib.request.Request(f"http://{API}/config/reload", data=b"", method="POST")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=300) as answer:
        body: dict[str, object] = json.loads(answer.read())
        return body


def _messages(path: Path) -> list[str]:
    if not path.exists():
        return []
    with open(path, "rb") as out:
        return [json.loads(line)["message"] for line in out if line.endswith(b"\n")]


def _ready() -> bool:
    try:
        with urllib.request.urlopen(f"http://{API}/ready", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


class Writer(threading.Thread):
    """Appends numbered lines to a/app.log and b/app.log at ``rate`` lines/s."""

    def __init__(self, tmp: Path, total: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.tmp, self.total, self.rate = tmp, total, rate
        self.written = 0

    def run(self) -> None:
        files = [open(self.tmp / d / "app.log", "a") for d in ("a", "b")]  # noqa: SIM115
        began = time.monotonic()
        try:
            while self.written < self.total:
                due = min(self.total, int((time.monotonic() - began) * self.rate) + 1)
                while self.written < due:
                    n = self.written
                    files[n % 2].write(f"line-{n:09d} {'x' * 150}\n")
                    self.written += 1
                for f in files:
                    f.flush()
                time.sleep(0.01)
        finally:
            for f in files:
                f.close()


def test_twenty_reloads_while_lines_arrive_lose_nothing(benchmark, tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    config = tmp_path / "logcap.yaml"
    state = {"x": 0, "y": 0, "b": 1, "events": 1000}
    config.write_text(_config(tmp_path, state))
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
    agent = subprocess.Popen(
        [sys.executable, "-m", "logcap", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 60
    while not _ready():
        assert agent.poll() is None and time.monotonic() < deadline, "the agent did not start"
        time.sleep(0.05)
    # about two seconds of lines per reload
    writer = Writer(tmp_path, LINES, rate=LINES / (RELOADS * 2.0))
    keep = tmp_path / "keep.ndjson"
    growth: list[tuple[float, int]] = []  # (time, size of keep) every 20 ms
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                growth.append((time.monotonic(), keep.stat().st_size))
            except OSError:
                growth.append((time.monotonic(), 0))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    reloads: list[dict[str, object]] = []

    def cycle() -> None:
        began = time.monotonic()
        writer.start()
        sampler.start()
        progress = ProgressLine("reloads", RELOADS)
        for i in range(RELOADS):
            kind = CYCLE[i % len(CYCLE)]
            if kind == "add y":
                state["y"] = i + 1
            elif kind == "change x":
                state["x"] = i + 1
            elif kind == "change globs":
                state["b"] = 1 - state["b"]
            elif kind == "change batching":
                state["events"] = 500 if state["events"] == 1000 else 1000
            else:
                state["y"] = 0
            config.write_text(_config(tmp_path, state))
            started = time.monotonic()
            answer = _post_reload()
            ended = time.monotonic()
            assert answer["applied"], answer
            reloads.append({"kind": kind, "started": started, "ended": ended, **answer})
            progress.show(lambda: len(reloads), force=True)
            time.sleep(max(0.0, began + 2.0 * (i + 1) - time.monotonic()))
        writer.join()
        wanted = writer.written
        deadline = time.monotonic() + 300
        while len(_messages(keep)) < wanted and time.monotonic() < deadline:
            time.sleep(0.2)
        sampling.set()

    try:
        benchmark.pedantic(cycle, rounds=1, iterations=1)
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        log.close()
    assert code == 0, (tmp_path / "agent.log").read_text()[-4000:]

    every = {f"line-{n:09d} {'x' * 150}" for n in range(writer.written)}
    kept = _messages(keep)
    xs = [m for p in sorted(tmp_path.glob("x-*.ndjson")) for m in _messages(p)]
    ys = [m for p in sorted(tmp_path.glob("y-*.ndjson")) for m in _messages(p)]
    assert every <= set(kept), f"keep lost {len(every - set(kept))} lines"
    assert every <= set(xs), f"x lost {len(every - set(xs))} lines across its configs"
    assert set(ys) <= every
    pauses = [_pause(growth, r["started"], r["ended"] + 1.0) for r in reloads]  # type: ignore[arg-type]
    took = [float(r["seconds"]) for r in reloads]  # type: ignore[arg-type]
    by_kind = {
        kind: round(max(p for p, r in zip(pauses, reloads, strict=True) if r["kind"] == kind), 3)
        for kind in CYCLE
    }
    benchmark.extra_info.update(
        lines=writer.written,
        reloads=len(reloads),
        duplicates_keep=len(kept) - len(set(kept)),
        duplicates_x=len(xs) - len(set(xs)),
        y_lines=len(ys),
        reload_seconds_median=round(statistics.median(took), 3),
        reload_seconds_max=round(max(took), 3),
        pause_seconds_median=round(statistics.median(pauses), 3),
        pause_seconds_max=round(max(pauses), 3),
        pause_seconds_max_by_kind=by_kind,
    )
    print()
    print(f"  {len(reloads)} reloads, {writer.written:,} lines: nothing lost in keep or x")
    print(f"  reload took: median {statistics.median(took):.2f} s, max {max(took):.2f} s")
    print(f"  delivery pause: median {statistics.median(pauses):.2f} s, max {max(pauses):.2f} s")
    print(f"  worst pause by kind: {by_kind}")
    print(f"  duplicates: keep {len(kept) - len(set(kept))}, x {len(xs) - len(set(xs))}")
    os.sync()


def _pause(growth: list[tuple[float, int]], start: float, end: float) -> float:
    """Longest time in [start, end] during which keep's file did not grow."""
    longest, since, size = 0.0, start, -1
    for at, now in growth:
        if at < start:
            size = now
            continue
        if at > end:
            break
        if now != size:
            longest = max(longest, at - since)
            since, size = at, now
    return max(longest, min(end, growth[-1][0]) - since) if growth else 0.0
