"""The soak's agent and its file sink's output directory (bench/test_soak.py).

``Agent`` is ``logcap run`` as a process tree read over its API; ``Output`` is the
directory the file sink writes to, behind a symlink that a sink outage replaces with a
plain file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Output:
    """The file sink's directory behind the symlink ``out/link``; ``fail()`` puts a plain
    file in its place (every open under it: ENOTDIR), ``heal()`` the symlink back. Both
    are one rename, so the sink never sees a moment without either."""

    def __init__(self, out: Path) -> None:
        self.out, self.real, self.link = out, out / "real", out / "link"
        self.real.mkdir(parents=True)
        self.link.symlink_to(self.real)
        self.sink_path = self.link / "soak.ndjson"  # what the sink is told
        self.file = self.real / "soak.ndjson"  # what the soak reads

    def fail(self) -> None:
        spare = self.out / "link.new"
        spare.write_text("a file where the sink's directory should be\n")
        os.replace(spare, self.link)

    def heal(self) -> None:
        spare = self.out / "link.new"
        spare.symlink_to(self.real)
        os.replace(spare, self.link)


class Agent:
    """``logcap run`` as a process tree, its log in ``log``."""

    def __init__(self, config: Path, api: str, log: Path) -> None:
        self.api, self.log = api, log
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "logcap", "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{self.api}{path}", timeout=10) as answer:
            return bytes(answer.read())

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/stats")))

    def metric(self, name: str, text: str | None = None, component: str | None = None) -> float:
        """The sum of the samples of ``name`` (of ``component`` only, if given)."""
        text = self.get("/metrics").decode() if text is None else text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " "))
            and (component is None or f'component="{component}"' in line)
        )

    def children(self) -> dict[str, int]:
        """Role:name → pid of the child processes."""
        out = {}
        pid = self.process.pid
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                args = Path(f"/proc/{child}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            except OSError:
                continue
            out[b":".join(args[-2:]).decode()] = int(child)
        return out

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the agent exited: {self.tail()}")
            try:
                self.get("/ready")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the agent was not ready in {timeout}s") from None
                time.sleep(0.1)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._log.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]
