"""Rotation while the collector is down or behind (issue 9 item 8), through the real agent.

A file renamed to a name the patterns miss (``app.log`` → ``app.log.1`` under
``*.log``) while the agent was stopped, killed, or its collector stalled or restarted,
still holds lines nobody read. Every scenario makes sure it does (the collector is
SIGSTOPped before the lines are written, and the checkpoint is checked to end before the
file's end), rotates, and checks that every line arrives: exactly once after a graceful
stop or a stall, at least once after a kill -9 (duplicates are counted and reported).
Results go to /tmp/logcap-test-reports/rotation_while_down.json.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logcap.dispatch.checkpoint import CheckpointStore, FilePosition
from tests._rotation_helpers import (
    REPORT_PATH,
    NumberedLog,
    Outcome,
    Report,
    Scenario,
    shift_rotate,
)
from tests.conftest import Agent, wait_for

REPORT = Report(
    REPORT_PATH.with_name("rotation_while_down.json"), "tests/test_rotation_while_down.py"
)
StartAgent = Callable[..., Agent]
UNREAD = 50_000  # lines written while the collector is stalled: far more than one block
STOPS = pytest.mark.parametrize("how", ["sigterm", "kill-9"])


@pytest.fixture(scope="module", autouse=True)
def _write_report() -> Iterator[None]:
    began = time.monotonic()
    yield
    REPORT.write(began)


def _saved(data_dir: Path, path: Path) -> FilePosition:
    st = path.stat()
    return CheckpointStore(data_dir).positions_for("app")[(st.st_dev, st.st_ino)]


def _checkpointed(data_dir: Path, path: Path) -> bool:
    """The file has a checkpoint entry (a kill -9 keeps only what was saved)."""
    st = path.stat()
    return (st.st_dev, st.st_ino) in CheckpointStore(data_dir).positions_for("app")


def _assert_delivered(result: Outcome, how: str) -> None:
    assert (result.lost, result.unexpected) == (0, 0), result
    if how != "kill-9":  # a graceful stop or a stall delivers exactly once
        assert result.duplicated == 0, result


def _stall(s: Scenario, agent: Agent) -> int:
    collector = agent.children()["collector:app"]
    os.kill(collector, signal.SIGSTOP)
    return collector


@STOPS
def test_file_renamed_out_of_the_patterns_while_the_agent_is_down_is_read_to_its_end(
    tmp_path: Path, start_agent: StartAgent, how: str
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    app = NumberedLog(s.logs / "app.log", "app")
    app.write(1000)
    agent = s.start()
    s.wait_delivered(app.ids)
    wait_for(lambda: _checkpointed(tmp_path / "data", app.path), 30, "a checkpoint of app.log")
    collector = _stall(s, agent)
    app.write(UNREAD)
    s.stop_behind(collector, how)
    saved = _saved(tmp_path / "data", app.path)
    unread = app.path.stat().st_size - saved.offset
    assert unread > 0, "the agent was stopped with every line read: the test tests nothing"
    shift_rotate(app.path)  # app.log -> app.log.1, which *.log does not match
    app.reopen()
    app.write(1000)
    s.start()
    s.wait_delivered(app.ids)
    result = s.finish(app.ids)
    REPORT.add(f"renamed_while_down_{how}", result, unread_bytes_at_stop=unread)
    _assert_delivered(result, how)


@pytest.mark.parametrize("collector_fate", ["resumed", "killed"])
def test_file_renamed_out_of_the_patterns_while_the_collector_is_stalled_is_read_to_its_end(
    tmp_path: Path, start_agent: StartAgent, collector_fate: str
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    app = NumberedLog(s.logs / "app.log", "app")
    app.write(1000)
    agent = s.start()
    s.wait_delivered(app.ids)
    collector = _stall(s, agent)
    app.write(UNREAD)
    shift_rotate(app.path)
    app.reopen()
    app.write(1000)
    if collector_fate == "resumed":  # it still has the old file open
        os.kill(collector, signal.SIGCONT)
    else:  # the supervisor restarts it alone; only the checkpoint knows the old file
        os.kill(collector, signal.SIGKILL)
        wait_for(
            lambda: agent.children().get("collector:app", collector) != collector,
            30,
            "the collector to be restarted",
        )
    s.wait_delivered(app.ids)
    result = s.finish(app.ids)
    REPORT.add(f"renamed_while_collector_stalled_{collector_fate}", result)
    _assert_delivered(result, "kill-9" if collector_fate == "killed" else "resumed")


def test_logrotate_while_the_agent_is_down_five_times_loses_no_line(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    """The issue's measurement: 5 rotations of 300,000-line files, each while the agent is
    down after being stopped behind (alternately SIGTERM and kill -9), lost 272,056 of
    1,500,000 lines. logrotate's numbered scheme, every rotated file kept: each start
    reads on in files renamed once or several times since they were checkpointed."""
    cycles, per_file = 5, 300_000
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    app = NumberedLog(s.logs / "app.log", "app")
    unread: list[int] = []
    began = time.monotonic()
    for cycle in range(cycles):
        agent = s.start()
        # the agent reads a third of the file, then falls behind (here: its collector is
        # stalled) while the rest is written, and is stopped
        s.wait_delivered(app.write(per_file // 3))
        collector = _stall(s, agent)
        app.write(per_file - per_file // 3)
        how = "sigterm" if cycle % 2 == 0 else "kill-9"
        s.stop_behind(collector, how)
        unread.append(app.path.stat().st_size - _saved(tmp_path / "data", app.path).offset)
        shift_rotate(app.path)  # app.log.N -> app.log.N+1, app.log -> app.log.1, new app.log
        app.reopen()
    s.start()
    s.wait_delivered(app.ids, timeout=300)
    delivered_after = time.monotonic() - began
    result = s.finish(app.ids)
    REPORT.add(
        "logrotate_while_down_5x300000",
        result,
        cycles=cycles,
        lines_per_file=per_file,
        unread_bytes_at_each_stop=unread,
        all_delivered_after_s=round(delivered_after, 1),
    )
    assert all(unread), f"a stop found every line read: {unread}"
    assert (result.lost, result.unexpected) == (0, 0), result


def test_checkpoint_entries_of_deleted_files_are_pruned_and_no_other(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    logs = {name: NumberedLog(s.logs / f"{name}.log", name) for name in ("down", "up", "kept")}
    for log in logs.values():
        log.write(100)
    s.start()
    s.wait_delivered([i for log in logs.values() for i in log.ids])
    s.stop()
    keys = {name: (log.path.stat().st_dev, log.path.stat().st_ino) for name, log in logs.items()}
    saved = CheckpointStore(tmp_path / "data")

    def entries() -> set[str]:
        held = {(p.dev, p.ino) for p in saved.load().files}
        return {name for name, key in keys.items() if key in held}

    assert entries() == {"down", "up", "kept"}
    logs["down"].close()
    logs["down"].path.unlink()  # while the agent is down
    s.start()
    wait_for(lambda: entries() == {"up", "kept"}, 30, "the entry of the file gone to go")
    logs["up"].close()
    logs["up"].path.unlink()  # while it runs: closed after the retirement grace
    wait_for(lambda: entries() == {"kept"}, 30, "the entry of the file deleted to go")
    result = s.finish([i for log in logs.values() for i in log.ids])
    REPORT.add("checkpoint_pruning", result)
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0), result
    assert entries() == {"kept"}
