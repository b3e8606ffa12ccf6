"""Property (Hypothesis): a generated config given to ``logcap validate`` gives exit 0 or
78 and never a traceback, and a config it accepts starts and stops cleanly with
``logcap run``.

Configs are built from every key of every section and component type, each drawn from
values that are valid, at a limit, of the wrong type, or odd text (line breaks,
placeholders, ``${...}``). Validation runs in-process (fast); ``logcap run`` is a real
subprocess, for a small sample. Bounded for CI: ``LOGCAP_PROPERTY_EXAMPLES`` (default
200) generated configs to validate, ``LOGCAP_PROPERTY_RUNS`` (default 10) runs; run
``LOGCAP_PROPERTY_EXAMPLES=2000`` by hand for the issue's 2,000.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from logcap.cli import main
from logcap.cli_common import EX_CONFIG
from tests._waiting import wait_for

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
given, settings, HealthCheck = hypothesis.given, hypothesis.settings, hypothesis.HealthCheck

EXAMPLES = int(os.environ.get("LOGCAP_PROPERTY_EXAMPLES", "200"))
RUNS = int(os.environ.get("LOGCAP_PROPERTY_RUNS", "10"))

ODD = [
    0,
    -1,
    1.5,
    "",
    " ",
    None,
    True,
    [],
    {},
    float("nan"),
    float("inf"),
    10**20,
    "1e400",
    "${LOGCAP_PROPERTY_UNSET}",
    "${LOGCAP_PROPERTY_UNSET:-}",
    "${BAD VAR}",
    "$$",
    "a\nb",
    "a\r\n",
    "{sorce}",
    "é€",
    "0s",
    "-1s",
    "1 fortnight",
    "64KiB",
    "0B",
    "99999TiB",
]
DURATIONS = ["1ms", "50ms", "1s", "2m", 0.5, 3, "0s", ".nan", "36500d", "36501d"]
SIZES = ["1", "64", "1KiB", "64KiB", "256KiB", "1MiB", "8MiB", "64MiB", "1GiB", "2TiB", 4096]
BOOLS = [True, False, "true", "no"]
NAMES = ["a", "web", "out", "x.y", "_bad", "a b", "日本", "a" * 65, "x\ny"]
ADDRESSES = ["127.0.0.1:8686", "127.0.0.1:9598", "0.0.0.0:8686", "h:99999", "nohost", ":1"]

SECTIONS: dict[str, dict[str, list[Any]]] = {
    "api": {"address": ADDRESSES, "enabled": BOOLS},
    "dispatcher": {
        "batch_max_events": [1, 10, 1000, 1_000_001],
        "batch_max_bytes": SIZES,
        "batch_timeout": DURATIONS,
        "checkpoint_interval": DURATIONS,
    },
    "buffer": {
        "collector_slots": [2, 3, 16, 64, 65536, 131072],
        "collector_slot_bytes": SIZES,
        "batch_slots": [2, 16, 17, 65536],
    },
    "supervisor": {
        "shutdown_timeout": DURATIONS,
        "restart_backoff": DURATIONS,
        "restart_backoff_max": DURATIONS,
    },
    "retry": {
        "initial_backoff": DURATIONS,
        "max_backoff": DURATIONS,
        "max_attempts": [1, 10, 0],
        "max_retry_duration": DURATIONS,
        "max_entries": [1, 1000, 1_000_000],
        "max_bytes": SIZES,
        "spool_max_bytes": SIZES,
    },
    "dlq": {
        "max_bytes": SIZES,
        "max_age": DURATIONS,
        "segment_bytes": SIZES,
        "fsync": ["always", "interval", "never", "sometimes"],
        "fsync_interval": DURATIONS,
        "when_full": ["block", "drop_oldest", "drop"],
        "reprocess": [{"enabled": False}, {"interval": "1m"}, {"bogus": 1}],
    },
}
TLS = [{"ca_file": "ca.pem"}, {"verify": False}, {"key_file": "k.pem"}, {"cert_file": "/nope"}]
HEADERS = [
    {"X-A": "b"},
    {"X-A": "b\nc"},
    {"bad name": "x"},
    {"Host": "h"},
    {"X-B": "é"},
    {"X\n": "y"},
]
LABELS = [{}, {"env": "prod"}, {"host": "x"}, {"9bad": "x"}, {"a": 1}, "env=prod"]
SOURCES: dict[str, dict[str, list[Any]]] = {
    "file": {
        "include": [["logs/*.log"], [], "logs/*.log", ["/dev/null"]],
        "exclude": [[], ["*.gz"]],
        "read_from": ["beginning", "end", "start"],
        "max_line_bytes": SIZES,
        "encoding": ["utf-8", "latin-1", "utf-16-le", "klingon"],
        "multiline": [
            None,
            {"preset": "java"},
            {"start_pattern": "^\\d"},
            {"start_pattern": "("},
            {"preset": "python", "continuation_pattern": "^ "},
            {"preset": "java", "max_lines": 1},
        ],
        "long_lines": ["truncate", "skip", "cut"],
        "fingerprint_bytes": [16, 256, 8, 70000],
        "ignore_older": [None, "1h", "0s"],
        "glob_interval": DURATIONS,
        "poll_interval": DURATIONS,
        "watch": BOOLS,
        "labels": LABELS,
        "path_labels": [None, "/(?P<service>[^/]+)/", "(", "([a-z]+)", "(?P<path>x)"],
    },
    "http": {
        "address": ADDRESSES,
        "bearer_token": [None, "t0k3n", "", "${LOGCAP_PROPERTY_UNSET:-}", "a b", "${X Y}"],
        "max_body_bytes": SIZES,
        "retry_after": DURATIONS,
        "labels": LABELS,
    },
    "docker": {
        "docker_host": ["unix:///var/run/docker.sock", "tcp://127.0.0.1:1", "ftp://x"],
        "include_names": [[], ["web*"]],
        "read_from": ["beginning", "end", "now"],
        "max_line_bytes": SIZES,
        "reconnect_max_delay": DURATIONS,
        "labels": LABELS,
    },
}
SINKS: dict[str, dict[str, list[Any]]] = {
    "file": {
        "path": ["out/{source}.log", "out/%Y/{source}.log", "out/{sorce}.log", "", "out/x"],
        "format": ["json", "text", "xml"],
        "text_template": [None, "{timestamp} {message}", "{nope}", "{", "{labels.host}"],
        "max_file_bytes": [None, 0, 100, "10MB"],
        "rotate_every": [None, "1h", "0s"],
        "compression": ["none", "gzip", "zstd", "lz4"],
        "max_files": [None, 1, 0, 5],
        "fsync": ["never", "batch", "interval", "always"],
        "fsync_interval": DURATIONS,
    },
    "console": {"stream": ["stdout", "stderr", "stdin"]},
    "blackhole": {"circuit_breaker": [{"failure_threshold": 0}, {"open_duration": "1s"}]},
    "http": {
        "url": ["http://127.0.0.1:1/in", "https://127.0.0.1:1/", "ftp://x", "http://h/x\n"],
        "compression": ["none", "gzip", "br"],
        "headers": HEADERS,
        "username": [None, "u", ""],
        "password": [None, "p"],
        "bearer_token": [None, "t", "t\r\nX: y", ""],
        "tls": [None, *TLS],
        "timeout": DURATIONS,
        "max_request_bytes": SIZES,
    },
    "loki": {
        "url": ["http://127.0.0.1:1", "https://127.0.0.1:1", "loki"],
        "tenant_id": [None, "acme", "a\nb"],
        "bearer_token": [None, "t", "t\n"],
        "headers": HEADERS,
        "tls": [None, *TLS],
        "encoding": ["protobuf", "json", "xml"],
        "compression": ["gzip", "none"],
        "labels": [{"job": "{source}"}, {"__x": "y"}, {"a": "{nope}"}],
        "max_label_values": [1, 200, 0],
    },
    "kafka": {
        "bootstrap_servers": ["127.0.0.1:1", ""],
        "topic": ["logs", "logs-{labels.service}", "logs-{servce}", ""],
        "acks": ["all", "1", "0", 1],
        "idempotence": BOOLS,
        "security_protocol": ["PLAINTEXT", "SSL", "SASL_SSL"],
        "tls": [None, {"ca_file": "ca.pem"}],
        "librdkafka_options": [{}, {"client.id": "x"}, {"bogus.option": "1"}],
    },
}
# for the runs: values that are each valid, so most drawn configs are accepted
RUN_SECTIONS: dict[str, dict[str, list[Any]]] = {
    "dispatcher": {
        "batch_max_events": [10, 1000],
        "batch_timeout": ["50ms", "1s"],
        "checkpoint_interval": ["50ms", "1s"],
    },
    "buffer": {
        "collector_slots": [16, 64],
        "collector_slot_bytes": ["256KiB", "1MiB"],
        "batch_slots": [16, 32],
    },
    "supervisor": {"restart_backoff": ["100ms", "1s"]},
    "retry": {"initial_backoff": ["100ms", "1s"], "max_attempts": [1, 5]},
    "dlq": {
        "fsync": ["always", "never"],
        "when_full": ["block", "drop_oldest"],
        "reprocess": [{"enabled": False}, {"interval": "1m"}],
    },
}
RUN_SOURCES: dict[str, dict[str, list[Any]]] = {
    "file": {
        "include": [["logs/*.log"]],
        "read_from": ["beginning", "end"],
        "encoding": ["utf-8", "latin-1"],
        "multiline": [None, {"preset": "java"}, {"start_pattern": "^\\d"}],
        "long_lines": ["truncate", "skip"],
        "glob_interval": ["100ms", "1s"],
        "poll_interval": ["100ms"],
        "watch": [True, False],
    },
    "http": {
        "bearer_token": [None, "t0k3n"],
        "max_body_bytes": ["64KiB", "1MiB"],
        "retry_after": ["1s"],
    },
}
RUN_SINKS: dict[str, dict[str, list[Any]]] = {
    "file": {
        "path": ["out/{source}.log", "out/%Y/{source}.log"],
        "max_file_bytes": [None, "10MB"],
        "rotate_every": [None, "1h"],
        "fsync": ["never", "batch"],
    },
    "console": {"stream": ["stdout", "stderr"]},
    "blackhole": {"circuit_breaker": [{"failure_threshold": 3}]},
}


Table = dict[str, dict[str, list[Any]]]


def _value(pool: list[Any], odd: bool) -> Any:
    """Mostly a value from the key's own pool, 1 in 8 an odd one (if ``odd``)."""
    if not odd:
        return st.sampled_from(pool)
    return st.integers(0, 7).flatmap(lambda pick: st.sampled_from(ODD if pick == 0 else pool))


