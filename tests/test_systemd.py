"""logcap under systemd: the unit passes systemd's own checks, and ``logcap run`` speaks the
notify protocol (logcap/sdnotify.py) to a socket the test binds, as systemd would.

No systemd runs here (it is not PID 1), so the unit is judged by ``systemd-analyze`` and
the protocol by reading the datagrams the agent sends to ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logcap.config import load_config
from tests.conftest import Agent, free_port, write_config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "configs" / "logcap.service"
MAX_EXPOSURE = 3.0
WATCHDOG_USEC = 2_000_000
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze (scripts/setup.sh --test)"
)


def _unit_lines() -> list[str]:
    return UNIT.read_text().splitlines()


def _runnable_unit(directory: Path) -> Path:
    """The unit with its programs where this checkout has them: verify checks they exist."""
    logcap = Path(sys.executable).parent / "logcap"
    unit = directory / "logcap.service"
    unit.write_text(UNIT.read_text().replace("/opt/logcap/bin/logcap", str(logcap)))
    return unit


@needs_systemd_analyze
def test_unit_verifies_clean(tmp_path: Path) -> None:
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(_runnable_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr


@needs_systemd_analyze
def test_unit_exposure_is_at_most_three(tmp_path: Path) -> None:
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(_runnable_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for logcap\.service: (\d+\.\d+)", security.stdout)
    assert found, security.stdout + security.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, security.stdout


def test_unit_lets_the_service_config_write_where_it_writes() -> None:
    """ProtectSystem=strict makes everything read-only but ReadWritePaths=: those must hold
    the data_dir and the archive's directory of the config the install ships."""
    config = load_config(ROOT / "configs" / "service.yaml", env={})
    writable = next(line for line in _unit_lines() if line.startswith("ReadWritePaths="))
    paths = writable.split("=", 1)[1].split()
    assert str(config.data_dir) in paths
    archive = Path(config.sinks["archive"].path).parent
    assert str(archive) in paths
    for line in ("Type=notify", "ProtectSystem=strict", "CapabilityBoundingSet="):
        assert line in _unit_lines(), line
    # the drain must end before systemd's SIGKILL
    stop = next(line for line in _unit_lines() if line.startswith("TimeoutStopSec="))
    assert float(stop.split("=")[1]) > config.supervisor.shutdown_timeout


class NotifyListener:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        """``address``: a path, or ``@name`` for the abstract namespace."""
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self.received: list[tuple[float, list[str]]] = []

    def wait_for(self, line: str, timeout: float = 60) -> float:
        """Receive until a datagram holds ``line``; the monotonic time it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            for at, lines in self.received:
                if line in lines:
                    return at
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {line} within {timeout}s; got {self.received}")
            self.receive(left)

    def receive(self, timeout: float) -> None:
        """Take in the datagrams that arrive within ``timeout`` (at least one, or none)."""
        self.socket.settimeout(timeout)
        try:
            data = self.socket.recv(4096)
        except TimeoutError:
            return
        self.received.append((time.monotonic(), data.decode().split("\n")))
        self.socket.setblocking(False)
        while True:
            try:
                data = self.socket.recv(4096)
            except BlockingIOError:
                return
            self.received.append((time.monotonic(), data.decode().split("\n")))

    def times_of(self, line: str) -> list[float]:
        return [at for at, lines in self.received if line in lines]

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *_: object) -> None:
        self.socket.close()


@pytest.fixture
def agent_config(tmp_path: Path) -> tuple[Path, str]:
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_bytes(b"one\ntwo\n")
    body = """
data_dir: ./data
sources:
  app: {type: file, include: ["./logs/*.log"], read_from: beginning}
sinks:
  archive: {type: file, path: "./out/{source}.ndjson"}
