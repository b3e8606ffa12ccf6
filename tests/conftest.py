"""Fixtures for tests that run the real agent: a launcher, free ports, metric scraping."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._waiting import wait_for


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Agent:
    """A running ``logcap run`` process tree, stopped and reaped at teardown."""

    def __init__(
        self, config: Path, address: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.address = address
        self.log = (cwd or config.parent) / f"agent-{time.monotonic_ns()}.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 (closed in stop)
        args = [sys.executable, "-m", "logcap", "run"]
        if config.name != "<embedded>":
            args += ["--config", str(config)]
        self.process = subprocess.Popen(
            args,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://{self.address}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, path: str) -> tuple[int, dict]:
        status, body = self.get(path)
        return status, json.loads(body)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        _, body = self.get("/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            named = line.startswith(name + "{") or line.startswith(name + " ")
            if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"agent exited early:\n{self.log.read_text()}")
            try:
                return self.get("/ready")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout, "the agent to be ready")

    def children(self) -> dict[str, int]:
        """Role/name → pid of the current child processes."""
        out = {}
        for pid in (
            Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        ):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            except OSError:
                continue
            if b"logcap.worker" in args:
                out[args[-2].decode() + ":" + args[-1].decode()] = int(pid)
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


@pytest.fixture
def start_agent() -> Iterator[Callable[..., Agent]]:
    """Start agents; every one still running at teardown is killed."""
    agents: list[Agent] = []

    def start(config: Path, address: str, **kwargs: object) -> Agent:
        agent = Agent(config, address, **kwargs)  # type: ignore[arg-type]
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.kill()


def write_config(directory: Path, body: str, address: str) -> Path:
    """A config file in ``directory`` with ``api.address`` set to ``address``."""
    path = directory / "logcap.yaml"
    path.write_text(f'api: {{address: "{address}"}}\n' + body)
    return path


# fixtures of real services (Docker, Kafka), for every test module that asks for them
from tests._docker_helpers import docker_daemon, dockerd  # noqa: E402, F401
from tests._kafka_helpers import mock_cluster, tansu  # noqa: E402, F401
