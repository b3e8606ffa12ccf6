"""The supervisor's HTTP API through ``logcap run``: /config without its secrets,
/positions from the checkpoint, /dlq as ``logcap dlq ls`` counts it, /stats as /metrics
counts it, POST only with ``api.token``, HEAD on every GET path; and ``logcap validate``
refusing an API other hosts can reach without a token.

The agent reads one file into a healthy file sink and a broken one (a file name longer
than NAME_MAX: a permanent failure, so every batch of it lands in the DLQ at once)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from logcap.cli import main
from logcap.cli_common import EX_CONFIG
from logcap.config import load_config
from tests.conftest import Agent, free_port, wait_for, write_config
from tests.test_http_sink import start_server as start_server  # a fixture

LINES = 1000
TOO_LONG = "n" * 300  # past NAME_MAX (255): ENAMETOOLONG, a permanent failure
ENV = {
    "API_TOKEN": "api-s3cret-7x",
    "HEADER_SECRET": "header-s3cret-9q",
    "OUT_DIR": "./out",
}
INGEST_TOKEN = "ingest-s3cret-4k"  # written in the file itself, not from the environment
BODY = """\
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
  ingest: {{type: http, address: "127.0.0.1:{ingest}", bearer_token: {token}}}
sinks:
  healthy: {{type: file, path: "${{OUT_DIR}}/healthy.ndjson"}}
  broken: {{type: file, path: "./out/{too_long}"}}
  web: {{type: http, url: "http://127.0.0.1:{web}/in", inputs: [ingest],
         headers: {{X-Tenant: "${{HEADER_SECRET}}"}}}}
dispatcher: {{batch_max_events: 500, batch_timeout: 50ms}}
"""
GET_PATHS = ["/metrics", "/health", "/ready", "/config", "/positions", "/dlq", "/stats"]


def _request(
    address: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        connection.close()


def _json(address: str, path: str) -> Any:
    status, _, body = _request(address, "GET", path)
    assert status == 200, body
    return json.loads(body)


def _numbers(value: Any) -> Any:
    """Config units (ByteSize, Duration) as the plain numbers JSON holds."""
    return int(value) if isinstance(value, int) else float(value)


def _identity(log: Path) -> dict[str, int]:
    """What the checkpoint holds for ``log`` once all of it is delivered."""
    stat = log.stat()
    return {"dev": stat.st_dev, "ino": stat.st_ino, "offset": stat.st_size}


class Run:
    """The running agent and what the test gave it."""

    def __init__(self, root: Path, agent: Agent, config: Path) -> None:
        self.root, self.agent, self.config = root, agent, config
        self.address = agent.address
        self.log = root / "logs" / "a.log"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One agent for the module (starting one takes seconds on a busy machine), stopped
    and reaped at teardown; every test waits for the state it reads."""
    root = tmp_path_factory.mktemp("api")
    (root / "logs").mkdir()
    (root / "logs" / "a.log").write_bytes(b"".join(b"line %06d\n" % n for n in range(LINES)))
    address = f"127.0.0.1:{free_port()}"
    body = BODY.format(ingest=free_port(), web=free_port(), token=INGEST_TOKEN, too_long=TOO_LONG)
    config = write_config(root, body, address)
    config.write_text(config.read_text().replace("api: {", 'api: {token: "${API_TOKEN}", ', 1))
    agent = Agent(config, address, cwd=root, env=ENV)
    try:
        agent.wait_ready(60)
        wait_for(
            lambda: (
                _json(address, "/dlq")["entries"] == LINES
                and _json(address, "/positions")["sources"]["app"][:1]
                == [{"path": str(root / "logs" / "a.log"), **_identity(root / "logs" / "a.log")}]
            ),
            60,
            "every line delivered to the healthy sink, dead-lettered for the broken one, "
            "and checkpointed",
        )
        yield Run(root, agent, config)
        assert agent.stop() == 0, agent.log.read_text()
    finally:
        agent.kill()


# -- /config ----------------------------------------------------------------------------


