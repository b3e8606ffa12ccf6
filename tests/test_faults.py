"""Issue 3's acceptance tests: at-least-once delivery through faults, with real processes.

* SIGKILL of any process of a running agent (collector, dispatcher, a sink, the retry
  process, the supervisor itself) at random moments, 24 times while 1,000,000 lines are
  appended: every line reaches the file sink; duplicates are counted and reported.
* A sink's disk full for 30 s (a tmpfs the test fills): the healthy sink beside it gets
  every line exactly once and in order, the failing one gets every line either later
  (retried) or in the dead letter queue (retry spool overflow), and memory stays bounded.
* A permanent failure goes to the dead letter queue on its first attempt.
* A file sink killed inside a write leaves no torn entry once it is restarted.
* Damaged state at start: a garbage checkpoint (the ``.prev`` copy is used) and a torn
  last DLQ record (the agent starts, and old and new records stay readable).

Reports for the record go to /tmp/logcap-test-reports/ (kill9.json, outage.json).
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from logcap.dispatch.checkpoint import CheckpointStore
from logcap.dlq.record import Problem, read_segment
from logcap.dlq.writer import segment_paths
from tests._fault_helpers import (
    OutputFollower,
    Tally,
    append_lines,
    dlq_payload,
    dlq_records,
    fill,
    process_gone,
    tmpfs,
    tree_rss,
)
from tests.conftest import Agent, free_port, wait_for, write_config

REPORTS = Path("/tmp/logcap-test-reports")
SHM = Path("/dev/shm")
PAD = b"k" * 120
SEED = 20240603


def _report(name: str, report: dict[str, object]) -> None:
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / name).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{name}: {json.dumps(report)}")


# -- kill -9 ---------------------------------------------------------------------------

KILL9_FILES, KILL9_PER_FILE, KILL9_ROUND = 8, 125_000, 500
VICTIMS = [
    "collector:app",
    "dispatcher:dispatcher",
    "sink:archive",
    "sink:devnull",
    "retry:retry",
    "supervisor",
]


def _kill9_config(tmp_path: Path, address: str) -> Path:
    return write_config(
        tmp_path,
        """
data_dir: ./data
sources:
  app: {type: file, include: ["./logs/*.log"]}
sinks:
  archive: {type: file, path: "./out/{source}.ndjson"}
  devnull: {type: blackhole}
