"""The agent's log as an operator reads it, through ``logcap run``: the start summary,
each file source's first scan, dead-lettered batches, a circuit opening and closing, one
drain summary, and no third-party chatter at ``LOGCAP_LOG_LEVEL=debug``.

The destination is an HTTP server in the test that answers every request with the status
it is told to (a port where nothing listens stands for a destination that is down).
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from logcap import __version__
from logcap.retry.dlq_log import DeadLetterLog
from tests.conftest import Agent, free_port, wait_for, write_config

Start = Callable[..., Agent]


class _Answer(BaseHTTPRequestHandler):
    server: _Destination

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        with self.server.lock:
            self.server.requests += 1

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class _Destination(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, status: int) -> None:
        super().__init__(("127.0.0.1", port), _Answer)
        self.status = status
        self.lock = threading.Lock()
        self.requests = 0


@pytest.fixture
def destination() -> Iterator[Callable[[int, int], _Destination]]:
    """Start HTTP destinations answering a fixed status; all stopped at teardown."""
    started: list[tuple[_Destination, threading.Thread]] = []

    def start(port: int, status: int) -> _Destination:
        server = _Destination(port, status)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _config(tmp_path: Path, address: str, sinks: str, shutdown_timeout: str = "20s") -> Path:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
{sinks}
dispatcher: {{batch_timeout: 50ms, checkpoint_interval: 200ms}}
supervisor: {{restart_backoff: 100ms, shutdown_timeout: {shutdown_timeout}}}
retry: {{initial_backoff: 200ms, max_backoff: 1s, max_attempts: 100000}}
""",
        address,
    )


def _messages(agent: Agent) -> list[str]:
    """The log's lines without their timestamps: ``LEVEL [component] logger: message``."""
    return [
        line.split(" ", 2)[2] for line in agent.log.read_text().splitlines() if line.count(" ") >= 2
    ]


def _logged(agent: Agent, pattern: str) -> Callable[[], bool]:
    return lambda: any(re.fullmatch(pattern, m) for m in _messages(agent))


def test_start_summary_names_version_config_api_components_and_files(
    tmp_path: Path, start_agent: Start
) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = _config(
        tmp_path,
        address,
        '  archive: {type: file, path: "./out/{source}.ndjson"}\n'
        '  remote: {type: http, url: "http://127.0.0.1:9/ingest", bearer_token: s3cret}\n'
        "  devnull: {type: blackhole}",
    )
    for name in ("a", "b", "c", "d", "e"):
        (tmp_path / "logs" / f"{name}.log").write_text("one line\n")
    agent = start_agent(config, address)
    agent.wait_ready()
    logs = tmp_path / "logs"
    wait_for(_logged(agent, r"INFO \[app\] .*watching.*"), 30, "the first scan's summary")
    assert agent.stop() == 0
    messages = _messages(agent)
    header = next(m for m in messages if " starting: " in m)
    assert header.startswith(
        f"INFO [supervisor] logcap.supervisor: logcap {__version__} starting: config {config}, "
        f"data_dir {tmp_path / 'data'}, API http://{address}, 1 source(s), 3 sink(s), segments "
    )
    assert f"INFO [supervisor] logcap.supervisor: source app (file): include {logs}/*.log" in (
        messages
    )
    assert (
        f"INFO [supervisor] logcap.supervisor: sink archive (file): "
        f"path {tmp_path}/out/{{source}}.ndjson" in messages
    )
    assert (
        "INFO [supervisor] logcap.supervisor: sink remote (http): url http://127.0.0.1:9/ingest"
        in messages
    )
    assert "INFO [supervisor] logcap.supervisor: sink devnull (blackhole)" in messages
    assert (
        f"INFO [app] logcap.capture.file.collector: source app: watching 5 files "
        f"({logs}/a.log, {logs}/b.log, {logs}/c.log and 2 more)" in messages
    )
    assert "s3cret" not in agent.log.read_text()