def test_config_is_the_effective_config_with_every_secret_redacted(run: Run) -> None:
    status, headers, body = _request(run.address, "GET", "/config")
    assert status == 200 and headers["Content-Type"] == "application/json"
    for secret in (INGEST_TOKEN, ENV["API_TOKEN"], ENV["HEADER_SECRET"]):
        assert secret.encode() not in body
    expected = msgspec.to_builtins(load_config(run.config, env=ENV), enc_hook=_numbers)
    expected["api"]["token"] = "<redacted>"  # named like a secret (and from ${API_TOKEN})
    expected["sources"]["ingest"]["bearer_token"] = "<redacted>"  # named like a secret
    expected["sinks"]["web"]["headers"]["X-Tenant"] = "<redacted>"  # from ${HEADER_SECRET}
    expected["sinks"]["healthy"]["path"] = "<redacted>"  # from ${OUT_DIR}: may be secret
    shown = json.loads(body)
    assert shown == expected
    # and what is not secret is there as the agent runs it
    assert shown["data_dir"] == str(run.root / "data")
    assert shown["sources"]["app"]["include"] == [str(run.root / "logs" / "*.log")]
    assert shown["sinks"]["broken"]["path"] == str(run.root / "out" / TOO_LONG)
    assert shown["dispatcher"]["batch_max_events"] == 500
    assert shown["dispatcher"]["batch_timeout"] == pytest.approx(0.05)
    assert shown["api"]["address"] == run.address


# -- /positions -------------------------------------------------------------------------


def test_positions_are_the_checkpoint_of_each_source(run: Run) -> None:
    stat = run.log.stat()
    assert stat.st_size == LINES * len(b"line 000000\n")
    assert _json(run.address, "/positions") == {
        "sources": {
            "app": [
                {
                    "path": str(run.log),
                    "dev": stat.st_dev,
                    "ino": stat.st_ino,
                    "offset": stat.st_size,
                }
            ],
            "ingest": [],  # an http source has no position to keep
        }
    }


# -- /dlq -------------------------------------------------------------------------------


def test_dlq_is_counted_by_sink_and_reason_as_dlq_ls_reads_it(run: Run) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "logcap", "dlq", "ls", "--json", "--config", str(run.config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
        cwd=run.root,
    )
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    records = sum(row["records"] for row in rows)
    assert records >= 2  # 1000 lines in batches of at most 500
    assert _json(run.address, "/dlq") == {
        "segments": len(rows),
        "bytes": sum(row["bytes"] for row in rows),
        "records": records,
        "entries": LINES,
        "pending": records,
        "reasons": {"permanent": records},
        "sinks": {
            "broken": {
                "records": records,
                "entries": LINES,
                "pending": records,
                "reasons": {"permanent": records},
            }
        },
        "problems": [],
    }
    sizes = sum(p.stat().st_size for p in (run.root / "data" / "dlq").glob("*.dlq"))
    assert _json(run.address, "/dlq")["bytes"] == sizes


# -- /stats -----------------------------------------------------------------------------


def _exported(run: Run, component: str, name: str) -> float:
    metric = f"logcap_{name}" if name == "source_files_watched" else f"logcap_{name}_total"
    return run.agent.metric(metric, component=component)


def test_stats_give_each_component_its_process_counters_and_the_rings(run: Run) -> None:
    wait_for(
        lambda: _json(run.address, "/stats")["checkpoint"]["lag_bytes"] == 0,
        60,
        "the checkpoint lag to be fed as 0",
    )
    stats = _json(run.address, "/stats")
    assert set(stats) == {"components", "rings", "checkpoint", "ledger", "reload"}
    assert stats["reload"]["generation"] == 0 and stats["reload"]["failures"] == 0
    # the events ledger, as /metrics has it: every published entry somewhere
    for sink, books in stats["ledger"].items():
        assert books["unaccounted"] == 0, sink
        assert books["published"] == (
            books["delivered"] + books["dead_lettered"] + books["in_ring"] + books["held_by_retry"]
        ), sink
    assert stats["ledger"]["healthy"]["delivered"] == LINES
    components = stats["components"]
    roles = {name: (c["role"], c["kind"]) for name, c in components.items()}
    assert roles == {
        "app": ("source", "file"),
        "ingest": ("source", "http"),
        "dispatcher": ("dispatcher", "dispatcher"),
        "healthy": ("sink", "file"),
        "broken": ("sink", "file"),
        "web": ("sink", "http"),
        "retry": ("retry", "retry"),
    }
    for name, component in components.items():
        assert component["running"] is True and component["restarts"] == 0, name
        assert component["crash_loop"] == 0, name
        assert ("circuit" in component) == (component["role"] == "sink"), name
        # every counter is the one /metrics exports for that component, no more, no less
        for counter, value in component["counters"].items():
            assert value == _exported(run, name, counter), (name, counter)
    for sink in ("healthy", "broken", "web"):
        assert components[sink]["circuit"] == "closed"  # permanent failures keep it closed
    app, healthy = components["app"]["counters"], components["healthy"]["counters"]
    assert app["component_received_events"] == LINES
    assert app["source_files_watched"] == 1
    assert healthy["component_sent_events"] == LINES
    assert components["broken"]["counters"]["component_sent_events"] == 0
    assert components["dispatcher"]["counters"]["component_received_events"] == LINES
    assert "source_files_watched" not in components["ingest"]["counters"]
    exported = run.agent.get("/metrics")[1].decode()
    for name, component in components.items():
        families = {
            line.split("{", 1)[0].removeprefix("logcap_").removesuffix("_total")
            for line in exported.splitlines()
            if f'component="{name}"' in line and 'role="' in line and "process_" not in line
        }
        families -= {"child_up", "child_restarts", "child_crash_loop"}
        assert set(component["counters"]) == families, name
    rings = stats["rings"]
    assert set(rings) == {"app", "ingest", "batches"} | {
        f"{sink}:{kind}" for sink in ("healthy", "broken", "web") for kind in ("fail", "redo")
    }
    assert rings["app"] == {"used": 0, "capacity": 16}
    assert rings["batches"] == {"used": 0, "capacity": 16}
    assert rings["broken:fail"] == {"used": 0, "capacity": 4}
    assert stats["checkpoint"]["lag_bytes"] == 0
    assert isinstance(stats["checkpoint"]["lag_seconds"], float)


