"""Issue 9's chaos test: everything that goes wrong on a bad day, at once, loses nothing.

1,000,000 lines through a file source (4 files) and HTTP entries through an http source go
to two sinks: a file archive and an http destination that is down for 3 minutes, with
``retry.max_bytes: 8MiB`` (so most of the outage waits on disk, in the spool).
Meanwhile the retry process is killed -9 five times and the whole tree twice, and the
input files are rotated (renamed to a name the glob does not match) 20 times, twice while
the agent is down. Every line and every HTTP entry that was answered 200 arrives in both
sinks without any ``logcap dlq`` command; the summed RSS stays within +20 % of its level
before the outage; the DLQ ends empty. Duplicates are counted and reported.

``LOGCAP_CHAOS_OUTAGE_SECONDS`` shortens the outage for a quick run (default 180).
Report: /tmp/logcap-test-reports/chaos.json.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from logcap.dlq import reader
from tests._fault_helpers import process_gone, tree_rss
from tests.conftest import Agent, free_port, wait_for, write_config
from tests.test_retry_e2e import _destination, _listening, _RecordingServer

REPORTS = Path("/tmp/logcap-test-reports")
FILES, LINES = 4, 1_000_000
OUTAGE = float(os.environ.get("LOGCAP_CHAOS_OUTAGE_SECONDS", "180"))
BEFORE, AFTER = 20.0, 30.0
ROTATIONS, RETRY_KILLS, TREE_KILLS = 20, 5, 2
PAD = "c" * 150
SEED = 20261203


def _config(tmp_path: Path, address: str, ingest: int, remote: int) -> Path:
    return write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
  ingest: {{type: http, address: "127.0.0.1:{ingest}"}}
sinks:
  archive: {{type: file, path: "./out/{{source}}.ndjson"}}
  remote: {{type: http, url: "http://127.0.0.1:{remote}/ingest", timeout: 2s,
           circuit_breaker: {{failure_threshold: 3, open_duration: 2s}}}}
dispatcher: {{batch_timeout: 100ms}}
supervisor: {{restart_backoff: 100ms, shutdown_timeout: 60s}}
retry: {{max_bytes: 8MiB, initial_backoff: 500ms, max_backoff: 5s, max_attempts: 100000}}
""",
        address,
    )


