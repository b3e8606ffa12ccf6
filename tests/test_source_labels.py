"""Source labels through ``logcap run``: static ``labels`` on every source type (the
docker source's are checked in test_docker_source.py), a file source's ``path_labels``
and its built-in ``host``, ``path`` and ``file_name``."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

from tests._output import read_ndjson as _entries
from tests.conftest import free_port, wait_for, write_config


def test_file_entries_carry_static_path_and_built_in_labels(tmp_path: Path, start_agent) -> None:
    for service, name in (("web", "access.log"), ("db", "slow.log")):
        (tmp_path / "logs" / service).mkdir(parents=True)
        (tmp_path / "logs" / service / name).write_text(f"{service} 1\n{service} 2\n")
    (tmp_path / "logs" / "top.log").write_text("no service\n")  # path_labels do not match
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        """
data_dir: ./data
sources:
  app:
    type: file
    include: ["./logs/**/*.log"]
    labels: {env: prod, team: ops}
    path_labels: '/logs/(?P<service>[^/]+)/(?P<kind>access|error)?'
sinks:
  out: {type: file, path: "./out/all.ndjson"}
dispatcher: {batch_timeout: 20ms}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    out = tmp_path / "out" / "all.ndjson"
    wait_for(lambda: len(_entries(out)) == 5, 60, "5 entries")
    assert agent.stop() == 0

    host = socket.gethostname()
    labels = {e["message"]: e["labels"] for e in _entries(out)}
    logs = tmp_path / "logs"
    common = {"env": "prod", "team": "ops", "host": host}
    web = {"service": "web", "kind": "access", "path": f"{logs}/web/access.log"}
    assert labels["web 1"] == labels["web 2"] == {**common, **web, "file_name": "access.log"}
    db = {"service": "db", "path": f"{logs}/db/slow.log", "file_name": "slow.log"}
    assert labels["db 1"] == {**common, **db}  # a group that took no part: no label
    assert labels["no service"] == {**common, "path": f"{logs}/top.log", "file_name": "top.log"}


def test_http_entries_carry_static_labels_over_the_client_s_own(
    tmp_path: Path, start_agent
) -> None:
    address, port = f"127.0.0.1:{free_port()}", free_port()
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  ingest: {{type: http, address: "127.0.0.1:{port}", labels: {{env: prod, dc: eu1}}}}
sinks:
  out: {{type: file, path: "./out/all.ndjson"}}
dispatcher: {{batch_timeout: 20ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    body = json.dumps(
        {"message": "hi", "level": "error", "labels": {"env": "dev", "team": "pay"}}
    ).encode()

    def post() -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/logs", data=body)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return int(reply.status)
        except OSError:
            return 0

    wait_for(lambda: post() == 200, 30, "the ingest port")
    assert agent.stop() == 0
    (entry,) = _entries(tmp_path / "out" / "all.ndjson")
    assert entry["labels"] == {
        "env": "prod",  # the operator's static label, not the client's
        "dc": "eu1",
        "team": "pay",
        "level": "error",
        "ingested_via": "http",
        "client_ip": "127.0.0.1",
        "host": socket.gethostname(),
    }