# -- POST -------------------------------------------------------------------------------


def test_post_without_or_with_a_wrong_token_is_401(run: Run) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": ENV["API_TOKEN"]}):
        status, answer, body = _request(run.address, "POST", "/dlq/replay", headers)
        assert status == 401, headers
        assert answer["WWW-Authenticate"] == 'Bearer realm="logcap"'
        assert json.loads(body) == {"error": "POST needs 'Authorization: Bearer <api.token>'"}
    assert _json(run.address, "/dlq")["pending"] == _json(run.address, "/dlq")["records"]


def test_dlq_replay_with_the_token_runs_the_replay_and_answers_its_outcome(run: Run) -> None:
    """The broken sink still cannot write: the replay's records fail again (500, the
    CLI's summary and warnings), and stay pending; bad parameters are refused."""
    bearer = {"Authorization": f"Bearer {ENV['API_TOKEN']}"}
    pending = _json(run.address, "/dlq")["pending"]
    status, _, body = _request(run.address, "POST", "/dlq/replay?sink=broken", bearer)
    answer = json.loads(body)
    assert status == 500 and answer["exit_code"] == 1
    assert answer["summary"] == f"replayed 0 records (0 entries); {pending} failed"
    assert answer["warnings"] and all("warning" in line for line in answer["warnings"])
    assert _json(run.address, "/dlq")["pending"] == pending
    for query, error in (
        ("?sink=nope", "no sink named 'nope'"),
        ("?reason=lost", "reason 'lost' is not one of permanent, exhausted, overflow"),
        ("?all=1", "replay takes one 'sink' and one 'reason' at most, not 'all'"),
    ):
        status, _, body = _request(run.address, "POST", "/dlq/replay" + query, bearer)
        assert status == 400 and json.loads(body)["error"].startswith(error), query
    status, _, body = _request(run.address, "POST", "/nothing", bearer)
    assert (status, json.loads(body)) == (404, {"error": "nothing to POST to at /nothing"})


# -- HEAD, unknown paths ------------------------------------------------------------


@pytest.mark.parametrize("path", GET_PATHS)
def test_head_answers_as_get_without_a_body(run: Run, path: str) -> None:
    status, headers, body = _request(run.address, "GET", path)
    head_status, head_headers, head_body = _request(run.address, "HEAD", path)
    assert (head_status, head_body) == (status, b"")
    assert head_headers["Content-Type"] == headers["Content-Type"]
    if path not in ("/metrics", "/health"):  # these change between two requests
        assert int(head_headers["Content-Length"]) == len(body)


def test_an_unknown_path_is_404(run: Run) -> None:
    status, _, body = _request(run.address, "GET", "/nope?x=1")
    assert (status, json.loads(body)) == (404, {"error": "no such path /nope"})


def test_post_without_a_configured_token_is_refused(tmp_path: Path, start_agent: Any) -> None:
    address = f"127.0.0.1:{free_port()}"
    body = (
        "data_dir: ./data\nsources: {app: {type: file, include: [x]}}\n"
        "sinks: {o: {type: blackhole}}\n"
    )
    agent = start_agent(write_config(tmp_path, body, address), address, cwd=tmp_path)
    agent.wait_ready(60)
    auth = {"Authorization": "Bearer anything"}
    status, _, answer = _request(address, "POST", "/dlq/replay", auth)
    assert (status, json.loads(answer)) == (
        403,
        {"error": "POST is refused: no api.token is configured"},
    )
    assert _json(address, "/config")["api"]["token"] is None
    assert agent.stop() == 0


# -- validation -------------------------------------------------------------------------

HEAD = """\
data_dir: ./state
sources:
  app: {type: file, include: ["./logs/*.log"]}
sinks:
  devnull: {type: blackhole}
"""


