"""A 200 from HTTP ingest is a promise: its entries survive a ``kill -9`` of the whole tree.

The agent answers only once every sink delivered the entries, or the retry spool holds
them (capture/http/acks.py). Each test answers a request, kills the supervisor and every
child with SIGKILL at once, starts the agent again on the same data_dir, and checks that
every entry answered 200 arrives.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from logcap.capture.http.acks import AckWaiter, Positions
from logcap.metrics import Counter, NullBlock
from tests.conftest import Agent, free_port, wait_for, write_config
from tests.test_http_source import _post, _reachable


def _kill_tree(agent: Agent) -> None:
    """SIGKILL to the supervisor and every child at the same moment."""
    pids = [agent.process.pid, *agent.children().values()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    agent.kill()  # reaps the supervisor
    for pid in pids[1:]:
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 10, f"child {pid} gone")


def _ndjson(messages: list[str]) -> bytes:
    return b"".join(json.dumps({"message": m}).encode() + b"\n" for m in messages)


def _delivered(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["message"] for line in path.read_bytes().splitlines()]


def _config(tmp_path: Path, port: int, sinks: str) -> tuple[Path, str]:
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  ingest: {{type: http, address: "127.0.0.1:{port}"}}
sinks:
{sinks}
dispatcher: {{batch_timeout: 2s}}
retry: {{initial_backoff: 100ms, max_backoff: 200ms, max_attempts: 1000}}
supervisor: {{restart_backoff: 100ms}}
""",
        address,
    )
    return config, address


def _start(start_agent, config: Path, address: str, port: int) -> Agent:
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(lambda: _reachable(port), 30, "the ingest port")
    return agent


def test_entries_answered_200_survive_a_kill_9_of_the_whole_tree(
    tmp_path: Path, start_agent
) -> None:
    port = free_port()
    out = tmp_path / "out" / "all.ndjson"
    config, address = _config(tmp_path, port, '  out: {type: file, path: "./out/all.ndjson"}')
    answered: list[str] = []
    for round_ in range(3):
        agent = _start(start_agent, config, address, port)
        for request in range(4):
            messages = [f"r{round_}-q{request}-e{i}" for i in range(25)]
            status, _, _ = _post(port, _ndjson(messages), token=None)
            assert status == 200, (round_, request, agent.log.read_text()[-3000:])
            answered += messages
        _kill_tree(agent)  # right after the last 200
        # a 200 came only after delivery: all of it is in the sink before any restart
        assert set(answered) <= set(_delivered(out))

    agent = _start(start_agent, config, address, port)
    assert agent.stop() == 0
    assert set(answered) <= set(_delivered(out))


def test_a_request_not_acknowledged_in_time_gets_503_and_its_entries_still_arrive(
    tmp_path: Path, start_agent
) -> None:
    port = free_port()
    out = tmp_path / "out" / "all.ndjson"
    config, address = _config(tmp_path, port, '  out: {type: file, path: "./out/all.ndjson"}')
    agent = _start(start_agent, config, address, port)
    sink = agent.children()["sink:out"]
    os.kill(sink, signal.SIGSTOP)  # nothing is delivered, nothing acknowledged
    try:
        status, body, headers = _post(port, _ndjson(["late"]), token=None)
    finally:
        os.kill(sink, signal.SIGCONT)
    assert status == 503 and "retry later" in body["error"]
    assert headers.get("Retry-After") == "1"
    # taken in before the 503: delivered anyway (a client retry would be a duplicate)
    wait_for(lambda: "late" in _delivered(out), 30, "the entry answered 503")
    assert _post(port, _ndjson(["next"]), token=None)[0] == 200
    assert agent.stop() == 0


class _Receiver(BaseHTTPRequestHandler):
    """An HTTP sink's target: stores every NDJSON body it is sent."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_entries_answered_200_while_a_sink_is_down_are_delivered_after_a_kill_9(
    tmp_path: Path, start_agent
) -> None:
    """With a sink down the 200 waits for the retry spool to hold the batch on disk,
    not for the sink: the entries reach the other sink at once, this one after a restart."""
    port, target = free_port(), free_port()
    sinks = (
        '  out: {type: file, path: "./out/all.ndjson"}\n'
        f'  web: {{type: http, url: "http://127.0.0.1:{target}/in", timeout: 1s}}'
    )
    config, address = _config(tmp_path, port, sinks)
    agent = _start(start_agent, config, address, port)
    messages = [f"e{i}" for i in range(40)]
    status, _, _ = _post(port, _ndjson(messages), token=None)
    assert status == 200
    _kill_tree(agent)
    assert set(messages) <= set(_delivered(tmp_path / "out" / "all.ndjson"))

    server = ThreadingHTTPServer(("127.0.0.1", target), _Receiver)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        agent = _start(start_agent, config, address, port)

        def received() -> set[str]:
            bodies = list(server.bodies)  # type: ignore[attr-defined]
            return {json.loads(line)["message"] for b in bodies for line in b.splitlines()}

        wait_for(lambda: set(messages) <= received(), 60, "the spooled entries")
        assert agent.stop() == 0
    finally:
        server.shutdown()
        server.server_close()


# -- the waiting itself -------------------------------------------------------------------


class _AckedLater(NullBlock):
    """HTTP_ACKED is ``value`` for the poller thread from its first look, while the
    request thread's own two checks still read 0: an ack that lands between them."""

    def __init__(self, value: int) -> None:
        super().__init__()
        self.value, self.stale = value, 2

    def get(self, counter: Counter) -> int:
        if counter != Counter.HTTP_ACKED:
            return super().get(counter)
        if threading.current_thread().name != "http-acks" and self.stale:
            self.stale -= 1
            return 0
        return self.value


def test_a_request_waits_until_its_position_is_acknowledged() -> None:
    block = NullBlock()
    waiter = AckWaiter(block)
    block.set(Counter.HTTP_ACKED, 10)
    assert waiter.wait(10, timeout=0.0)  # already acknowledged: no wait at all
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(waiter.wait(12, timeout=30)))
    thread.start()
    wait_for(lambda: waiter.waiting == 1, 10, "the request waiting")
    block.set(Counter.HTTP_ACKED, 11)  # an earlier request: not enough
    block.set(Counter.HTTP_ACKED, 12)
    thread.join(30)
    assert result == [True]
    assert waiter.waiting == 0


def test_an_acknowledgement_seen_first_by_the_poller_still_wakes_the_request() -> None:
    waiter = AckWaiter(_AckedLater(5), poll_interval=0.001)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(waiter.wait(5, timeout=60)))
    thread.start()
    # woken by the poller, not by its own 60 s deadline
    wait_for(lambda: result == [True], 20, "the request woken")
    thread.join(60)


def test_a_request_not_acknowledged_in_time_is_told_so() -> None:
    waiter = AckWaiter(NullBlock())
    assert not waiter.wait(1, timeout=0.05)
    assert waiter.waiting == 0


def test_positions_grow_even_when_the_clock_stands_still_or_a_collector_restarts() -> None:
    stuck = Positions(clock_ns=lambda: 1000)
    assert [stuck.next() for _ in range(3)] == [1000, 1001, 1002]
    first = Positions()
    issued = [first.next() for _ in range(100)]
    restarted = Positions()  # a new incarnation: the system-wide monotonic clock moved on
    assert issued == sorted(set(issued))
    assert restarted.next() > issued[-1]