dispatcher: {batch_timeout: 50ms}  # the default checkpoint_interval: what duplicates it costs
supervisor: {restart_backoff: 100ms}
""",
        address,
    )


@pytest.mark.slow
def test_sigkill_of_any_process_at_random_moments_loses_no_line(
    tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    address = f"127.0.0.1:{free_port()}"
    config = _kill9_config(tmp_path, address)
    (tmp_path / "logs").mkdir()
    files = [tmp_path / "logs" / f"f{i}.log" for i in range(KILL9_FILES)]
    for path in files:
        path.touch()
    schedule = VICTIMS * 4  # 24 kills, every role four times, in a seeded order
    rng.shuffle(schedule)
    rounds = KILL9_PER_FILE // KILL9_ROUND
    kills_done = 0
    killing_over = threading.Event()
    appended = threading.Event()
    failure: list[BaseException] = []

    def appender() -> None:
        # rounds are spread over the kill schedule, so every kill meets lines in flight
        pace = random.Random(SEED + 1)
        try:
            for r in range(rounds):
                while kills_done < r * len(schedule) // rounds and not killing_over.is_set():
                    time.sleep(0.02)
                numbers = range(r * KILL9_ROUND, (r + 1) * KILL9_ROUND)
                for i, path in enumerate(files):
                    append_lines(path, i, numbers, PAD)
                time.sleep(pace.uniform(0.0, 0.1))
        except BaseException as exc:  # surfaced by the main thread
            failure.append(exc)
        finally:
            appended.set()

    agent = start_agent(config, address)
    supervisors = [agent.process.pid]
    kills: Counter[str] = Counter()
    writer = threading.Thread(target=appender, daemon=True)
    writer.start()
    try:
        for victim in schedule:
            agent.wait_ready(timeout=60)
            children = agent.children()
            assert set(children) == set(VICTIMS) - {"supervisor"}
            time.sleep(rng.uniform(0.05, 1.0))
            if victim == "supervisor":
                os.kill(agent.process.pid, signal.SIGKILL)
                agent.kill()  # reaps it
                # PR_SET_PDEATHSIG: the children die with it
                wait_for(
                    lambda c=children: all(process_gone(pid) for pid in c.values()),
                    10,
                    "the children of the killed supervisor to die with it",
                )
                agent = start_agent(config, address)  # as systemd would
                supervisors.append(agent.process.pid)
            else:
                pid = children[victim]
                os.kill(pid, signal.SIGKILL)
                wait_for(
                    lambda a=agent, v=victim, p=pid: a.children().get(v, p) != p,
                    60,
                    f"{victim} to be restarted",
                )
            kills[victim] += 1
            kills_done += 1
    finally:
        killing_over.set()
        writer.join(timeout=120)
    assert not failure, failure
    assert appended.is_set()

    tally = Tally(KILL9_FILES, KILL9_PER_FILE, PAD)
    output = OutputFollower(tmp_path / "out" / "app.ndjson", tally)
    agent.wait_ready(timeout=60)
    wait_for(lambda: output.poll().missing() == 0, 180, "every line in the file sink")
    assert agent.stop() == 0
    output.poll()

    assert tally.missing() == 0
    assert tally.strangers == 0
    # a sink killed inside write(2) leaves a fragment; its restart cuts it off before the
    # batch is written again, so no torn entry may remain anywhere in the output
    assert tally.torn == [], f"torn entries in the output: {tally.torn[:3]}"
    assert sum(kills.values()) >= 20
    for pid in supervisors:  # each run's segments: swept by the next run, or removed at exit
        assert not list(SHM.glob(f"logcap-{pid}-*")), f"segments of run {pid} left behind"
    total = KILL9_FILES * KILL9_PER_FILE
    _report(
        "kill9.json",
        {
            "seed": SEED,
            "total_lines": total,
            "entries_in_output": tally.entries,
            "duplicates": tally.duplicates,
            "duplicate_ratio": round(tally.duplicates / total, 4),
            "torn_entries": len(tally.torn),
            "kills": sum(kills.values()),
            "kills_by_role": dict(sorted(kills.items())),
            "agent_starts": len(supervisors),
            "runtime_seconds": round(time.monotonic() - began, 1),
        },
    )


# -- a sink's disk full for 30 s ----------------------------------------------------------

OUTAGE_FILES, TICK, PER_TICK = 4, 0.1, 83  # 4 * 83 lines per 0.1 s ≈ 200,000 lines/min
BEFORE, OUTAGE, AFTER = 12.0, 30.0, 18.0
OUTAGE_PAD = b"o" * 100


def _outage_config(tmp_path: Path, address: str, flaky: Path) -> Path:
    return write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  healthy: {{type: file, path: "./out/{{source}}.ndjson"}}
  flaky: {{type: file, path: "{flaky}/{{source}}.ndjson"}}
dispatcher: {{batch_timeout: 100ms, checkpoint_interval: 200ms}}
supervisor: {{restart_backoff: 100ms}}
retry: {{max_bytes: 2MiB, spool_max_bytes: 4MiB, initial_backoff: 200ms, max_backoff: 2s,
        max_attempts: 1000}}
""",
        address,
    )