def _validate(tmp_path: Path, api: str) -> tuple[int, list[str]]:
    config = tmp_path / "logcap.yaml"
    config.write_text(HEAD + api, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", "--config", str(config)], catch_exceptions=False)
    return result.exit_code, result.stderr.splitlines()


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "logs.example.com"])
def test_an_api_other_hosts_can_reach_needs_a_token(tmp_path: Path, host: str) -> None:
    code, lines = _validate(tmp_path, f"api:\n  address: {host}:9598\n")
    assert code == EX_CONFIG
    assert lines == [
        f"{tmp_path / 'logcap.yaml'}:7: api.address: {host}:9598 is not a loopback address "
        "(127.0.0.0/8, localhost), so other hosts can reach the API: set api.token (use "
        "${VAR}), or listen on 127.0.0.1",
        "invalid configuration: 1 problem(s)",
    ]
    assert _validate(tmp_path, f"api: {{address: '{host}:9598', token: t0k}}\n")[0] == 0
    assert _validate(tmp_path, f"api: {{address: '{host}:9598', enabled: false}}\n")[0] == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.8.7", "localhost", "LOCALHOST"])
def test_a_loopback_api_needs_no_token(tmp_path: Path, host: str) -> None:
    assert _validate(tmp_path, f"api: {{address: '{host}:9598'}}\n") == (
        0,
        [],
    )


@pytest.mark.parametrize("token", ["", "a b", "t\\n"])
def test_an_api_token_is_printable_ascii_without_spaces(tmp_path: Path, token: str) -> None:
    code, lines = _validate(tmp_path, f'api: {{address: "0.0.0.0:9598", token: "{token}"}}\n')
    assert code == EX_CONFIG
    assert len(lines) == 2 and lines[0].startswith(f"{tmp_path / 'logcap.yaml'}:6: api.token: ")
    assert "(a token: printable ASCII, no spaces or line breaks)" in lines[0]


def test_with_a_token_the_tap_is_only_for_whoever_has_it(run: Run) -> None:
    """/tap streams the log entries themselves: with an api.token set, GET /tap needs it
    like a POST (HEAD answers as GET would, without streaming); `logcap tap` sends it
    from --token or LOGCAP_API_TOKEN."""
    status, answer, _ = _request(run.address, "HEAD", "/tap", {})
    assert status == 401 and answer["WWW-Authenticate"] == 'Bearer realm="logcap"'
    bearer = {"Authorization": f"Bearer {ENV['API_TOKEN']}"}
    status, answer, _ = _request(run.address, "HEAD", "/tap", bearer)
    assert status == 200 and answer["Content-Type"] == "application/x-ndjson"
    refused = subprocess.run(
        [sys.executable, "-m", "logcap", "tap", "--api", f"http://{run.address}", "--limit", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "the agent refused the tap (401): GET /tap needs" in refused.stderr


def test_a_dlq_replay_over_the_api_delivers_what_the_sink_refused_before(
    tmp_path: Path, start_agent, start_server
) -> None:
    """A sink refuses every batch (400: dead-lettered), then takes them: POST /dlq/replay
    delivers every dead-lettered entry to it (200, the CLI's summary) and /dlq has
    nothing pending; a second replay finds nothing to do."""
    accepting = threading.Event()
    server = start_server()
    server.answer = lambda request: (200, {}, b"") if accepting.is_set() else (400, {}, b"no")
    (tmp_path / "logs").mkdir()
    lines = [f"line {n}" for n in range(200)]
    (tmp_path / "logs" / "a.log").write_text("\n".join(lines) + "\n")
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  collector: {{type: http, url: "{server.url}"}}
dispatcher: {{batch_max_events: 50, batch_timeout: 20ms}}
""",
        address,
    )
    config.write_text(config.read_text().replace("api: {", 'api: {token: "s3cret-token", ', 1))
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(lambda: _json(address, "/dlq")["entries"] == 200, 60, "every entry dead-lettered")
    accepting.set()
    bearer = {"Authorization": "Bearer s3cret-token"}
    status, _, body = _request(address, "POST", "/dlq/replay", bearer)
    answer = json.loads(body)
    assert status == 200 and answer["exit_code"] == 0, answer
    assert answer["summary"].startswith("replayed 4 records (200 entries)")
    delivered = sorted(json.loads(line)["message"] for line in server.lines())
    assert delivered == sorted(lines)
    assert _json(address, "/dlq")["pending"] == 0
    status, _, body = _request(address, "POST", "/dlq/replay", bearer)
    assert (status, json.loads(body)["summary"]) == (200, "nothing to replay")
    assert agent.stop() == 0
