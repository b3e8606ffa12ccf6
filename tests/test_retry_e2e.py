"""The retry process in a real agent: it dies alone, its spool outlives it, a drain with an
open circuit ends cleanly, a crash loop backs off visibly, and one agent owns a data_dir.

The failing sink is an http sink aimed at a port where nothing listens (connection
refused: retryable); "the destination comes back" is a recording server started on it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import Agent, free_port, wait_for, write_config

LINES = 2_000
HTTP_ENTRIES = 100


class _Recorder(BaseHTTPRequestHandler):
    server: _RecordingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.messages += [json.loads(x)["message"] for x in body.splitlines() if x]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Recorder)
        self.lock = threading.Lock()
        self.messages: list[str] = []


@contextmanager
def _destination(port: int) -> Iterator[_RecordingServer]:
    server = _RecordingServer(port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _config(
    tmp_path: Path, address: str, ingest_port: int, down_port: int, extra: str = ""
) -> Path:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
  ingest: {{type: http, address: "127.0.0.1:{ingest_port}"}}
sinks:
  healthy: {{type: file, path: "./out/{{source}}.ndjson"}}
  remote: {{type: http, url: "http://127.0.0.1:{down_port}/ingest", timeout: 1s,
           circuit_breaker: {{failure_threshold: 2, open_duration: 500ms}}}}
dispatcher: {{batch_timeout: 50ms, checkpoint_interval: 200ms}}
supervisor: {{restart_backoff: 100ms, shutdown_timeout: 20s}}
retry: {{initial_backoff: 200ms, max_backoff: 1s, max_attempts: 100000}}
{extra}""",
        address,
    )


def _post_entries(port: int, first: int, count: int) -> None:
    body = "\n".join(json.dumps({"message": f"http {n:06d}"}) for n in range(first, first + count))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/logs", data=body.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


def _expected() -> list[str]:
    """Every line and HTTP entry, sorted."""
    return sorted(
        [f"line {n:06d}" for n in range(LINES)] + [f"http {n:06d}" for n in range(HTTP_ENTRIES)]
    )


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _feed(tmp_path: Path, ingest_port: int) -> None:
    wait_for(lambda: _listening(ingest_port), 30, "the HTTP source to listen")
    (tmp_path / "logs" / "a.log").write_text("".join(f"line {n:06d}\n" for n in range(LINES)))
    for first in range(0, HTTP_ENTRIES, 10):
        _post_entries(ingest_port, first, 10)


def _healthy_messages(tmp_path: Path) -> list[str]:
    out = []
    for path in sorted((tmp_path / "out").glob("*.ndjson")):
        out += [json.loads(x)["message"] for x in path.read_text().splitlines()]
    return out


def _spooled(agent: Agent) -> float:
    return agent.metric("logcap_retry_spool_batches")


def _handed_off(agent: Agent) -> bool:
    return agent.metric("logcap_sink_retry_handoffs_total", component="remote") > 0


