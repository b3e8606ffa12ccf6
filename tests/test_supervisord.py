"""logcap under a real supervisord, with the program section of
configs/supervisord/logcap.conf moved into a temporary directory: a stop drains (exit 0,
STOPPED, every line delivered), a start resumes exactly where the stop left, and a
``kill -9`` of the agent is restarted and loses nothing."""

from __future__ import annotations

import configparser
import contextlib
import getpass
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from logcap.config import load_config
from tests._output import read_ndjson
from tests._waiting import wait_for
from tests.conftest import free_port, write_config

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "configs" / "supervisord" / "logcap.conf"
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(
    not (BIN / "supervisord").exists(), reason="supervisord (the test extras: supervisor)"
)


def _program_section(tmp_path: Path, config: Path) -> dict[str, str]:
    """The shipped program section, with this checkout's logcap and tmp_path's files."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=None)
    parser.read(PROGRAM)
    program = dict(parser["program:logcap"])
    program["command"] = (
        program["command"]
        .replace("/opt/logcap/bin/logcap", str(BIN / "logcap"))
        .replace("/etc/logcap/logcap.yaml", str(config))
    )
    program["directory"] = str(tmp_path)
    program["user"] = getpass.getuser()
    program["stdout_logfile"] = str(tmp_path / "logcap.log")
    program["environment"] = (
        program["environment"]
        .replace("/var/lib/logcap", str(tmp_path / "data"))
        .replace("/var/log/logcap", str(tmp_path / "out"))
    )
    return program


class Supervisord:
    """A supervisord in the foreground with logcap as its one program."""

    def __init__(self, tmp_path: Path, program: dict[str, str]) -> None:
        self.conf = tmp_path / "supervisord.conf"
        self.log = tmp_path / "supervisord.log"
        sock = tmp_path / "supervisor.sock"
        lines = [
            "[unix_http_server]",
            f"file={sock}",
            "chmod=0700",
            "[supervisord]",
            "nodaemon=true",
            f"logfile={self.log}",
            f"pidfile={tmp_path / 'supervisord.pid'}",
            f"childlogdir={tmp_path}",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{sock}",
            "[program:logcap]",
            *(f"{key}={value}" for key, value in program.items()),
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [str(BIN / "supervisord"), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=90,
        )
        return done.stdout + done.stderr

    def state(self) -> str:
        words = self.ctl("status", "logcap").split()
        return words[1] if len(words) > 1 and words[0] == "logcap" else "unknown"

    def pid(self) -> int:
        return int(self.ctl("pid", "logcap").strip() or 0)

    def shutdown(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Supervisord, Path, Path, str]]:
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    app_log = tmp_path / "logs" / "app.log"
    app_log.touch()
    body = """
data_dir: ${STATE_DIRECTORY}
sources:
  app: {type: file, include: ["./logs/*.log"]}
sinks:
  archive: {type: file, path: "${LOGS_DIRECTORY}/{source}.ndjson"}
