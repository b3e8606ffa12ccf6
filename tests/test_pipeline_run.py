"""Pipelines through ``logcap run``: a file of JSON lines, nginx access lines and junk goes
through steps of every type; every output entry is checked field by field, the counters
are read from ``/metrics``, and a ``kill -9`` mid-run loses nothing."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

from tests._docker_helpers import Dockerd, wait_until_exited
from tests._kafka_helpers import MockCluster, consume_all
from tests._loki_fake import LokiFake
from tests._output import read_ndjson as _entries
from tests.conftest import free_port, wait_for, write_config

PIPELINES = r"""
pipelines:
  parse:
    steps:
      - {type: json_parse, when: {field: message, matches: '^\{'}}
      - type: regex_extract
        when: {field: message, matches: '^\d'}
        pattern: >-
          ^(?P<client>\S+) \S+ \S+ \[(?P<time>[^\]]+)\]
          "(?P<method>\S+) (?P<url>\S+)[^"]*" (?P<status>\d+)
      - {type: timestamp_parse, field: fields.ts, formats: [unix_ms, rfc3339]}
      - {type: timestamp_parse, field: fields.time, formats: ['%d/%b/%Y:%H:%M:%S %z']}
      - {type: level_extract, field: fields.lvl}
      - type: level_extract
        pattern: '^(?P<level>[A-Z]+):'
        when: {field: message, matches: '^[A-Z]+:'}
      - {type: field_rename, from: fields.msg, to: message}
      - {type: field_remove, fields: [fields.lvl, fields.ts]}
      - type: field_add
        fields: {labels.kind: access}
        when: {field: fields.status, in: ['200', '404']}
  tidy:
    steps:
      - {type: drop, when: {field: level, equals: debug}}
      - {type: dedup, key: [message], window: 1h}
    timestamp_limits: {max_past: 3650d, max_future: 1d, action: clamp}
"""

LINES = [
    '{"ts": "2026-12-01T10:00:00.5Z", "lvl": "WARN", "msg": "disk low", "user": {"id": 7}}',
    '127.0.0.1 - - [01/Dec/2026:10:00:01 +0000] "GET /x HTTP/1.1" 200 12',
    "junk: not parsed at all",
    '{"ts": 1796119202000, "lvl": "debug", "msg": "noise"}',
    "junk: not parsed at all",
    '{"broken json',
    "ERR: from the message",
    '{"ts": "2999-01-01T00:00:00Z", "msg": "from the future", "lvl": "bogus"}',
]


def test_every_step_type_through_logcap_run(tmp_path: Path, start_agent) -> None:
    (tmp_path / "logs" / "shop").mkdir(parents=True)
    log = tmp_path / "logs" / "shop" / "app.log"
    log.write_text("\n".join(LINES) + "\n")
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        PIPELINES
        + """
data_dir: ./data
sources:
  app:
    type: file
    include: ["./logs/**/*.log"]
    pipelines: [parse, tidy]
    path_labels: '/logs/(?P<service>[^/]+)/'
sinks:
  out: {type: file, path: "./out/all.ndjson"}
