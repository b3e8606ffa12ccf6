"""The docker source killed again and again while a container writes both streams fast.

Docker stamps stdout and stderr in two threads, so in the log file a line often follows
one of the other stream stamped after it; a resume from one time for both streams skips
such a line whenever a checkpoint falls just before it. Here the whole agent is killed
with SIGKILL five times while a container's two writer processes print side by side,
and the source's output is compared with what the daemon itself holds: nothing lost.

Such lines are rare (30 to 90 in 125,000 to 185,000 here) and a checkpoint must fall just before
one, so this test rarely catches a single time for both streams (it passed with one);
the deterministic cut-by-cut test in test_docker_resume.py does. This one checks the
per-stream positions against a real daemon's ``since``, and that the race did happen.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from tests._docker_helpers import (
    Dockerd,
    EntryTail,
    agent_config,
    create_file,
    docker_log,
    kill_tree,
    two_stream_script,
    wait_until_exited,
)
from tests._waiting import wait_for

KILLS = 5
LINES_BETWEEN_KILLS = 20_000


def _lines(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["labels"]["stream"], e["message"]) for e in entries]


class _Seen:
    """The distinct lines delivered so far, kept up to date as the output grows."""

    def __init__(self, out: EntryTail) -> None:
        self.out = out
        self.lines: set[tuple[str, str]] = set()
        self.checked = 0

    def count(self) -> int:
        entries = self.out.poll()
        self.lines.update(_lines(entries[self.checked :]))
        self.checked = len(entries)
        return len(self.lines)


def _checkpoint(tmp_path: Path) -> bytes:
    path = tmp_path / "data" / "checkpoints.json"
    return path.read_bytes() if path.exists() else b""


def _wait_for_progress(tmp_path: Path, seen: _Seen, what: str) -> None:
    """New lines delivered, and a checkpoint saved since this life began: each kill
    then resumes from a new position, not again from the last life's."""
    target = seen.count() + LINES_BETWEEN_KILLS
    saved = _checkpoint(tmp_path)
    wait_for(
        lambda: seen.count() >= target and _checkpoint(tmp_path) != saved,
        120,
        what,
    )


def _stamps_going_back(container: Any) -> int:
    """Lines of the daemon's log file stamped before a line written ahead of them (each
    one a line a single time for both streams could skip on resume)."""
    newest, behind = "", 0
    for line in container.logs(timestamps=True).decode().splitlines():
        stamp = line.split(" ", 1)[0]  # fixed width, 9 fraction digits: compares as text
        behind += stamp < newest
        newest = max(newest, stamp)
    return behind


def test_both_streams_written_fast_lose_nothing_across_five_kills(
    tmp_path: Path, docker_daemon: Dockerd, start_agent
) -> None:
    daemon = docker_daemon
    config, address = agent_config(tmp_path, daemon)
    agent = start_agent(config, address)
    agent.wait_ready()
    out = EntryTail(tmp_path / "out" / "d.ndjson")
    box = daemon.run("both", two_stream_script("both"))
    seen = _Seen(out)
    for kill in range(KILLS):
        _wait_for_progress(tmp_path, seen, f"new lines and a checkpoint before kill {kill + 1}")
        kill_tree(agent)
        agent = start_agent(config, address)
        agent.wait_ready()
    create_file(box, "/stop")
    wait_until_exited(daemon, ["both"])
    truth = docker_log(box)
    wait_for(lambda: seen.count() >= len(set(truth)), 180, "every line of the container")
    assert agent.stop() == 0

    delivered = collections.Counter(_lines(out.poll()))
    assert not set(truth) - set(delivered)  # nothing lost
    assert set(delivered) == set(truth)  # nothing made up, each on its own stream
    going_back = _stamps_going_back(box)
    assert going_back > 0, "the daemon stamped both streams in order: the race never ran"
    duplicates = sum(delivered.values()) - len(delivered)
    print(
        f"\n{len(truth)} lines, {going_back} stamped before a line ahead of them, "
        f"{duplicates} duplicates after {KILLS} kills"
    )