dispatcher: {batch_timeout: 50ms, checkpoint_interval: 200ms}
"""
    config = write_config(tmp_path, body, address)
    supervisord = Supervisord(tmp_path, _program_section(tmp_path, config))
    try:
        yield supervisord, app_log, tmp_path / "out" / "app.ndjson", address
    finally:
        agent = supervisord.pid() if supervisord.process.poll() is None else 0
        supervisord.shutdown()  # stops the agent first
        if agent:  # only if supervisord could not
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent, signal.SIGKILL)


def _append(path: Path, start: int, count: int) -> None:
    with open(path, "ab") as out:
        out.write(b"".join(b"line %06d\n" % n for n in range(start, start + count)))


def _messages(path: Path) -> list[str]:
    return [entry["message"] for entry in read_ndjson(path)]


def _expected(count: int) -> list[str]:
    return [f"line {n:06d}" for n in range(count)]


def _children(pid: int) -> list[int]:
    """Pids of ``pid``'s direct children."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _wait_running(supervisord: Supervisord, address: str) -> None:
    import urllib.request

    def ready() -> bool:
        if supervisord.state() != "RUNNING":
            return False
        try:
            with urllib.request.urlopen(f"http://{address}/ready", timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    wait_for(ready, 60, "supervisord to report logcap RUNNING and /ready")


def test_the_shipped_stop_wait_outlasts_the_drain() -> None:
    parser = configparser.RawConfigParser()
    parser.read(PROGRAM)
    program = parser["program:logcap"]
    service = load_config(ROOT / "configs" / "service.yaml", env={})
    assert float(program["stopwaitsecs"]) > service.supervisor.shutdown_timeout
    assert (program["stopasgroup"], program["killasgroup"]) == ("false", "false")
    assert (program["autorestart"], program["exitcodes"]) == ("unexpected", "0")


def test_stop_drains_start_resumes_and_a_killed_agent_is_restarted_without_loss(
    setup: tuple[Supervisord, Path, Path, str],
) -> None:
    supervisord, app_log, output, address = setup
    _wait_running(supervisord, address)
    _append(app_log, 0, 1000)
    wait_for(lambda: len(_messages(output)) >= 1000, 60, "the first 1000 lines")

    # a stop is a drain: exit 0, so STOPPED (not EXITED or FATAL), and nothing is missing
    assert "stopped" in supervisord.ctl("stop", "logcap")
    assert supervisord.state() == "STOPPED"
    assert "stopped: logcap (exit status 0)" in supervisord.log.read_text()
    assert _messages(output) == _expected(1000)

    # lines written while it was stopped arrive after a start, none twice
    _append(app_log, 1000, 1000)
    assert "started" in supervisord.ctl("start", "logcap")
    _wait_running(supervisord, address)
    wait_for(lambda: len(_messages(output)) >= 2000, 60, "the lines written while stopped")
    assert _messages(output) == _expected(2000)

    # kill -9: supervisord restarts it (autorestart=unexpected); at least once, so lines
    # read after the last checkpoint may come twice, but none is lost
    killed = supervisord.pid()
    tree = _children(killed)
    assert len(tree) >= 4  # collector, dispatcher, sink, retry
    os.kill(killed, signal.SIGKILL)
    _append(app_log, 2000, 1000)
    wait_for(lambda: supervisord.pid() not in (0, killed), 60, "supervisord to restart logcap")
    _wait_running(supervisord, address)
    # its children died with it (PR_SET_PDEATHSIG), and the next start swept its segments
    wait_for(lambda: not [p for p in tree if Path(f"/proc/{p}").exists()], 30, "no orphans")
    assert not list(Path("/dev/shm").glob(f"logcap-{killed}-*"))
    wait_for(lambda: set(_messages(output)) >= set(_expected(3000)), 60, "every line")
    assert "exited: logcap (terminated by SIGKILL; not expected)" in supervisord.log.read_text()


def test_signal_hup_reloads_and_restart_drains(
    setup: tuple[Supervisord, Path, Path, str],
) -> None:
    supervisord, app_log, output, address = setup
    _wait_running(supervisord, address)
    _append(app_log, 0, 500)
    wait_for(lambda: len(_messages(output)) >= 500, 60, "the first 500 lines")
    agent = supervisord.pid()

    # a second sink in the config, then `supervisorctl signal HUP`: the agent (same pid)
    # reloads, and the new sink gets what arrives from then on
    config = Path(supervisord.conf.parent / "logcap.yaml")
    second = supervisord.conf.parent / "out" / "second.ndjson"
    config.write_text(
        config.read_text().replace(
            "sinks:\n", f'sinks:\n  second: {{type: file, path: "{second}"}}\n'
        )
    )
    supervisord.ctl("signal", "HUP", "logcap")
    log = supervisord.conf.parent / "logcap.log"
    wait_for(lambda: "reload applied" in log.read_text(), 60, "the reload")
    assert "sinks added: second" in log.read_text()
    assert supervisord.pid() == agent
    _append(app_log, 500, 500)
    wait_for(lambda: len(_messages(output)) >= 1000, 60, "1000 lines in the first sink")
    wait_for(lambda: len(_messages(second)) >= 500, 60, "the new lines in the new sink")
    assert set(_messages(second)) >= set(_expected(1000)[500:])

    # restart: a drain (exit 0) then a start that resumes; nothing lost, nothing twice
    assert "started" in supervisord.ctl("restart", "logcap")
    _wait_running(supervisord, address)
    assert supervisord.pid() != agent
    assert "stopped: logcap (exit status 0)" in supervisord.log.read_text()
    _append(app_log, 1000, 500)
    wait_for(lambda: len(_messages(output)) >= 1500, 60, "every line after the restart")
    assert _messages(output) == _expected(1500)