REQUIRED = {"include", "path", "url", "bootstrap_servers", "topic"}


def _mapping(keys: dict[str, list[Any]], odd: bool) -> Any:
    """Any subset of ``keys``, each with a value drawn by :func:`_value` (when not
    ``odd``, with the keys a component requires always there)."""
    must = {k for k in keys if k in REQUIRED and not odd}
    required = {key: _value(keys[key], odd) for key in must}
    optional = {key: _value(pool, odd) for key, pool in keys.items() if key not in must}
    return st.fixed_dictionaries(required, optional=optional)


def _component(table: Table, odd: bool) -> Any:
    def build(kind: str) -> Any:
        return _mapping(table[kind], odd).map(lambda body: {"type": kind, **body})

    return st.sampled_from(sorted(table)).flatmap(build)


def configs(sections: Table, sources: Table, sinks: Table, odd: bool) -> Any:
    """Config documents (as dicts) over the given tables of keys and values."""
    source_names = st.sampled_from(NAMES if odd else ["a", "b", "c"])
    sink_names = st.sampled_from(NAMES if odd else ["out", "web", "x.y"])
    return st.fixed_dictionaries(
        {
            "data_dir": st.just("./state"),
            "sources": st.dictionaries(
                source_names, _component(sources, odd), min_size=1, max_size=3
            ),
            "sinks": st.dictionaries(sink_names, _component(sinks, odd), min_size=1, max_size=3),
        },
        optional={section: _mapping(keys, odd) for section, keys in sections.items()},
    )