def test_a_killed_retry_process_restarts_alone_and_its_spool_loses_nothing(
    tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    address, ingest, down = f"127.0.0.1:{free_port()}", free_port(), free_port()
    agent = start_agent(_config(tmp_path, address, ingest, down), address)
    agent.wait_ready()
    _feed(tmp_path, ingest)
    wait_for(lambda: sorted(_healthy_messages(tmp_path)) == _expected(), 60, "the healthy sink")
    wait_for(lambda: _handed_off(agent), 30, "failed batches handed to the retry process")
    before = agent.children()
    for _ in range(2):
        retry_pid = agent.children()["retry:retry"]
        os.kill(retry_pid, signal.SIGKILL)
        wait_for(
            lambda p=retry_pid: agent.children().get("retry:retry", p) != p,
            30,
            "the retry process to be restarted",
        )
    after = agent.children()
    # nothing but the retry process was restarted
    assert {k: v for k, v in after.items() if k != "retry:retry"} == {
        k: v for k, v in before.items() if k != "retry:retry"
    }
    assert agent.metric("logcap_child_restarts_total", component="retry") == 2
    with _destination(down) as server:
        wait_for(
            lambda: sorted(set(server.messages)) == _expected(), 90, "every entry at the remote"
        )
        wait_for(lambda: _spooled(agent) == 0, 30, "the spool to empty")
        assert agent.metric("logcap_dlq_records_total") == 0
        assert agent.stop() == 0
    # every HTTP entry was answered 200 before the kills: all of them arrived, in both
    assert sorted(_healthy_messages(tmp_path)) == _expected()


def test_a_drain_with_an_open_circuit_exits_0_and_the_next_start_delivers_the_spool(
    tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    address, ingest, down = f"127.0.0.1:{free_port()}", free_port(), free_port()
    config = _config(tmp_path, address, ingest, down)
    agent = start_agent(config, address)
    agent.wait_ready()
    _feed(tmp_path, ingest)
    wait_for(lambda: sorted(_healthy_messages(tmp_path)) == _expected(), 60, "the healthy sink")
    wait_for(
        lambda: agent.metric("logcap_sink_circuit_state", component="remote") == 1,
        30,
        "the remote's circuit to open",
    )
    wait_for(lambda: _handed_off(agent), 30, "failed batches handed to the retry process")
    began = time.monotonic()
    assert agent.stop(timeout=30) == 0
    assert time.monotonic() - began < 15, "the drain waited for the open circuit"
    assert "drain timed out" not in agent.log.read_text()
    assert any((tmp_path / "data" / "spool").glob("*.spool"))
    address = f"127.0.0.1:{free_port()}"
    config = _config(tmp_path, address, free_port(), down)
    with _destination(down) as server:
        again = start_agent(config, address)
        again.wait_ready()
        wait_for(
            lambda: sorted(set(server.messages)) == _expected(), 90, "every entry at the remote"
        )
        assert again.stop() == 0
    assert sorted(_healthy_messages(tmp_path)) == _expected()  # nothing sent twice to it


def test_a_retry_process_that_cannot_start_backs_off_and_shows_in_metrics_and_ready(
    tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    address, ingest, down = f"127.0.0.1:{free_port()}", free_port(), free_port()
    config = _config(tmp_path, address, ingest, down)
    (tmp_path / "data").mkdir()
    blocker = tmp_path / "data" / "spool"
    blocker.write_text("a file where the spool directory should be\n")
    agent = start_agent(config, address)
    wait_for(lambda: _listening(int(address.rsplit(":", 1)[1])), 30, "the API to listen")
    wait_for(
        lambda: agent.metric("logcap_child_crash_loop", component="retry") >= 3,
        30,
        "the retry process to crash repeatedly",
    )
    status, body = agent.json("/ready")
    assert status == 503 and body["components"]["retry"]["crash_loop"] >= 3
    restarts = agent.metric("logcap_child_restarts_total", component="retry")
    time.sleep(1.0)
    # restart_backoff 100ms doubling: by the 4th crash the delay is 0.8 s and growing,
    # far from the ~0.3 s per restart of a loop without backoff
    assert agent.metric("logcap_child_restarts_total", component="retry") - restarts <= 2
    blocker.unlink()
    agent.wait_ready(timeout=60)
    wait_for(
        lambda: agent.metric("logcap_child_up", component="retry") == 1, 30, "the retry process"
    )
    assert agent.stop() == 0


def test_a_second_agent_on_the_same_data_dir_refuses_to_start_naming_the_first(
    tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    address, ingest, down = f"127.0.0.1:{free_port()}", free_port(), free_port()
    first = start_agent(_config(tmp_path, address, ingest, down), address)
    first.wait_ready()
    # it holds log contents (spool, DLQ): owner only, whatever the umask
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    other = tmp_path / "other"
    other.mkdir()
    address2 = f"127.0.0.1:{free_port()}"
    config2 = _config(tmp_path, address2, free_port(), down)
    second = start_agent(config2, address2, cwd=other)
    assert second.process.wait(timeout=30) == 75
    text = second.log.read_text()
    assert f"pid {first.process.pid}" in text and str(tmp_path / "data") in text
    assert first.process.poll() is None
    assert first.stop() == 0
    # the lock goes with its holder: the next agent starts
    third = start_agent(config2, address2, cwd=other)
    third.wait_ready()
    assert third.stop() == 0


@pytest.mark.parametrize("enabled", [True, False])
def test_overflowed_batches_come_back_by_themselves_only_with_dlq_reprocess(
    tmp_path: Path, start_agent: Callable[..., Agent], enabled: bool
) -> None:
    address, ingest, down = f"127.0.0.1:{free_port()}", free_port(), free_port()
    extra = f"""
retry: {{initial_backoff: 200ms, max_backoff: 1s, max_attempts: 100000, spool_max_bytes: 64KiB}}
dlq: {{reprocess: {{enabled: {str(enabled).lower()}, interval: 1s}}}}
"""
    config = _config(tmp_path, address, ingest, down).read_text()
    config = config.replace(
        "retry: {initial_backoff: 200ms, max_backoff: 1s, max_attempts: 100000}\n", extra
    ).replace("batch_timeout: 50ms", "batch_timeout: 50ms, batch_max_events: 100")
    path = tmp_path / "logcap.yaml"
    path.write_text(config)
    agent = start_agent(path, address)
    agent.wait_ready()
    _feed(tmp_path, ingest)
    wait_for(lambda: sorted(_healthy_messages(tmp_path)) == _expected(), 60, "the healthy sink")
    overflow = {"component": "remote", "reason": "overflow"}
    wait_for(lambda: agent.metric("logcap_dlq_records_total", **overflow) > 0, 60, "an overflow")
    with _destination(down) as server:
        if enabled:
            wait_for(
                lambda: sorted(set(server.messages)) == _expected(),
                90,
                "every entry, the DLQ's too",
            )
            assert agent.metric("logcap_dlq_reprocessed_total", component="remote") > 0
        else:
            wait_for(lambda: _spooled(agent) == 0, 60, "the spool to be delivered")
            time.sleep(3)  # three reprocess intervals: nothing may come from the DLQ
            assert agent.metric("logcap_dlq_reprocessed_total", component="remote") == 0
            assert set(server.messages) < set(_expected())
        assert agent.stop() == 0