def test_drain_summary_is_the_one_final_word(tmp_path: Path, start_agent: Start) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = _config(
        tmp_path,
        address,
        '  archive: {type: file, path: "./out/{source}.ndjson"}\n  devnull: {type: blackhole}',
    )
    (tmp_path / "logs" / "a.log").write_text("".join(f"line {n}\n" for n in range(10)))
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="archive") == 10,
        30,
        "10 entries delivered",
    )
    assert agent.stop() == 0
    messages = _messages(agent)
    assert (
        "INFO [dispatcher] logcap.dispatch.process: every batch released by the sinks "
        "(delivered or handed to retry), checkpoint saved" in messages
    )
    assert not any("drained: every batch delivered" in m for m in messages)
    assert re.fullmatch(
        r"INFO \[supervisor\] logcap\.supervisor: stopped in \d+\.\ds, every child exited "
        r"cleanly: 10 entries read, delivered per sink: archive 10, devnull 10; retry spool: "
        r"0 batches \(0 B\) kept for the next start; dead-lettered this run: 0 batches "
        r"\(0 entries\)",
        messages[-1],
    ), messages[-1]


def test_circuit_opens_and_closes_and_the_drain_counts_the_spool(
    tmp_path: Path, start_agent: Start, destination: Callable[[int, int], _Destination]
) -> None:
    address, down = f"127.0.0.1:{free_port()}", free_port()
    config = _config(
        tmp_path,
        address,
        f'  remote: {{type: http, url: "http://127.0.0.1:{down}/ingest", timeout: 1s,\n'
        "           circuit_breaker: {failure_threshold: 2, open_duration: 500ms}}",
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    for n in range(3):  # three batches: the third finds the circuit open
        with open(tmp_path / "logs" / "a.log", "a") as f:
            f.write(f"line {n}\n")
        wait_for(
            lambda n=n: (
                agent.metric("logcap_component_received_events_total", component="dispatcher")
                == n + 1
            ),
            30,
            f"line {n} read",
        )
    opened = (
        r"WARNING \[remote\] logcap\.sinks\.breaker: sink remote: circuit open for 0\.5s "
        r"after 2 batches in a row failed with a retryable error: .*"
        rf"127\.0\.0\.1:{down}.*"
    )
    wait_for(_logged(agent, opened), 30, "the circuit to open")
    server = destination(down, 200)
    closed = (
        r"INFO \[remote\] logcap\.sinks\.breaker: sink remote: circuit closed after \d+\.\ds "
        r"open: a probe batch was delivered; delivering again \(last error was: .*\)"
    )
    wait_for(_logged(agent, closed), 30, "the circuit to close")
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="remote") == 3,
        30,
        "every batch delivered",
    )
    server.status = 503  # down again: what fails now waits in the spool over the stop
    with open(tmp_path / "logs" / "a.log", "a") as f:
        f.write("line 3\n")
    wait_for(lambda: server.requests >= 4, 30, "the fourth batch to be refused")
    assert agent.stop() == 0
    # a failed probe reopens it without a new WARNING: for the operator it stayed open
    assert len([m for m in _messages(agent) if re.fullmatch(opened, m)]) == 1
    assert not [m for m in _messages(agent) if m.startswith("WARNING") and "open again" in m]
    assert re.fullmatch(
        r"INFO \[supervisor\] logcap\.supervisor: stopped in \d+\.\ds, every child exited "
        r"cleanly: 4 entries read, delivered per sink: remote 3; retry spool: 1 batch "
        r"\(\d+(\.\d)? (B|KiB)\) kept for the next start; dead-lettered this run: 0 batches "
        r"\(0 entries\)",
        _messages(agent)[-1],
    ), _messages(agent)[-1]