dispatcher: {batch_timeout: 20ms}
""",
        address,
    )
    began = time.time()
    agent = start_agent(config, address)
    agent.wait_ready()
    out = tmp_path / "out" / "all.ndjson"
    wait_for(lambda: len(_entries(out)) == 6, 60, "6 entries")
    assert agent.metric("logcap_source_pipeline_dropped_total", component="app") == 2
    # the broken JSON line, and the unknown level 'bogus'
    assert agent.metric("logcap_source_pipeline_errors_total", component="app") == 2
    assert agent.metric("logcap_source_timestamps_out_of_range_total", component="app") == 1
    # per pipeline step and reason: a series for every outcome each step can have
    errors = _samples(
        agent, "logcap_pipeline_errors_total", "component", "pipeline", "step", "reason"
    )
    assert {key: value for key, value in errors.items() if value} == {
        ("app", "parse", "0:json_parse", "invalid_json"): 1,
        ("app", "parse", "4:level_extract", "unknown_level"): 1,
    }
    assert set(errors) == {
        ("app", "parse", step, reason)
        for step, reasons in [
            ("0:json_parse", ["not_text", "invalid_json", "not_an_object"]),
            ("1:regex_extract", ["no_match"]),
            ("2:timestamp_parse", ["no_format_matched"]),
            ("3:timestamp_parse", ["no_format_matched"]),
            ("4:level_extract", ["unknown_level"]),
            ("5:level_extract", ["unknown_level"]),
        ]
        for reason in reasons
    }
    assert _samples(agent, "logcap_pipeline_dropped_total", "component", "pipeline", "step") == {
        ("app", "tidy", "0:drop"): 1,
        ("app", "tidy", "1:dedup"): 1,
    }
    assert _samples(
        agent, "logcap_pipeline_timestamps_out_of_range_total", "component", "pipeline", "action"
    ) == {("app", "tidy", "clamp"): 1}
    assert agent.stop() == 0

    entries = _entries(out)
    labels = {"host": entries[0]["labels"]["host"], "path": str(log), "file_name": "app.log"}
    labels["service"] = "shop"
    for e in entries:
        assert e["source"] == "app"
        assert began <= _epoch(e["ingested_at"]) <= time.time()  # ingested_at: the read time
        assert set(e) <= {
            "timestamp",
            "ingested_at",
            "source",
            "labels",
            "level",
            "fields",
            "message",
        }
    warn, access, junk, broken, err, future = entries
    assert warn == {
        "timestamp": "2026-12-01T10:00:00.500000000Z",
        "ingested_at": warn["ingested_at"],
        "source": "app",
        "labels": labels,
        "level": "warning",
        "fields": {"user": {"id": 7}},
        "message": "disk low",
    }
    assert access["timestamp"] == "2026-12-01T10:00:01.000000000Z"
    assert access["labels"] == {**labels, "kind": "access"}
    assert access["fields"] == {
        "client": "127.0.0.1",
        "time": "01/Dec/2026:10:00:01 +0000",
        "method": "GET",
        "url": "/x",
        "status": "200",
    }
    assert access["message"] == LINES[1] and "level" not in access
    # junk is delivered as it came, once (the second copy is a duplicate within the hour)
    assert junk == {
        "timestamp": junk["ingested_at"],
        "ingested_at": junk["ingested_at"],
        "source": "app",
        "labels": labels,
        "message": "junk: not parsed at all",
    }
    assert broken["message"] == '{"broken json' and "fields" not in broken
    assert err["level"] == "error" and err["message"] == "ERR: from the message"
    # an event time 970 years ahead is clamped to the read time; 'bogus' is no level
    assert future["timestamp"] == future["ingested_at"] and "level" not in future
    assert future["message"] == "from the future"


def _samples(agent, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Every sample of ``name`` on /metrics, by the values of ``labels``."""
    _, body = agent.get("/metrics")
    found = {}
    for line in body.decode().splitlines():
        if line.startswith(name + "{"):
            text, value = line[len(name) + 1 :].rsplit("} ", 1)
            pairs = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', text))
            found[tuple(pairs[label] for label in labels)] = float(value)
    return found


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp[:26] + "+00:00").timestamp()  # to the microsecond


