"""A source's ``rate_limit`` through ``logcap run``: lossless by default (files and
containers are read slower, HTTP clients get 429 + Retry-After), ``when_exceeded: drop``
drops and counts. Each run checks which entries arrived, not only how many.

The elapsed-time checks are lower bounds a token bucket guarantees (it cannot let
entries through faster than its rate), not performance targets."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

from tests._docker_helpers import Dockerd, wait_until_exited
from tests._output import read_ndjson as _entries
from tests.conftest import free_port, wait_for, write_config


def _stamp(entry: dict) -> float:
    return datetime.fromisoformat(entry["ingested_at"][:26] + "+00:00").timestamp()


def _agent(tmp_path: Path, start_agent, sources: str):
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
{sources}
sinks:
  out: {{type: file, path: "./out/all.ndjson"}}
dispatcher: {{batch_timeout: 20ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    return agent, tmp_path / "out" / "all.ndjson"


def test_a_file_source_over_its_limit_reads_slower_and_loses_nothing(
    tmp_path: Path, start_agent
) -> None:
    (tmp_path / "logs").mkdir()
    total = 50_000
    (tmp_path / "logs" / "app.log").write_text("".join(f"line {n:06d}\n" for n in range(total)))
    agent, out = _agent(
        tmp_path,
        start_agent,
        '  app: {type: file, include: ["./logs/*.log"], '
        "rate_limit: {events_per_second: 10000, burst: 10000}}",
    )
    wait_for(lambda: len(_entries(out)) >= total, 60, "every line")
    held = agent.metric("logcap_source_rate_limited_seconds_total", component="app")
    assert agent.stop() == 0
    entries = _entries(out)
    assert [e["message"] for e in entries] == [f"line {n:06d}" for n in range(total)]
    # 10,000 at once (the burst), then 40,000 at 10,000 a second: at least 4 s of reading
    assert _stamp(entries[-1]) - _stamp(entries[0]) >= 3.9
    assert held >= 3.0


def test_when_exceeded_drop_drops_and_counts_what_is_over(tmp_path: Path, start_agent) -> None:
    (tmp_path / "logs").mkdir()
    total = 5_000
    (tmp_path / "logs" / "app.log").write_text("".join(f"line {n:06d}\n" for n in range(total)))
    agent, out = _agent(
        tmp_path,
        start_agent,
        '  app: {type: file, include: ["./logs/*.log"], '
        "rate_limit: {events_per_second: 100, burst: 1000, when_exceeded: drop}}",
    )

    def accounted() -> bool:
        dropped = agent.metric("logcap_source_rate_limit_dropped_total", component="app")
        return len(_entries(out)) + dropped == total

    wait_for(accounted, 60, "every line delivered or counted as dropped")
    dropped = agent.metric("logcap_source_rate_limit_dropped_total", component="app")
    assert agent.stop() == 0
    messages = [e["message"] for e in _entries(out)]
    assert 1_000 <= len(messages) < total and dropped > 0
    assert messages == [f"line {n:06d}" for n in range(len(messages))]  # the first ones, in order


def _post(port: int, body: bytes) -> tuple[int, float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/logs", data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status), 0.0
    except urllib.error.HTTPError as exc:
        return exc.code, float(exc.headers.get("Retry-After", "0"))
    except OSError:
        return 0, 0.1


def test_http_requests_over_the_limit_get_429_and_a_polite_client_delivers_all(
    tmp_path: Path, start_agent
) -> None:
    port = free_port()
    agent, out = _agent(
        tmp_path,
        start_agent,
        f'  ingest: {{type: http, address: "127.0.0.1:{port}", '
        "rate_limit: {events_per_second: 200, burst: 200}}",
    )
    sent, throttled = [], 0
    for request in range(50):
        body = json.dumps([{"message": f"r{request:02d} e{n:02d}"} for n in range(20)]).encode()
        deadline = time.monotonic() + 60
        while True:
            status, retry_after = _post(port, body)
            if status == 200:
                break
            assert status in (0, 429) and time.monotonic() < deadline, status
            throttled += status == 429
            if status == 429:
                assert retry_after >= 1  # the bucket's Retry-After, in whole seconds
            time.sleep(min(retry_after, 0.2))  # sooner than told: a 429 again costs nothing
        sent += [f"r{request:02d} e{n:02d}" for n in range(20)]
    assert throttled > 0
    assert agent.metric("logcap_source_http_throttled_total", component="ingest") == throttled
    wait_for(lambda: len(_entries(out)) >= len(sent), 30, "every entry answered 200")
    assert agent.stop() == 0
    assert [e["message"] for e in _entries(out)] == sent


def test_a_docker_source_over_its_limit_reads_slower_and_loses_nothing(
    tmp_path: Path, docker_daemon: Dockerd, start_agent
) -> None:
    agent, out = _agent(
        tmp_path,
        start_agent,
        f'  d: {{type: docker, docker_host: "{docker_daemon.host}", '
        "rate_limit: {events_per_second: 1000, burst: 500}}",
    )
    docker_daemon.run("many", "i=0; while [ $i -lt 3000 ]; do echo n$i; i=$((i+1)); done")
    wait_until_exited(docker_daemon, ["many"])
    wait_for(lambda: len(_entries(out)) >= 3000, 60, "the container's 3,000 lines")
    assert agent.stop() == 0
    entries = _entries(out)
    assert sorted(e["message"] for e in entries) == sorted(f"n{i}" for i in range(3000))
    # 500 at once, then 2,500 at 1,000 a second
    assert _stamp(max(entries, key=_stamp)) - _stamp(min(entries, key=_stamp)) >= 2.4
