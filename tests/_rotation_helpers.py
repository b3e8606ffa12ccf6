"""Helpers of tests/test_rotation.py: numbered log lines, an application that writes and
reopens its log, logrotate-style rotations, a scenario running the real agent with a file
sink, an incremental tally of what it delivered, and the JSON report."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.conftest import Agent, free_port, wait_for, write_config

PAD = b"." * 60
REPORT_PATH = Path("/tmp/logcap-test-reports/rotation.json")
QUIET = 1.0  # output unchanged this long (5 glob intervals) before a run is stopped


def line(tag: str, number: int, pad: bytes = PAD) -> bytes:
    """Line ``number`` of stream ``tag``; its first two words (see :func:`line_id`) name it."""
    return b"%s %08d %s\n" % (tag.encode(), number, pad)


def line_id(tag: str, number: int) -> str:
    """The id of a line: what :func:`entry_id` reads back from the delivered message."""
    return f"{tag} {number:08d}"


def entry_id(message: str) -> str:
    """The id at the start of a delivered message."""
    return " ".join(message.split(" ", 2)[:2])


class NumberedLog:
    """An application's log: numbered lines appended through a descriptor it keeps open
    and reopens after a rotation (as a program does when logrotate signals it)."""

    def __init__(self, path: Path, tag: str, pad: bytes = PAD) -> None:
        self.path = path
        self.tag = tag
        self.pad = pad
        self.next = 0
        self.ids: list[str] = []
        self.fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, count: int) -> list[str]:
        """Append ``count`` numbered lines in one write; return their ids."""
        numbers = range(self.next, self.next + count)
        os.write(self.fd, b"".join(line(self.tag, n, self.pad) for n in numbers))
        self.next += count
        new = [line_id(self.tag, n) for n in numbers]
        self.ids += new
        return new

    def reopen(self) -> None:
        """Start writing to whatever file is at ``path`` now (creating it if needed)."""
        os.close(self.fd)
        self.fd = self._open()

    def close(self) -> None:
        os.close(self.fd)


def held_inodes(pid: int) -> set[int]:
    """Inodes of the files process ``pid`` has open (deleted ones included)."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
        except OSError:
            continue  # closed meanwhile
    return held


def signal_pending(pid: int, sig: int) -> bool:
    """Whether ``sig`` waits for delivery to process ``pid`` (e.g. while it is stopped)."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = [
        int(row.split()[1], 16) for row in status.splitlines() if row[:6] in ("SigPnd", "ShdPnd")
    ]
    return any(mask >> (sig - 1) & 1 for mask in masks)


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def at_a_second_start() -> None:
    """Sleep until a wall-clock second has just begun.

    ext4 hands a freed inode to the next file created, except (without a journal, as
    here) one freed in an earlier second: that is passed over for ~30 s. A test that
    wants an inode reused frees it and creates the new file within one second."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def create_on_freed_inode(path: Path, inode: int, decoys: int = 5000) -> bool:
    """Create ``path`` (empty), trying until the second ends to get the freed ``inode``;
    True if it did. ``path`` exists afterwards either way.

    ext4 takes the lowest free inode of the directory's group: files that get a lower one
    are kept (as hidden ``.decoy-N`` files, which no pattern here matches) until ours
    comes up, then removed."""
    second = int(time.time())
    taken: list[Path] = []
    try:
        for n in range(decoys):
            path.touch()
            if path.stat().st_ino == inode:
                return True
            if int(time.time()) != second:
                return False
            taken.append(path.with_name(f".decoy-{n}"))
            os.rename(path, taken[-1])
        path.touch()
        return False
    finally:
        for decoy in taken:
            decoy.unlink()


def shift_rotate(path: Path, keep: int | None = None) -> None:
    """logrotate without copytruncate: ``path.N`` → ``path.N+1`` (the oldest beyond
    ``keep`` deleted), ``path`` → ``path.1``, then a new empty ``path``."""
    numbered = sorted(
        (int(p.name.rsplit(".", 1)[1]), p)
        for p in path.parent.glob(path.name + ".*")
        if p.name.rsplit(".", 1)[1].isdigit()
    )
    for n, old in reversed(numbered):
        if keep is not None and n >= keep:
            old.unlink()
        else:
            os.rename(old, f"{path}.{n + 1}")
    os.rename(path, f"{path}.1")
    path.touch()


def copy_truncate(path: Path, between: Callable[[], object] | None = None) -> None:
    """logrotate's copytruncate: older copies shifted, ``path`` copied to ``path.1``,
    ``between()`` run (an application still writing), then ``path`` truncated to 0."""
    for n in range(
        max((int(p.suffix[1:]) for p in path.parent.glob(path.name + ".*")), default=0), 0, -1
    ):
        os.rename(f"{path}.{n}", f"{path}.{n + 1}")
    shutil.copyfile(path, f"{path}.1")
    if between is not None:
        between()
    os.truncate(path, 0)


class _Entry(msgspec.Struct):
    message: str


_decode = msgspec.json.Decoder(_Entry).decode