def test_drain_summary_names_the_children_killed_at_the_timeout(
    tmp_path: Path, start_agent: Start
) -> None:
    address = f"127.0.0.1:{free_port()}"
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        config = _config(
            tmp_path,
            address,
            f'  remote: {{type: http, url: "http://127.0.0.1:{port}/ingest", timeout: 60s}}',
            shutdown_timeout="1s",
        )
        agent = start_agent(config, address)
        agent.wait_ready()
        (tmp_path / "logs" / "a.log").write_text("one\n")
        wait_for(
            lambda: (
                agent.metric("logcap_component_received_events_total", component="dispatcher") == 1
            ),
            30,
            "the line read",
        )
        assert agent.stop() == 1
    assert re.fullmatch(
        r"ERROR \[supervisor\] logcap\.supervisor: drain timed out after 1\.\ds, killed "
        r"dispatcher, sink remote, retry \(entries they had not delivered were not "
        r"checkpointed\): 1 entry read, delivered per sink: remote 0; retry spool: 0 batches "
        r"\(0 B\) kept for the next start; dead-lettered this run: 0 batches \(0 entries\)",
        _messages(agent)[-1],
    ), _messages(agent)[-1]


def test_dead_lettered_batches_are_logged_with_sink_reason_and_entries(
    tmp_path: Path, start_agent: Start, destination: Callable[[int, int], _Destination]
) -> None:
    address, port = f"127.0.0.1:{free_port()}", free_port()
    destination(port, 400)
    config = _config(
        tmp_path, address, f'  remote: {{type: http, url: "http://127.0.0.1:{port}/ingest"}}'
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    (tmp_path / "logs" / "a.log").write_text("one\ntwo\nthree\n")
    line = (
        r"WARNING \[retry\] logcap\.retry\.dlq_log: sink remote: a batch of 3 entries was "
        r"dead-lettered \(permanent\): .*400.*; see `logcap dlq ls`"
    )
    wait_for(_logged(agent, line), 30, "the dead-lettered batch's line")
    assert agent.stop() == 0
    assert re.fullmatch(
        r"INFO \[supervisor\] logcap\.supervisor: stopped in \d+\.\ds, every child exited "
        r"cleanly: 3 entries read, delivered per sink: remote 0; retry spool: 0 batches "
        r"\(0 B\) kept for the next start; dead-lettered this run: 1 batch \(3 entries\)",
        _messages(agent)[-1],
    ), _messages(agent)[-1]


def test_dead_letter_lines_past_the_limit_are_summed_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    dead = DeadLetterLog(clock=lambda: now[0], limit=2)
    with caplog.at_level("WARNING", logger="logcap.retry.dlq_log"):
        for _ in range(5):
            dead.dead_lettered("remote", "permanent", 10, "HTTP 400")
        now[0] = 1.5
        dead.tick()
        dead.dead_lettered("remote", "permanent", 10, "HTTP 400")
    assert [r.getMessage() for r in caplog.records] == [
        "sink remote: a batch of 10 entries was dead-lettered (permanent): HTTP 400; "
        "see `logcap dlq ls`",
    ] * 2 + [
        "sink remote: 3 more batches (30 entries) were dead-lettered in the last 1.5s "
        "(lines past 2 a second are summed up)",
        "sink remote: a batch of 10 entries was dead-lettered (permanent): HTTP 400; "
        "see `logcap dlq ls`",
    ]


def test_debug_log_has_no_third_party_chatter(tmp_path: Path, start_agent: Start) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = _config(tmp_path, address, "  devnull: {type: blackhole}")
    agent = start_agent(config, address, env={"LOGCAP_LOG_LEVEL": "debug"})
    agent.wait_ready()
    for n in range(5):  # every write is an inotify event watchdog would log
        with open(tmp_path / "logs" / "a.log", "a") as f:
            f.write(f"line {n}\n")
        wait_for(
            lambda n=n: (
                agent.metric("logcap_component_sent_events_total", component="devnull") == n + 1
            ),
            30,
            f"line {n} delivered",
        )
    assert agent.stop() == 0
    loggers = {m.split(" ", 2)[2].split(":", 1)[0] for m in _messages(agent) if "] " in m}
    assert not {name for name in loggers if not name.startswith("logcap")}, loggers