def _validate(tmp: Path, document: dict[str, Any], level: str | None = None) -> int:
    config = tmp / "logcap.yaml"
    config.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(
        main,
        ["validate", "--config", str(config)],
        env={"LOGCAP_PROPERTY_UNSET": None, "LOGCAP_LOG_LEVEL": level},
    )
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{result.exception!r} for:\n{config.read_text()}"
    )
    assert result.exit_code in (0, EX_CONFIG), result.output
    if result.exit_code == EX_CONFIG and result.stderr.startswith(str(config)):
        # one line per problem, whatever line breaks the keys and values held
        *problems, summary = result.stderr.splitlines()
        assert summary == f"invalid configuration: {len(problems)} problem(s)", result.stderr
        assert all(p.startswith(f"{config}:") for p in problems), result.stderr
    return result.exit_code


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    document=st.one_of(
        configs(SECTIONS, SOURCES, SINKS, odd=True),
        configs(SECTIONS, SOURCES, SINKS, odd=False),
        configs(RUN_SECTIONS, RUN_SOURCES, RUN_SINKS, odd=False),
    ),
    level=st.sampled_from([None, "debug", "INFO", "bogus", ""]),
)
def test_validate_exits_0_or_78_and_never_with_a_traceback(
    tmp_path: Path, document: dict[str, Any], level: str | None
) -> None:
    hypothesis.event(f"exit {_validate(tmp_path, document, level)}")