class Tally:
    """How often each line id appears in the file sink's output, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.counts: collections.Counter[str] = collections.Counter()
        self.messages: dict[str, str] = {}  # id → one delivered message, to check content

    def refresh(self) -> collections.Counter[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.counts
        cut = data.rfind(b"\n") + 1  # a line the sink is still writing is read next time
        for raw in data[:cut].splitlines():
            message = _decode(raw).message
            key = entry_id(message)
            self.counts[key] += 1
            self.messages.setdefault(key, message)
        self.offset += cut
        return self.counts

    def has_all(self, ids: Iterable[str]) -> bool:
        counts = self.refresh()
        return all(counts[i] for i in ids)


@dataclass
class Outcome:
    """Lines written against lines delivered, for one scenario."""

    written: int
    delivered: int
    lost: int
    duplicated: int
    unexpected: int  # entries whose id was never written (a line read from its middle)
    lost_sample: list[str] = field(default_factory=list)
    duplicated_sample: list[str] = field(default_factory=list)
    unexpected_sample: list[str] = field(default_factory=list)


def outcome(written: list[str], counts: collections.Counter[str]) -> Outcome:
    """Compare the ids written with how often each was delivered."""
    expected = set(written)
    lost = [i for i in written if not counts[i]]
    duplicated = [i for i in written if counts[i] > 1]
    unexpected = [i for i in counts if i not in expected]
    return Outcome(
        written=len(written),
        delivered=sum(counts.values()),
        lost=len(lost),
        duplicated=sum(counts[i] - 1 for i in duplicated),
        unexpected=sum(counts[i] for i in unexpected),
        lost_sample=lost[:5],
        duplicated_sample=duplicated[:5],
        unexpected_sample=unexpected[:5],
    )


class Report:
    """Per-scenario results, written as JSON (to ``path``) when the module's tests are done."""

    def __init__(self, path: Path = REPORT_PATH, suite: str = "tests/test_rotation.py") -> None:
        self.path = path
        self.suite = suite
        self.scenarios: dict[str, dict[str, Any]] = {}

    def add(self, scenario: str, result: Outcome, **extra: Any) -> None:
        self.scenarios[scenario] = {**asdict(result), **extra}

    def write(self, began: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            json.dumps(
                {
                    "suite": self.suite,
                    "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "runtime_s": round(time.monotonic() - began, 1),
                    "scenarios": self.scenarios,
                },
                indent=2,
            )
            + "\n"
        )


class Scenario:
    """A directory of logs, the agent tailing them into ``out/app.ndjson``, and the tally.

    ``include`` patterns are relative to the scenario directory; ``source`` adds keys to
    the file source (values as YAML/JSON). Scans and polls are quick so a rotation is seen
    within a fraction of a second; checkpoints are frequent so restarts resume late."""

    def __init__(
        self,
        root: Path,
        start_agent: Callable[..., Agent],
        include: list[str],
        source: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._start_agent = start_agent
        self.source: dict[str, Any] = {
            "type": "file",
            "include": include,
            "glob_interval": "200ms",
            "poll_interval": "100ms",
            **(source or {}),
        }
        self.output = root / "out" / "app.ndjson"
        self.tally = Tally(self.output)
        self.agent: Agent | None = None

    def start(self) -> Agent:
        address = f"127.0.0.1:{free_port()}"
        config = write_config(
            self.root,
            f"""
data_dir: ./data
sources: {{app: {json.dumps(self.source)}}}
sinks:
  archive: {{type: file, path: "./out/{{source}}.ndjson"}}
dispatcher: {{batch_timeout: 20ms, checkpoint_interval: 100ms}}
""",
            address,
        )
        self.agent = self._start_agent(config, address)
        self.agent.wait_ready()
        return self.agent

    def wait_delivered(self, ids: Iterable[str], timeout: float = 60) -> None:
        """Wait until every line in ``ids`` has been delivered at least once."""
        missing = set(ids)
        wanted = len(missing)
        deadline = time.monotonic() + timeout
        while True:
            counts = self.tally.refresh()
            missing.difference_update([i for i in missing if counts[i]])
            if not missing:
                return
            if time.monotonic() > deadline:
                pytest.fail(
                    f"after {timeout}s, {len(missing)} of {wanted} lines still not delivered, "
                    f"e.g. {sorted(missing)[:5]}"
                )
            time.sleep(0.05)

    def settle(self, quiet: float = QUIET, timeout: float = 60) -> None:
        """Wait until the output has not grown for ``quiet`` seconds: anything the agent
        would (wrongly) read again has had several scans to show up."""
        last = (-1, time.monotonic())

        def still() -> bool:
            nonlocal last
            size = self.output.stat().st_size if self.output.exists() else 0
            if size != last[0]:
                last = (size, time.monotonic())
            return time.monotonic() - last[1] >= quiet

        wait_for(still, timeout, "the output to stop growing")

    def stop(self) -> None:
        """SIGTERM: the agent drains what it read, checkpoints and exits 0."""
        assert self.agent is not None
        assert self.agent.stop() == 0, self.agent.log.read_text()[-3000:]
        self.agent = None

    def kill(self) -> None:
        """kill -9 of the whole tree: every child, then the supervisor."""
        assert self.agent is not None
        pids = list(self.agent.children().values())
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.agent.kill()
        wait_for(lambda: all(gone(pid) for pid in pids), 30, "the agent's children to die")
        self.agent = None

    def stop_behind(self, collector: int, how: str) -> None:
        """Stop the agent while its collector (pid ``collector``, SIGSTOPped by the caller
        with lines unread) is stalled: ``sigterm`` drains (the collector, resumed only once
        told to stop, reads no further than the block it was at), ``kill-9`` kills the tree."""
        assert self.agent is not None
        if how == "kill-9":
            self.kill()
            return
        assert how == "sigterm", how
        self.agent.process.send_signal(signal.SIGTERM)
        wait_for(lambda: signal_pending(collector, signal.SIGTERM), 30, "the drain to begin")
        os.kill(collector, signal.SIGCONT)
        self.stop()

    def finish(self, written: list[str]) -> Outcome:
        """Let the output settle, stop the agent, and compare it with ``written``."""
        self.settle()
        self.stop()
        return outcome(written, self.tally.refresh())

    def metric(self, name: str) -> float:
        assert self.agent is not None
        return self.agent.metric(name, component="app")