class Inputs:
    """Writes the numbered lines at a steady pace, rotating files when asked."""

    def __init__(self, logs: Path, duration: float) -> None:
        self.logs = logs
        self.per_tick = LINES // FILES // int(duration / 0.1)
        self.written = 0  # per file
        self.rotations = 0
        self.lock = threading.Lock()
        self.done = threading.Event()

    def path(self, i: int) -> Path:
        return self.logs / f"app-{i}.log"

    def run(self, stop: threading.Event) -> None:
        start, tick = time.monotonic(), 0
        per_file = LINES // FILES
        while self.written < per_file and not stop.is_set():
            with self.lock:
                upto = min(per_file, self.written + self.per_tick)
                for i in range(FILES):
                    with open(self.path(i), "a") as out:
                        out.write(
                            "".join(f"f{i} {n:08d} {PAD}\n" for n in range(self.written, upto))
                        )
                self.written = upto
            tick += 1
            stop.wait(max(0.0, start + tick * 0.1 - time.monotonic()))
        self.done.set()

    def rotate(self, i: int) -> None:
        """Rename file ``i`` out of the glob; the writer starts a new one."""
        with self.lock:
            self.rotations += 1
            self.path(i).rename(self.logs / f"app-{i}.log.{self.rotations}")

    def expected(self) -> set[str]:
        return {f"f{i} {n:08d} {PAD}" for i in range(FILES) for n in range(LINES // FILES)}


class Ingest:
    """POSTs HTTP entries while it can; remembers those answered 200."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted: set[str] = set()
        self.refused = 0
        self.next = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(0.2):
            batch = [f"http {n:07d}" for n in range(self.next, self.next + 20)]
            self.next += 20
            body = "\n".join(json.dumps({"message": m}) for m in batch).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/api/v1/logs", data=body, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    if reply.status == 200:
                        self.accepted.update(batch)
                        continue
            except (OSError, urllib.error.HTTPError):
                pass
            self.refused += 1


def _archived(tmp_path: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in (tmp_path / "out").glob("*.ndjson"):
        with open(path, "rb") as f:
            for row in f:
                found[json.loads(row)["message"]] += 1
    return found


@pytest.mark.slow
def test_a_bad_day_loses_nothing(tmp_path: Path, start_agent: Callable[..., Agent]) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    address, ingest_port, remote_port = f"127.0.0.1:{free_port()}", free_port(), free_port()
    config = _config(tmp_path, address, ingest_port, remote_port)
    logs = tmp_path / "logs"
    logs.mkdir()
    duration = BEFORE + OUTAGE + AFTER * 0.5
    inputs, ingest = Inputs(logs, duration), Ingest(ingest_port)
    stop = threading.Event()
    received: list[str] = []  # what the destination got, across its restarts
    samples: list[tuple[str, int]] = []
    phase = "before"
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(lambda: _listening(ingest_port), 30, "the HTTP source")
    server_cm = _destination(remote_port)
    server: _RecordingServer = server_cm.__enter__()
    threads = [
        threading.Thread(target=inputs.run, args=(stop,)),
        threading.Thread(target=ingest.run, args=(stop,)),
    ]
    for thread in threads:
        thread.start()

    def sample_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append((phase, tree_rss(agent.process.pid)))
            time.sleep(1.0)

    kills: Counter[str] = Counter()
    try:
        sample_for(BEFORE)
        phase = "during"
        received += server.messages
        server_cm.__exit__(None, None, None)  # the destination goes down
        outage_end = time.monotonic() + OUTAGE
        # the events, spread evenly over the outage, in a seeded order
        events = ["retry"] * RETRY_KILLS + ["tree"] * TREE_KILLS
        events += ["rotate"] * (ROTATIONS - TREE_KILLS)
        rng.shuffle(events)
        gap = OUTAGE / (len(events) + 1)
        for event in events:
            sample_for(gap)
            if event == "retry":
                pid = agent.children()["retry:retry"]
                os.kill(pid, signal.SIGKILL)
                wait_for(
                    lambda p=pid, a=agent: a.children().get("retry:retry", p) != p, 60, "retry back"
                )
            elif event == "rotate":
                inputs.rotate(rng.randrange(FILES))
            else:
                children = agent.children()
                os.kill(agent.process.pid, signal.SIGKILL)
                agent.kill()
                wait_for(
                    lambda c=children: all(process_gone(p) for p in c.values()), 30, "tree gone"
                )
                inputs.rotate(rng.randrange(FILES))  # a rotation while the agent is down
                time.sleep(1.0)
                agent = start_agent(config, address)
                # up, not ready: the remote sink is down, so its circuit keeps /ready 503
                count = len(children)
                wait_for(lambda a=agent, n=count: _up(a, n), 60, "the agent back up")
            kills[event] += 1
        sample_for(max(0.0, outage_end - time.monotonic()))
        phase = "after"
        server_cm = _destination(remote_port)
        server = server_cm.__enter__()
        wait_for(inputs.done.is_set, 600, "every line written")
        stop.set()
        for thread in threads:
            thread.join()
        want = inputs.expected() | ingest.accepted

        def everywhere() -> bool:
            samples.append((phase, tree_rss(agent.process.pid)))
            time.sleep(2.0)  # reading the archive is not cheap
            return want <= set(received + server.messages) and want <= set(_archived(tmp_path))

        wait_for(everywhere, 600, "every line and 200-answered entry in both sinks")
        wait_for(lambda: agent.metric("logcap_retry_spool_batches") == 0, 120, "spool empty")
        assert agent.stop() == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        server_cm.__exit__(None, None, None)
    received += server.messages
    archived = _archived(tmp_path)
    dead = list(reader.scan(tmp_path / "data" / "dlq"))
    assert dead == [], f"{len(dead)} records left in the DLQ"
    assert not set(archived) - want - {m for m in archived if m.startswith("http ")}
    before = statistics.median(rss for p, rss in samples if p == "before" and rss)
    during = max(rss for p, rss in samples if p != "before")
    growth = during / before - 1
    remote = Counter(received)
    report = {
        "lines": LINES,
        "http_entries_accepted": len(ingest.accepted),
        "http_posts_refused": ingest.refused,
        "outage_seconds": OUTAGE,
        "events": dict(kills),
        "rotations": inputs.rotations,
        "archive_duplicates": sum(archived.values()) - len(archived),
        "remote_duplicates": sum(remote.values()) - len(remote),
        "rss_before_median_mib": round(before / 2**20, 1),
        "rss_max_after_mib": round(during / 2**20, 1),
        "rss_growth_percent": round(growth * 100, 1),
        "runtime_seconds": round(time.monotonic() - began, 1),
    }
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "chaos.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nchaos.json: {json.dumps(report)}")
    assert kills == {"retry": RETRY_KILLS, "tree": TREE_KILLS, "rotate": ROTATIONS - TREE_KILLS}
    assert inputs.rotations == ROTATIONS
    assert growth <= 0.20, f"resident memory grew {growth:.0%} during or after the outage"


def _up(agent: Agent, children: int) -> bool:
    """The restarted agent answers and runs all its ``children`` processes."""
    try:
        status = agent.get("/health")[0]
    except OSError:
        return False
    return status == 200 and len(agent.children()) == children