dispatcher: {batch_timeout: 50ms}
"""
    return write_config(tmp_path, body, address), address


@pytest.fixture
def notify_agent(
    tmp_path: Path, agent_config: tuple[Path, str], request: pytest.FixtureRequest
) -> Iterator[tuple[Agent, NotifyListener]]:
    """An agent started with NOTIFY_SOCKET at a listener (``request.param``: "path" or
    "abstract") and a 2 s watchdog."""
    address = str(tmp_path / "notify.sock")
    if request.param == "abstract":
        address = f"@logcap-test-{os.getpid()}-{time.monotonic_ns()}"
    config, api = agent_config
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with NotifyListener(address) as listener:
        agent = Agent(config, api, cwd=tmp_path, env=env)
        try:
            yield agent, listener
        finally:
            agent.kill()


@pytest.mark.parametrize("notify_agent", ["path", "abstract"], indirect=True)
def test_ready_comes_once_every_child_runs_and_stopping_when_the_drain_begins(
    notify_agent: tuple[Agent, NotifyListener],
) -> None:
    agent, listener = notify_agent
    listener.wait_for("READY=1")
    # by the time READY=1 is read, every child exists and /ready agrees
    assert set(agent.children()) == {
        "collector:app",
        "dispatcher:dispatcher",
        "sink:archive",
        "retry:retry",
    }
    assert agent.get("/ready")[0] == 200
    ready = next(lines for _, lines in listener.received if "READY=1" in lines)
    assert f"MAINPID={agent.process.pid}" in ready
    assert any(line.startswith("STATUS=") for line in ready)
    # the children cannot speak for the agent: the variables are not passed on
    for pid in agent.children().values():
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_")) for v in environ)

    assert agent.stop() == 0
    listener.receive(1)
    assert listener.times_of("STOPPING=1"), listener.received
    assert len(listener.times_of("READY=1")) == 1
    assert listener.times_of("READY=1")[0] < listener.times_of("STOPPING=1")[0]


@pytest.mark.parametrize("notify_agent", ["path"], indirect=True)
def test_a_reload_says_reloading_then_ready(notify_agent: tuple[Agent, NotifyListener]) -> None:
    agent, listener = notify_agent
    ready_at = listener.wait_for("READY=1")
    agent.process.send_signal(signal.SIGHUP)
    reloading_at = listener.wait_for("RELOADING=1")
    deadline = time.monotonic() + 30
    while len(listener.times_of("READY=1")) < 2 and time.monotonic() < deadline:
        listener.receive(deadline - time.monotonic())
    again = listener.times_of("READY=1")
    assert len(again) == 2 and ready_at < reloading_at < again[1], listener.received
    reload = next(lines for _, lines in listener.received if "RELOADING=1" in lines)
    assert any(line.startswith("MONOTONIC_USEC=") for line in reload)
    assert agent.stop() == 0


@pytest.mark.parametrize("notify_agent", ["path"], indirect=True)
def test_watchdog_is_pinged_at_least_every_half_interval(
    notify_agent: tuple[Agent, NotifyListener],
) -> None:
    agent, listener = notify_agent
    ready_at = listener.wait_for("READY=1")
    watched_until = ready_at + 3 * WATCHDOG_USEC / 1e6
    while time.monotonic() < watched_until:
        listener.receive(watched_until - time.monotonic())
    pings = [at for at in listener.times_of("WATCHDOG=1") if at >= ready_at]
    assert len(pings) >= 3, listener.received
    gaps = [b - a for a, b in zip([ready_at, *pings], [*pings, watched_until], strict=True)]
    assert max(gaps) <= WATCHDOG_USEC / 1e6 / 2, gaps
    assert agent.stop() == 0


def test_nothing_is_sent_without_notify_socket(
    tmp_path: Path, agent_config: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, api = agent_config
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with NotifyListener(str(tmp_path / "notify.sock")) as listener:
        agent = Agent(config, api, cwd=tmp_path, env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
        try:
            agent.wait_ready(60)
            assert agent.stop() == 0
        finally:
            agent.kill()
        listener.receive(0.5)
        assert listener.received == []
    assert "cannot notify" not in agent.log.read_text()


def test_sighup_reloads_an_unchanged_config_without_restarting_anything(
    tmp_path: Path, agent_config: tuple[Path, str]
) -> None:
    """ExecReload= sends SIGHUP, whose default action would kill the agent undrained: it
    reloads, and a config that did not change restarts nothing."""
    config, api = agent_config
    agent = Agent(config, api, cwd=tmp_path)
    try:
        agent.wait_ready(60)
        before = agent.children()
        agent.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while "reload applied" not in agent.log.read_text():
            alive = agent.process.poll() is None
            assert alive and time.monotonic() < deadline, agent.log.read_text()
            time.sleep(0.05)
        assert agent.process.poll() is None
        assert agent.get("/ready")[0] == 200
        assert agent.children() == before  # nothing was restarted
        assert agent.stop() == 0
    finally:
        agent.kill()
    assert "reload applied" in agent.log.read_text() and "no change" in agent.log.read_text()