@pytest.mark.slow
def test_a_full_disk_on_one_sink_loses_nothing_and_memory_stays_bounded(
    tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    began = time.monotonic()
    # the flaky sink's output alone is ~1 MB/s: 64 MiB hold the run, a filler the rest
    with tmpfs(tmp_path / "flaky", "64m") as mount:
        address = f"127.0.0.1:{free_port()}"
        (tmp_path / "logs").mkdir()
        files = [tmp_path / "logs" / f"f{i}.log" for i in range(OUTAGE_FILES)]
        agent = start_agent(_outage_config(tmp_path, address, mount), address)
        agent.wait_ready()
        phase = "before"
        samples: list[tuple[float, str, int]] = []
        written = 0  # lines per file so far
        recovered_at = 0  # lines per file when the disk had space again
        stop = threading.Event()

        def writer() -> None:
            nonlocal written
            start = time.monotonic()
            tick = 0
            while not stop.is_set():
                for i, path in enumerate(files):
                    append_lines(path, i, range(written, written + PER_TICK), OUTAGE_PAD)
                written += PER_TICK
                tick += 1
                # paced by the clock: a late tick is made up, not dropped
                stop.wait(max(0.0, start + tick * TICK - time.monotonic()))

        def sampler() -> None:
            start = time.monotonic()
            while not stop.wait(1.0):
                samples.append(
                    (round(time.monotonic() - start, 1), phase, tree_rss(agent.process.pid))
                )

        threads = [threading.Thread(target=writer), threading.Thread(target=sampler)]
        for thread in threads:
            thread.start()
        filler = mount / "filler"
        try:
            time.sleep(BEFORE)
            phase = "during"
            fill(filler)
            time.sleep(OUTAGE)
            filler.unlink()
            phase, recovered_at = "after", written
            time.sleep(AFTER)
            stop.set()
            for thread in threads:
                thread.join()

            healthy = OutputFollower(
                tmp_path / "out" / "app.ndjson",
                Tally(OUTAGE_FILES, written, OUTAGE_PAD, keep_order=True),
            )
            flaky = OutputFollower(mount / "app.ndjson", Tally(OUTAGE_FILES, written, OUTAGE_PAD))
            wait_for(lambda: healthy.poll().missing() == 0, 60, "every line in the healthy sink")
            # the failed batches are either retried or in the DLQ: nothing left in the heap
            wait_for(
                lambda: (
                    agent.metric("logcap_retry_heap_entries") == 0
                    and agent.metric("logcap_retry_spool_batches") == 0
                    and agent.metric("logcap_ring_used_slots", ring="batches") == 0
                ),
                60,
                "the retry heap to empty",
            )
            metrics = {
                "retries_disk_full": agent.metric(
                    "logcap_retries_total", component="flaky", reason="disk_full"
                ),
                "dlq_overflow": agent.metric(
                    "logcap_dlq_records_total", component="flaky", reason="overflow"
                ),
                "retry_delivered": agent.metric("logcap_retry_delivered_total", component="flaky"),
            }
            assert agent.stop() == 0
        finally:
            stop.set()
            for thread in threads:
                if thread.ident is not None:
                    thread.join()
            filler.unlink(missing_ok=True)
        healthy.poll()
        flaky.poll()

    total = OUTAGE_FILES * written
    assert healthy.tally.torn == [] and healthy.tally.strangers == 0
    assert healthy.tally.order == [list(range(written))] * OUTAGE_FILES, (
        "the healthy sink lost, duplicated or reordered lines"
    )
    dead = Tally(OUTAGE_FILES, written, OUTAGE_PAD)
    records = dlq_records(tmp_path / "data" / "dlq")
    for record in records:
        assert record.sink == "flaky"
        dead.feed(dlq_payload(record))
    assert flaky.tally.torn == [] and flaky.tally.strangers == dead.strangers == 0
    lost = [
        (i, n)
        for i in range(OUTAGE_FILES)
        for n in range(written)
        if not (flaky.tally.counts[i][n] or dead.counts[i][n])
    ]
    assert not lost, f"{len(lost)} lines neither delivered nor in the DLQ, e.g. {lost[:5]}"
    # once the disk had space again, new lines went through (a second of margin)
    late = recovered_at + int(1 / TICK) * PER_TICK
    assert flaky.tally.missing() - flaky.tally.missing(late) == 0, "no recovery after the outage"
    assert metrics["retries_disk_full"] > 0
    assert metrics["dlq_overflow"] > 0 and any(r.kind == "overflow" for r in records)
    assert metrics["retry_delivered"] > 0, "no batch was delivered by a retry after recovery"

    before = statistics.median(rss for _, p, rss in samples if p == "before")
    during = max(rss for _, p, rss in samples if p == "during")
    after = max(rss for _, p, rss in samples if p == "after")
    growth = max(during, after) / before - 1
    summary = {
        "lines": total,
        "lines_per_minute": round(total / (BEFORE + OUTAGE + AFTER) * 60),
        "in_flaky_output": flaky.tally.entries,
        "in_dlq": dead.entries,
        "dlq_records_by_kind": dict(Counter(r.kind for r in records)),
        **metrics,
        "rss_before_median_mib": round(before / 2**20, 1),
        "rss_during_max_mib": round(during / 2**20, 1),
        "rss_after_max_mib": round(after / 2**20, 1),
        "rss_growth_percent": round(growth * 100, 1),
        "runtime_seconds": round(time.monotonic() - began, 1),
        "rss_curve": [{"t": t, "phase": p, "rss": rss} for t, p, rss in samples],
    }
    _report("outage.json", summary)
    assert growth <= 0.20, f"resident memory grew {growth:.0%} during or after the outage"


# -- permanent failures, damaged state at start --------------------------------------------

SMALL_PAD = b"s" * 100


TOO_LONG = "n" * 300  # a file name no file system takes (ENAMETOOLONG: permanent)


def _dlq_config(tmp_path: Path, address: str) -> Path:
    """A healthy file sink, and one that can never write: its file name is too long for
    any file system (a directory that is a file, by contrast, is an environment error a
    person can fix, and retryable)."""
    return write_config(
        tmp_path,
        """
data_dir: ./data
sources:
  app: {type: file, include: ["./logs/*.log"]}
sinks:
  healthy: {type: file, path: "./out/{source}.ndjson"}
  broken: {type: file, path: "./out/{source}-TOO_LONG.ndjson"}
dispatcher: {batch_timeout: 50ms, checkpoint_interval: 200ms}
""".replace("TOO_LONG", TOO_LONG),
        address,
    )


def _run_until(
    start_agent: Callable[..., Agent],
    config: Path,
    address: str,
    done: Callable[[Agent], bool],
    what: str,
) -> Agent:
    """Start the agent, wait until ``done``, stop it gracefully."""
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(lambda: done(agent), 60, what)
    assert agent.stop() == 0
    return agent


def test_a_permanent_failure_goes_to_the_dlq_on_the_first_attempt(
    tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    files, per_file = 2, 5_000
    for i in range(files):
        append_lines(tmp_path / "logs" / f"f{i}.log", i, range(per_file), SMALL_PAD)
    healthy = OutputFollower(tmp_path / "out" / "app.ndjson", Tally(files, per_file, SMALL_PAD))
    observed: dict[str, float] = {}

    def done(agent: Agent) -> bool:
        if healthy.poll().missing() or (
            agent.metric("logcap_dlq_entries_total", component="broken") < files * per_file
        ):
            return False
        observed["permanent"] = agent.metric(
            "logcap_dlq_records_total", component="broken", reason="permanent"
        )
        observed["retries"] = agent.metric("logcap_retries_total", component="broken")
        return True

    _run_until(start_agent, _dlq_config(tmp_path, address), address, done, "every line")

    assert healthy.tally.entries == files * per_file, "the healthy sink got duplicates"
    records = dlq_records(tmp_path / "data" / "dlq")
    assert records and observed["permanent"] == len(records)
    assert observed["retries"] == 0, "a permanent failure was retried"
    dead = Tally(files, per_file, SMALL_PAD)
    for record in records:
        assert (record.sink, record.kind, record.attempts) == ("broken", "permanent", 1)
        assert "File name too long" in record.reason
        dead.feed(dlq_payload(record))
    assert dead.missing() == 0 and dead.duplicates == 0 and dead.strangers == 0


def test_a_garbage_checkpoint_falls_back_to_the_previous_copy(
    tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    source = tmp_path / "logs" / "f0.log"
    config = write_config(
        tmp_path,
        """
data_dir: ./data
sources:
  app: {type: file, include: ["./logs/*.log"]}
sinks:
  archive: {type: file, path: "./out/{source}.ndjson"}
dispatcher: {batch_timeout: 50ms, checkpoint_interval: 200ms}
""",
        address,
    )
    step, runs = 3_000, 3
    output = OutputFollower(tmp_path / "out" / "app.ndjson", Tally(1, step * runs, SMALL_PAD))
    # two runs leave a checkpoint and its previous copy, the first one's final positions
    for run in range(2):
        append_lines(source, 0, range(run * step, (run + 1) * step), SMALL_PAD)
        _run_until(
            start_agent,
            config,
            address,
            lambda _, n=(run + 1) * step: output.poll().missing(n) == 0,
            f"run {run + 1}'s lines",
        )
    checkpoint = tmp_path / "data" / "checkpoints.json"
    assert checkpoint.exists() and checkpoint.with_suffix(".json.prev").exists()
    checkpoint.write_bytes(b"\x00garbage{{{" * 20)

    append_lines(source, 0, range(2 * step, 3 * step), SMALL_PAD)
    agent = _run_until(
        start_agent, config, address, lambda _: output.poll().missing() == 0, "every line"
    )

    assert "checkpoint unusable" in agent.log.read_text()
    # the first run's lines were acknowledged before .prev was written: never read again
    assert all(count == 1 for count in output.tally.counts[0][:step])
    assert output.tally.torn == [] and output.tally.strangers == 0
    # the garbage was replaced by a good checkpoint covering the whole file
    checkpoint.with_suffix(".json.prev").unlink()
    stat = source.stat()
    (saved,) = CheckpointStore(tmp_path / "data").load().files
    assert (saved.source, saved.path, saved.dev, saved.ino, saved.offset) == (
        "app",
        str(source),
        stat.st_dev,
        stat.st_ino,
        stat.st_size,
    )
    assert saved.fingerprint  # the file is known by its first bytes too


# a crash while appending a large record may leave only its first bytes
@pytest.mark.parametrize("tear", ["a_few_bytes", "most_of_a_large_record"])
def test_a_torn_last_dlq_record_keeps_old_and_new_records_readable(
    tmp_path: Path, start_agent: Callable[..., Agent], tear: str
) -> None:
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    source = tmp_path / "logs" / "f0.log"
    config = _dlq_config(tmp_path, address)
    first, last_batch, later = 3_000, 500, 20
    total = first + last_batch + later
    healthy = OutputFollower(tmp_path / "out" / "app.ndjson", Tally(1, total, SMALL_PAD))

    def dlq_holds(entries: int) -> Callable[[Agent], bool]:
        return lambda agent: (
            healthy.poll().missing(entries) == 0
            and agent.metric("logcap_dlq_entries_total", component="broken") == entries
        )

    append_lines(source, 0, range(first), SMALL_PAD)
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(lambda: dlq_holds(first)(agent), 60, "the first lines in the DLQ")
    # the last record: one batch of its own, larger than what the next run adds
    append_lines(source, 0, range(first, first + last_batch), SMALL_PAD)
    wait_for(lambda: dlq_holds(first + last_batch)(agent), 60, "the last batch in the DLQ")
    assert agent.stop() == 0

    dlq = tmp_path / "data" / "dlq"
    before = dlq_records(dlq)
    assert before[-1].entries == last_batch
    segment = segment_paths(dlq)[-1]
    last_offset = [offset for offset, _ in read_segment(segment)][-1]
    size = segment.stat().st_size
    os.truncate(segment, size - 5 if tear == "a_few_bytes" else last_offset + 12 + 16)

    append_lines(source, 0, range(first + last_batch, total), SMALL_PAD)
    agent = _run_until(
        start_agent, config, address, lambda a: dlq_holds(later)(a), "the new lines in the DLQ"
    )

    assert "torn record at the end" in agent.log.read_text()
    problems: list[Problem] = []
    after = dlq_records(dlq, problems)
    assert problems, "the torn record went unnoticed"
    assert after[: len(before) - 1] == before[:-1], "complete records were lost"
    new = Tally(1, total, SMALL_PAD)
    for record in after[len(before) - 1 :]:
        assert record.sink == "broken"
        new.feed(dlq_payload(record))
    assert new.missing(first + last_batch) == first + last_batch, "a torn record was read"
    assert new.missing() - new.missing(first + last_batch) == 0, "the new records are unreadable"


def test_a_file_sink_killed_in_the_middle_of_a_write_leaves_no_torn_entry(
    tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    # SIGKILL ends a write(2) to a regular file after the pages copied so far: with one
    # big batch per write, killing the sink as soon as its output grows tears an entry
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    config = write_config(
        tmp_path,
        """
data_dir: ./data
sources:
  app: {type: file, include: ["./logs/*.log"]}
sinks:
  archive: {type: file, path: "./out/{source}.ndjson"}
dispatcher: {batch_max_events: 1000000, batch_max_bytes: 16MiB, batch_timeout: 1s}
buffer: {batch_slots: 2}
supervisor: {restart_backoff: 100ms}
""",
        address,
    )
    source, output = tmp_path / "logs" / "f0.log", tmp_path / "out" / "app.ndjson"
    chunk, attempts = 40_000, 5
    agent = start_agent(config, address)
    agent.wait_ready()
    torn_tails = 0
    for attempt in range(attempts):
        pid = agent.children()["sink:archive"]
        size = output.stat().st_size if output.exists() else 0
        append_lines(source, 0, range(attempt * chunk, (attempt + 1) * chunk), SMALL_PAD)
        deadline = time.monotonic() + 30
        while (output.stat().st_size if output.exists() else 0) == size:
            assert time.monotonic() < deadline, "the sink never wrote"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda p=pid: process_gone(p), 10, "the sink to die")
        with open(output, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn_tails += f.read(1) != b"\n"
        wait_for(
            lambda p=pid: agent.children().get("sink:archive", p) != p, 30, "a new sink process"
        )
        agent.wait_ready()
        if torn_tails:
            break
    assert torn_tails, "never killed the sink in the middle of a write; nothing was tested"
    lines = (attempt + 1) * chunk
    follower = OutputFollower(output, Tally(1, lines, SMALL_PAD))
    wait_for(lambda: follower.poll().missing() == 0, 60, "every line")
    assert agent.stop() == 0
    follower.poll()
    assert follower.tally.torn == [], "a torn entry was left in the middle of the output"