def test_a_kill_9_mid_run_loses_nothing_with_pipelines(tmp_path: Path, start_agent) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        """
data_dir: ./data
pipelines:
  parse: {steps: [{type: json_parse}, {type: level_extract, field: fields.lvl}]}
sources:
  app: {type: file, include: ["./logs/*.log"], pipelines: [parse], poll_interval: 50ms}
sinks:
  out: {type: file, path: "./out/all.ndjson"}
dispatcher: {batch_timeout: 20ms, checkpoint_interval: 100ms}
""",
        address,
    )
    total = 60_000
    killed = threading.Event()

    def write() -> None:
        with open(logs / "app.log", "a") as f:
            for n in range(0, total, 500):
                if n == total // 2:
                    killed.wait(60)  # the second half is written while the agent is dead
                f.write("".join(f'{{"n": {i}, "lvl": "info"}}\n' for i in range(n, n + 500)))
                f.flush()
                time.sleep(0.005)

    writer = threading.Thread(target=write)
    agent = start_agent(config, address)
    agent.wait_ready()
    writer.start()
    out = tmp_path / "out" / "all.ndjson"
    wait_for(lambda: len(_entries(out)) > total // 4, 60, "a quarter delivered")
    agent.kill()  # the supervisor, SIGKILL: its children die with it (PR_SET_PDEATHSIG)
    killed.set()
    writer.join(timeout=60)
    again = start_agent(config, address)
    again.wait_ready()

    def numbers() -> list[int]:
        return [e["fields"]["n"] for e in _entries(out)]

    wait_for(lambda: len(set(numbers())) == total, 120, "every line after the restart")
    assert again.stop() == 0
    seen = numbers()
    assert set(seen) == set(range(total))
    assert all(e["level"] == "info" for e in _entries(out))
    assert len(seen) - total < total // 2  # duplicates: what was in flight at the kill


def _post(port: int, body: bytes) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/logs", data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_http_entries_run_the_source_s_pipelines(tmp_path: Path, start_agent) -> None:
    address, port = f"127.0.0.1:{free_port()}", free_port()
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
pipelines:
  parse:
    steps:
      - {{type: json_parse}}
      - {{type: level_extract, field: fields.severity}}
      - {{type: dedup, key: [message], window: 1h}}
sources:
  ingest: {{type: http, address: "127.0.0.1:{port}", pipelines: [parse], labels: {{env: prod}}}}
sinks:
  out: {{type: file, path: "./out/all.ndjson"}}
dispatcher: {{batch_timeout: 20ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    first = json.dumps([{"message": '{"severity": "ERR", "code": 5}'}, {"message": "plain"}])
    wait_for(lambda: _post(port, first.encode()) == 200, 30, "the ingest port")
    assert _post(port, json.dumps({"message": "plain"}).encode()) == 200  # a duplicate
    out = tmp_path / "out" / "all.ndjson"
    wait_for(lambda: len(_entries(out)) == 2, 30, "2 entries")
    assert agent.metric("logcap_source_pipeline_dropped_total", component="ingest") == 1
    assert agent.stop() == 0
    parsed, plain = _entries(out)
    assert parsed["level"] == "error" and parsed["fields"] == {"severity": "ERR", "code": 5}
    assert parsed["labels"]["env"] == "prod" and parsed["labels"]["ingested_via"] == "http"
    assert plain["message"] == "plain" and "fields" not in plain
    assert len(_entries(out)) == 2  # the duplicate stayed out


def test_docker_lines_run_the_source_s_pipelines(
    tmp_path: Path, docker_daemon: Dockerd, start_agent
) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
pipelines:
  parse: {{steps: [{{type: json_parse}}, {{type: level_extract, field: fields.lvl}}]}}
sources:
  d: {{type: docker, docker_host: "{docker_daemon.host}", pipelines: [parse]}}
sinks:
  out: {{type: file, path: "./out/all.ndjson"}}
dispatcher: {{batch_timeout: 50ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    docker_daemon.run("js", """echo '{"lvl": "warn", "n": 1}'; echo not json""")
    wait_until_exited(docker_daemon, ["js"])
    out = tmp_path / "out" / "all.ndjson"
    wait_for(lambda: len(_entries(out)) == 2, 60, "the container's 2 lines")
    assert agent.stop() == 0
    junk, parsed = sorted(_entries(out), key=lambda e: e["message"])  # 'n' < '{'
    assert parsed["level"] == "warning" and parsed["fields"] == {"lvl": "warn", "n": 1}
    assert parsed["labels"]["container_name"] == "js"
    assert junk["message"] == "not json" and "fields" not in junk


def test_sinks_render_a_pipeline_s_level_and_fields(tmp_path: Path, start_agent) -> None:
    (tmp_path / "logs").mkdir()
    lines = [json.dumps({"lvl": lvl, "n": n}) for n, lvl in enumerate(["warn", "err", "err"])]
    (tmp_path / "logs" / "app.log").write_text("\n".join([*lines, "plain"]) + "\n")
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        """
data_dir: ./data
pipelines:
  parse: {steps: [{type: json_parse}, {type: level_extract, field: fields.lvl}]}
sources:
  app: {type: file, include: ["./logs/*.log"], pipelines: [parse]}
sinks:
  text: {type: file, path: "./out/app.log", format: text,
         text_template: "{level}|{fields.n}|{message}"}
dispatcher: {batch_timeout: 20ms}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    out = tmp_path / "out" / "app.log"
    wait_for(lambda: out.exists() and out.read_text().count("\n") == 4, 30, "4 lines")
    assert agent.stop() == 0
    assert out.read_text().splitlines() == [
        f"warning|0|{lines[0]}",
        f"error|1|{lines[1]}",
        f"error|2|{lines[2]}",
        "||plain",
    ]


def test_fields_and_levels_name_files_topics_keys_headers_and_loki_streams(
    tmp_path: Path, start_agent, mock_cluster: MockCluster
) -> None:
    """'{fields.x}' and '{level}' in a file sink's path, a Kafka sink's topic, key and
    headers and a Loki sink's labels, through ``logcap run``: every entry lands where its
    own field names, an entry without the field where 'unknown' (or no label) says, a
    value cannot climb out of the directory, and each entry arrives exactly once."""
    (tmp_path / "logs").mkdir()
    services = ["web", "db", "web", "../etc", None, "db"]
    lines = [
        json.dumps({"lvl": "err" if n % 2 else "info", "n": n, "svc": svc, "user": {"id": n}})
        for n, svc in enumerate(services)
    ]
    (tmp_path / "logs" / "app.log").write_text("\n".join(lines) + "\n")
    for topic in ("logs-web", "logs-db", "logs-.._etc", "logs-unknown"):
        mock_cluster.create_topic(topic, partitions=1)
    address = f"127.0.0.1:{free_port()}"
    with LokiFake() as loki:
        config = write_config(
            tmp_path,
            f"""
data_dir: ./data
pipelines:
  parse: {{steps: [{{type: json_parse}}, {{type: level_extract, field: fields.lvl}}]}}
sources:
  app: {{type: file, include: ["./logs/*.log"], pipelines: [parse]}}
sinks:
  files: {{type: file, path: "./out/{{level}}/{{fields.svc}}-{{labels.host}}.log"}}
  kafka: {{type: kafka, bootstrap_servers: "{mock_cluster.bootstrap}",
          topic: "logs-{{fields.svc}}", key_field: fields.user.id,
          header_labels: [fields.svc, level]}}
  loki: {{type: loki, url: "{loki.url}", labels: {{job: "{{source}}", svc: "{{fields.svc}}"}},
         entry_labels: false}}
dispatcher: {{batch_timeout: 20ms}}
""",
            address,
        )
        agent = start_agent(config, address)
        agent.wait_ready()
        wait_for(lambda: loki.entry_count() == len(lines), 30, "every entry in Loki")
        messages = consume_all(mock_cluster.bootstrap, ["^logs-.*"], len(lines), timeout=60)
        assert agent.stop() == 0
        streams = loki.streams()
    host = socket.gethostname()
    out = tmp_path / "out"
    written = {
        str(path.relative_to(out)): [e["message"] for e in _entries(path)]
        for path in sorted(out.rglob("*.log"))
    }
    safe_host = re.sub(r"[^A-Za-z0-9_.-]", "_", host)
    assert written == {
        f"error/.._etc-{safe_host}.log": [lines[3]],
        f"error/db-{safe_host}.log": [lines[1], lines[5]],
        f"info/unknown-{safe_host}.log": [lines[4]],
        f"info/web-{safe_host}.log": [lines[0], lines[2]],
    }
    assert not (tmp_path / "etc").exists()
    by_topic = sorted(
        (m.topic(), m.key(), m.headers(), json.loads(m.value())["message"]) for m in messages
    )
    assert by_topic == sorted(
        (
            f"logs-{(svc or 'unknown').replace('/', '_')}",
            str(n).encode(),
            [*([("fields.svc", svc.encode())] if svc else []), ("level", level.encode())],
            lines[n],
        )
        for n, (svc, level) in enumerate(zip(services, ["info", "error"] * 3, strict=True))
    )
    assert {labels: [line for _, line in entries] for labels, entries in streams.items()} == {
        (("job", "app"), ("svc", "web")): [lines[0], lines[2]],
        (("job", "app"), ("svc", "db")): [lines[1], lines[5]],
        (("job", "app"), ("svc", "../etc")): [lines[3]],
        (("job", "app"),): [lines[4]],
    }


def test_an_entry_the_steps_grow_past_a_slot_loses_its_fields_not_itself(
    tmp_path: Path, start_agent
) -> None:
    address, port = f"127.0.0.1:{free_port()}", free_port()
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
buffer: {{collector_slot_bytes: 64KiB, collector_slots: 16}}
pipelines:
  parse: {{steps: [{{type: json_parse}}]}}
sources:
  ingest: {{type: http, address: "127.0.0.1:{port}", pipelines: [parse], max_body_bytes: 256KiB}}
sinks:
  out: {{type: file, path: "./out/all.ndjson"}}
dispatcher: {{batch_timeout: 20ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    big = json.dumps({"blob": "x" * 40_000})  # 40 KB: message and fields pass a 64 KiB slot
    body = json.dumps([{"message": big}, {"message": '{"small": 1}'}]).encode()
    wait_for(lambda: _post(port, body) == 200, 30, "the ingest port")
    out = tmp_path / "out" / "all.ndjson"
    wait_for(lambda: len(_entries(out)) == 2, 30, "both entries")
    assert agent.metric("logcap_source_pipeline_errors_total", component="ingest") == 1
    assert agent.stop() == 0
    grown, small = _entries(out)
    assert grown["message"] == big and "fields" not in grown
    assert small["fields"] == {"small": 1}