def _free_address() -> str:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return f"127.0.0.1:{probe.getsockname()[1]}"


def _listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return False
    return True


def _started(tmp: Path, document: dict[str, Any], api: str) -> bool:
    """Ready, and every source has begun its work (a file source its started marker,
    an http source its listening socket): the agent has really started."""
    if not _ready(api):
        return False
    for name, source in document["sources"].items():
        if source["type"] == "file" and not (tmp / "state" / "started" / name).exists():
            return False
        if source["type"] == "http" and not _listening(source["address"]):
            return False
    return True


def _ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@settings(
    max_examples=RUNS,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)
@given(document=configs(RUN_SECTIONS, RUN_SOURCES, RUN_SINKS, odd=False))
def test_an_accepted_config_starts_and_stops_cleanly(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, Any]
) -> None:
    tmp = tmp_path_factory.mktemp("run")
    # the run binds real ports: fresh ones, so a generated address never meets another test's
    api = _free_address()
    document["api"] = {"address": api}
    for source in document["sources"].values():
        if source["type"] == "http":
            source["address"] = _free_address()
    supervisor = document.setdefault("supervisor", {})
    if isinstance(supervisor, dict):
        supervisor["shutdown_timeout"] = "5s"
    hypothesis.assume(_validate(tmp, document) == 0)
    (tmp / "logs").mkdir()
    (tmp / "logs" / "app.log").write_text("one\ntwo\n")
    stderr = tmp / "stderr"
    with stderr.open("w") as err:
        agent = subprocess.Popen(
            [sys.executable, "-m", "logcap", "run", "--config", str(tmp / "logcap.yaml")],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            wait_for(
                lambda: _started(tmp, document, api) or agent.poll() is not None,
                30,
                "the agent started",
            )
            assert agent.poll() is None, stderr.read_text()
            agent.send_signal(signal.SIGTERM)
            code = agent.wait(timeout=30)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    log = stderr.read_text()
    assert code == 0, log
    assert "Traceback" not in log and "exited with" not in log, log
