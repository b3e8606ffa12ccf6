"""Config loading: the schema documents itself, every key is checked, every error is located.

Covers ``logcap.config`` (YAML → ``${VAR}`` interpolation → strict msgspec validation →
absolute paths) together with the source and sink config structs it validates: field
descriptions, unknown keys at every level, bad values and their ``FILE:LINE: path: reason``
reports, human units, interpolation, path resolution, defaults, the embedded default
config and the msgpack round trip of a ``RunPlan``.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import msgspec
import pytest

from logcap.config import (
    ApiConfig,
    BufferConfig,
    ByteSize,
    Config,
    DispatcherConfig,
    Duration,
    SupervisorConfig,
    component_type,
    load_config,
    parse_config,
)
from logcap.dispatch.bounds import DLQ_RECORD_OVERHEAD, ENTRY_OVERHEAD, largest_batch_bytes
from logcap.errors import ConfigError
from logcap.plan import RunPlan, initial_layout

ORIGIN = "test.yaml"

# The smallest valid document; most tests append one section to it.
MINIMAL = """\
sources:
  app:
    type: file
    include: ["/var/log/app/*.log"]
sinks:
  out:
    type: blackhole
"""

SPEC_EXAMPLE = """\
data_dir: ./data
api: {address: 127.0.0.1:9598}
sources:
  app: {type: file, include: ["./logs/**/*.log"], exclude: [], read_from: beginning}
sinks:
  archive: {type: file, path: "./out/{source}.ndjson"}
  devnull: {type: blackhole}
dispatcher: {batch_max_events: 1000, batch_timeout: 200ms}
"""


def parse(text: str, env: dict[str, str] | None = None, base: Path | None = None) -> Config:
    """Parse with an explicit (empty by default) environment so os.environ never leaks in."""
    return parse_config(text, ORIGIN, base_dir=base or Path("/base"), env=env or {})


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problem lines of a config that must be rejected."""
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    assert caught.value.problems, "a ConfigError must carry at least one problem"
    return caught.value.problems


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line of ``text`` containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} must occur on exactly one line of the test YAML"
    return hits[0]


def assert_single_problem(text: str, path: str, line: int, reason: str) -> None:
    """``text`` is rejected with exactly one problem at ``path``/``line`` matching ``reason``."""
    problems = problems_of(text)
    assert len(problems) == 1, problems
    prefix = f"{ORIGIN}:{line}: {path}: "
    assert problems[0].startswith(prefix), f"expected {prefix!r}..., got {problems[0]!r}"
    assert re.search(reason, problems[0][len(prefix) :]), problems[0]


# -- the schema documents itself ---------------------------------------------------------


def _walk_fields(
    node: msgspec.inspect.Type, where: str, seen: set[type]
) -> Iterator[tuple[str, msgspec.inspect.Field]]:
    """Every struct field reachable from ``node``, with a dotted name for messages."""
    if isinstance(node, msgspec.inspect.Metadata):
        yield from _walk_fields(node.type, where, seen)
    elif isinstance(node, msgspec.inspect.StructType):
        if node.cls in seen:
            return
        seen.add(node.cls)
        for field in node.fields:
            yield f"{node.cls.__qualname__}.{field.name}", field
            yield from _walk_fields(field.type, f"{where}.{field.name}", seen)
    elif isinstance(node, msgspec.inspect.UnionType):
        for member in node.types:
            yield from _walk_fields(member, where, seen)
    elif isinstance(node, msgspec.inspect.DictType):
        yield from _walk_fields(node.value_type, where, seen)
    elif isinstance(node, msgspec.inspect.ListType | msgspec.inspect.SetType):
        yield from _walk_fields(node.item_type, where, seen)


def _description(node: msgspec.inspect.Type) -> str:
    while isinstance(node, msgspec.inspect.Metadata):
        text = (node.extra_json_schema or {}).get("description", "")
        if isinstance(text, str) and text.strip():
            return text
        node = node.type
    return ""


def test_every_config_field_has_a_description() -> None:
    seen: set[type] = set()
    fields = list(_walk_fields(msgspec.inspect.type_info(Config), "", seen))
    # the walk must reach every member of the source and sink unions, or it proves little
    reached = {cls.__name__ for cls in seen}
    assert {
        "Config",
        "ApiConfig",
        "DispatcherConfig",
        "BufferConfig",
        "SupervisorConfig",
        "FileSourceConfig",
        "FileSinkConfig",
        "ConsoleSinkConfig",
        "BlackholeSinkConfig",
    } <= reached
    missing = [name for name, field in fields if not _description(field.type)]
    assert not missing, f"config fields without a description: {', '.join(missing)}"


# -- valid documents ---------------------------------------------------------------------


def test_spec_example_parses() -> None:
    config = parse(SPEC_EXAMPLE)
    assert config.data_dir == "/base/data"
    assert config.api.address == "127.0.0.1:9598"
    app = config.sources["app"]
    assert component_type(app) == "file"
    assert app.include == ["/base/logs/**/*.log"]
    assert app.exclude == []
    assert app.read_from == "beginning"
    assert component_type(config.sinks["archive"]) == "file"
    assert config.sinks["archive"].path == "/base/out/{source}.ndjson"
    assert component_type(config.sinks["devnull"]) == "blackhole"
    assert config.dispatcher.batch_max_events == 1000
    assert config.dispatcher.batch_timeout == pytest.approx(0.2)


def _certificate() -> tuple[Path, Path]:
    """A self-signed certificate and its key: librdkafka loads TLS files when a kafka
    sink's config is validated, so FULL's must be real."""
    directory = Path(tempfile.mkdtemp(prefix="logcap-test-tls-"))
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=logcap", "-days", "1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


_CERT, _KEY = _certificate()

# Every key the schema accepts, each set to a value that differs from its default.
FULL = """\
data_dir: /srv/logcap
api:
  address: 0.0.0.0:9000
  enabled: false
  token: api-t0ken
sources:
  app:
    type: file
    include: [/var/log/app/*.log]
    exclude: [/var/log/app/debug.log]
    read_from: end
    max_line_bytes: 16KiB
    encoding: latin-1
    multiline: {start_pattern: '^\\d', timeout: 2s, max_lines: 40}
    long_lines: skip
    fingerprint_bytes: 1024
    ignore_older: 2h
    glob_interval: 5s
    poll_interval: 100ms
    watch: false
    pipelines: [parse]
    rate_limit: {events_per_second: 5000, burst: 100, when_exceeded: drop}
    labels: {env: prod}
    path_labels: '/var/log/(?P<service>[^/]+)/'
  ingest:
    type: http
    address: 0.0.0.0:8687
    bearer_token: t0ken
    max_body_bytes: 1MiB
    retry_after: 5s
    labels: {env: prod}
    pipelines: [parse]
    rate_limit: {events_per_second: 100, burst: 10, when_exceeded: drop}
  containers:
    type: docker
    docker_host: tcp://10.0.0.1:2375
    include_names: [web-*]
    exclude_names: [web-debug]
    include_images: ["nginx:*"]
    exclude_images: ["nginx:old"]
    include_labels: [logs=on]
    exclude_labels: [logs=off]
    label_keys: [team]
    read_from: end
    max_line_bytes: 32KiB
    long_lines: skip
    reconnect_max_delay: 1m
    labels: {env: prod}
    pipelines: [parse]
    rate_limit: {events_per_second: 100, burst: 10, when_exceeded: drop}
sinks:
  bus:
    type: kafka
    bootstrap_servers: k1:9092,k2:9092
    topic: logs-{labels.service}
    level_routes: [{levels: [error], topic: errors}]
    key_field: tenant
    header_labels: [host]
    compression: zstd
    acks: "1"
    idempotence: false
    max_in_flight_messages: 5000
    delivery_timeout: 1m
    linger: 20ms
    security_protocol: SASL_SSL
    sasl: {mechanism: SCRAM-SHA-256, username: u, password: p}
    tls: {ca_file: @CERT@, cert_file: @CERT@, key_file: @KEY@, key_password: unused,
          verify_hostname: false}
    librdkafka_options: {client.id: logcap}
    circuit_breaker: {failure_threshold: 2, open_duration: 30s}
    inputs: [app, containers]
    when: {field: level, in: [error, critical]}
  archive:
    type: file
    path: /srv/out/{source}.ndjson
    max_file_bytes: 10MB
    format: text
    text_template: "{timestamp} {message}"
    rotate_every: 1h
    compression: gzip
    max_files: 5
    fsync: interval
    fsync_interval: 2s
    circuit_breaker: {failure_threshold: 2, open_duration: 30s}
    inputs: [app]
    when: {field: level, in: [error, critical]}
  web:
    type: http
    url: https://collector:8443/ingest
    compression: gzip
    headers: {X-Tenant: acme}
    username: u
    password: p
    tls: {ca_file: @CERT@, cert_file: @CERT@, key_file: @KEY@, verify: false}
    timeout: 5s
    max_request_bytes: 1MiB
    circuit_breaker: {failure_threshold: 2, open_duration: 30s}
    inputs: [ingest]
    when: {field: level, in: [error, critical]}
  screen:
    type: console
    stream: stderr
    circuit_breaker: {failure_threshold: 2, open_duration: 30s}
    inputs: [containers]
    when: {field: level, in: [error, critical]}
  void:
    type: blackhole
    circuit_breaker: {failure_threshold: 2, open_duration: 30s}
    inputs: [app, ingest]
    when: {field: level, in: [error, critical]}
dispatcher:
  batch_max_events: 50
  batch_max_bytes: 64KiB
  batch_timeout: 50ms
  checkpoint_interval: 3s
buffer:
  collector_slots: 32
  collector_slot_bytes: 128KiB
  batch_slots: 64
supervisor:
  shutdown_timeout: 20s
  restart_backoff: 1s
  restart_backoff_max: 1m
  watch_config: true
retry:
  initial_backoff: 250ms
  max_backoff: 30s
  max_attempts: 5
  max_retry_duration: 10m
  max_entries: 5000
  max_bytes: 8MiB
  spool_max_bytes: 512MiB
dlq:
  max_bytes: 256MiB
  max_age: 2d
  segment_bytes: 8MiB
  fsync: interval
  fsync_interval: 2s
  when_full: drop_oldest
  reprocess: {enabled: false, interval: 1m}
pipelines:
  parse:
    steps:
      - {type: json_parse, field: fields.raw, into: fields.parsed, when: {field: level, in: [a]}}
      - {type: regex_extract, field: message, pattern: '(?P<x>a)', into: fields.rx}
      - {type: timestamp_parse, field: fields.t, formats: [unix_ms], timezone: Europe/Paris}
      - {type: level_extract, pattern: '(?P<level>[A-Z]+)', when: {field: message, matches: x}}
      - {type: field_add, fields: {labels.team: web}, when: {field: source, equals: app}}
      - {type: field_remove, fields: [fields.secret]}
      - {type: field_rename, from: fields.m, to: message}
      - {type: drop, when: {field: level, equals: debug}}
      - {type: dedup, key: [message], window: 1m, max_entries: 100}
    timestamp_limits: {max_past: 1d, max_future: 1m, action: drop}
"""
FULL = FULL.replace("@CERT@", str(_CERT)).replace("@KEY@", str(_KEY))


def _non_default_fields(value: msgspec.Struct, where: str) -> Iterator[tuple[str, bool]]:
    """(dotted field, set to a non-default value?) for every field of nested structs."""
    defaults = type(value)
    for field in msgspec.structs.fields(defaults):
        current = getattr(value, field.name)
        name = f"{where}.{field.name}" if where else field.name
        if isinstance(current, msgspec.Struct):
            yield from _non_default_fields(current, name)
        elif (
            isinstance(current, dict)
            and current
            and isinstance(next(iter(current.values())), msgspec.Struct)
        ):
            for key, member in current.items():
                yield from _non_default_fields(member, f"{name}.{key}")
        elif field.required:
            yield name, True
        else:
            default = (
                field.default_factory() if field.default is msgspec.NODEFAULT else field.default
            )
            yield name, current != default


def test_every_accepted_key_reaches_the_parsed_config() -> None:
    # If a new field is added without being covered here, this fails naming it.
    config = parse(FULL)
    # keys that exclude one another are exercised by variants of FULL
    variants = [
        FULL.replace("{start_pattern: '^\\d',", f"{{{alternative},")
        for alternative in ("continuation_pattern: '^ '", "preset: python")
    ]
    variants.append(FULL.replace("    username: u\n    password: p\n", "    bearer_token: t\n"))
    for test in ("matches: x", "equals: x"):  # a condition has one test at a time
        variants.append(
            FULL.replace(
                "when: {field: level, in: [error, critical]}", f"when: {{field: level, {test}}}"
            )
        )
    exercised: dict[str, bool] = {}
    for parsed in (config, *map(parse, variants)):
        for name, changed in _non_default_fields(parsed, ""):
            exercised[name] = exercised.get(name, False) or changed
    left_at_default = [name for name, changed in exercised.items() if not changed]
    assert not left_at_default, f"FULL does not exercise: {', '.join(left_at_default)}"
    assert {component_type(s) for s in config.sinks.values()} == {
        "file",
        "console",
        "blackhole",
        "http",
        "kafka",
    }
    assert config.sinks["archive"].max_file_bytes == 10_000_000
    assert config.sources["app"].poll_interval == pytest.approx(0.1)
    assert config.supervisor.restart_backoff_max == 60.0
    assert config.supervisor.watch_config is True
    assert config.retry.max_retry_duration == 600.0
    assert config.dlq.max_age == 2 * 86400.0
    assert config.retry.spool_max_bytes == 512 * 2**20
    assert (config.dlq.reprocess.enabled, config.dlq.reprocess.interval) == (False, 60.0)


def test_minimal_config_gets_the_documented_defaults() -> None:
    config = parse(MINIMAL)
    assert config.data_dir == "/base/data"
    assert config.api == ApiConfig(address="127.0.0.1:9598", enabled=True)
    assert config.dispatcher.batch_max_events == 1000
    assert config.dispatcher.batch_max_bytes == 1024 * 1024
    assert config.dispatcher.batch_timeout == pytest.approx(0.2)
    assert config.dispatcher.checkpoint_interval == 0.2
    assert config.buffer == BufferConfig()
    assert config.buffer.collector_slots == 16
    assert config.buffer.collector_slot_bytes == 256 * 1024
    assert config.supervisor.shutdown_timeout == 8.0
    assert config.supervisor.restart_backoff == 0.5
    assert config.supervisor.restart_backoff_max == 30.0
    app = config.sources["app"]
    assert app.exclude == []
    assert app.read_from == "beginning"
    assert app.max_line_bytes == 64 * 1024
    assert app.watch is True
    # every default must itself pass validation (e.g. max_line_bytes fits the default slot)
    assert isinstance(config.dispatcher, DispatcherConfig)
    assert isinstance(config.supervisor, SupervisorConfig)


def test_embedded_default_config_validates() -> None:
    text = resources.files("logcap.configs").joinpath("default.yaml").read_text("utf-8")
    config = parse(text)
    assert config.sources["local"].include == ["/var/log/**/*.log"]
    assert config.sinks["archive"].path == ("/base/logcap-out/{source}-%Y-%m-%d.ndjson")
    assert config.sinks["archive"].max_file_bytes == 256 * 2**20
    assert config.data_dir == "/base/logcap-data"
    # the documented environment overrides are honoured
    overridden = parse(text, env={"LOGCAP_INPUT": "/srv/in", "LOGCAP_DATA_DIR": "/srv/state"})
    assert overridden.sources["local"].include == ["/srv/in/**/*.log"]
    assert overridden.data_dir == "/srv/state"


def test_run_plan_round_trip_keeps_the_config_and_its_unit_types() -> None:
    config = parse(FULL)
    capacity, blocks, slots, step_offsets = initial_layout(config)
    plan = RunPlan(
        run_prefix="logcap-1-abcd-",
        supervisor_pid=1,
        config=config,
        sources=["app"],
        sinks=list(config.sinks),
        collector_rings={"app": "logcap-1-abcd-c-app"},
        batch_ring="logcap-1-abcd-batch",
        failure_rings={sink: f"logcap-1-abcd-fail-{sink}" for sink in config.sinks},
        redelivery_rings={sink: f"logcap-1-abcd-redo-{sink}" for sink in config.sinks},
        counters="logcap-1-abcd-counters",
        runstate="logcap-1-abcd-state",
        doorbells={"app": 5},
        capacity=capacity,
        blocks=blocks,
        slots=slots,
        step_offsets=step_offsets,
        generation=3,
    )
    decoded = RunPlan.decode(plan.encode())
    assert decoded == plan
    assert decoded.config == config
    assert isinstance(decoded.config.dispatcher.batch_timeout, Duration)
    assert isinstance(decoded.config.sources["app"].glob_interval, Duration)
    assert isinstance(decoded.config.dispatcher.batch_max_bytes, ByteSize)
    assert isinstance(decoded.config.sinks["archive"].max_file_bytes, ByteSize)
    assert decoded.config.sinks["archive"].max_file_bytes == 10_000_000


# -- unknown keys ------------------------------------------------------------------------

UNKNOWN_KEY_CASES = {
    "top": (MINIMAL + "bogus: 1\n", "bogus"),
    "api": (MINIMAL + "api:\n  address: 127.0.0.1:1\n  bogus: 1\n", "api.bogus"),
    "dispatcher": (MINIMAL + "dispatcher:\n  batch_timeout: 1s\n  bogus: 1\n", "dispatcher.bogus"),
    "buffer": (MINIMAL + "buffer:\n  batch_slots: 8\n  bogus: 1\n", "buffer.bogus"),
    "supervisor": (MINIMAL + "supervisor:\n  bogus: 1\n", "supervisor.bogus"),
    "source": (
        "sources:\n  app:\n    type: file\n    include: [a]\n    bogus: 1\n"
        "sinks:\n  out:\n    type: blackhole\n",
        "sources.app.bogus",
    ),
    "file sink": (
        "sources:\n  app:\n    type: file\n    include: [a]\n"
        "sinks:\n  out:\n    type: file\n    path: x\n    bogus: 1\n",
        "sinks.out.bogus",
    ),
    "console sink": (
        "sources:\n  app:\n    type: file\n    include: [a]\n"
        "sinks:\n  out:\n    type: console\n    bogus: 1\n",
        "sinks.out.bogus",
    ),
    "blackhole sink": (
        "sources:\n  app:\n    type: file\n    include: [a]\n"
        "sinks:\n  out:\n    type: blackhole\n    bogus: 1\n",
        "sinks.out.bogus",
    ),
}


@pytest.mark.parametrize("text,path", UNKNOWN_KEY_CASES.values(), ids=UNKNOWN_KEY_CASES.keys())
def test_unknown_key_is_rejected_at_the_line_of_the_key(text: str, path: str) -> None:
    assert_single_problem(text, path, line_of(text, "bogus"), r"unknown key 'bogus'")


def test_each_broken_component_is_reported_in_one_pass() -> None:
    text = """\
sources:
  app:
    type: file
    include: [a]
    colour: red
  web:
    type: file
    include: [b]
    read_from: middle
sinks:
  archive:
    type: file
    path: x
    rotate: daily
  screen:
    type: console
    stream: stdin
dispatcher:
  batch_timeout: 2 fortnights
"""
    problems = problems_of(text)
    expected = {
        "sources.app.colour": line_of(text, "colour"),
        "sources.web.read_from": line_of(text, "middle"),
        "sinks.archive.rotate": line_of(text, "rotate"),
        "sinks.screen.stream": line_of(text, "stdin"),
        "dispatcher.batch_timeout": line_of(text, "fortnights"),
    }
    for path, line in expected.items():
        assert any(p.startswith(f"{ORIGIN}:{line}: {path}: ") for p in problems), (path, problems)
    assert len(problems) == len(expected), problems


def test_problems_in_several_top_level_sections_are_all_reported() -> None:
    text = MINIMAL + "api:\n  bogus: 1\ndispatcher:\n  batch_timeout: -1s\nsupervisor:\n  zap: 2\n"
    problems = problems_of(text)
    for path, needle in (
        ("api.bogus", "bogus"),
        ("dispatcher.batch_timeout", "-1s"),
        ("supervisor.zap", "zap"),
    ):
        prefix = f"{ORIGIN}:{line_of(text, needle)}: {path}: "
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)


# -- bad values --------------------------------------------------------------------------


def _source(extra: str) -> str:
    return (
        "sources:\n  app:\n    type: file\n    include: [a]\n"
        f"{extra}sinks:\n  out:\n    type: blackhole\n"
    )


def _sink(body: str) -> str:
    return f"sources:\n  app:\n    type: file\n    include: [a]\nsinks:\n  out:\n{body}"


# (yaml, dotted path, needle marking the expected line, reason regex)
BAD_VALUE_CASES = {
    "duration in unknown unit": (
        MINIMAL + "dispatcher:\n  batch_timeout: 2 fortnights\n",
        "dispatcher.batch_timeout",
        "fortnights",
        r"duration.*'2 fortnights'",
    ),
    "negative duration": (
        MINIMAL + "supervisor:\n  restart_backoff: -1s\n",
        "supervisor.restart_backoff",
        "-1s",
        r"duration.*'-1s'",
    ),
    "zero where a positive duration is required": (
        MINIMAL + "dispatcher:\n  batch_timeout: 0\n",
        "dispatcher.batch_timeout",
        "batch_timeout",
        r"greater than 0",
    ),
    "zero poll interval": (
        _source("    poll_interval: 0s\n"),
        "sources.app.poll_interval",
        "poll_interval",
        r"greater than 0",
    ),
    "size in unknown unit": (
        MINIMAL + "dispatcher:\n  batch_max_bytes: 3 furlongs\n",
        "dispatcher.batch_max_bytes",
        "furlongs",
        r"size.*'3 furlongs'",
    ),
    "size below minimum": (
        MINIMAL + "dispatcher:\n  batch_max_bytes: 1KiB\n",
        "dispatcher.batch_max_bytes",
        "1KiB",
        r"at least 4096",
    ),
    "sink size in unknown unit": (
        _sink("    type: file\n    path: x\n    max_file_bytes: 3 furlongs\n"),
        "sinks.out.max_file_bytes",
        "furlongs",
        r"size",
    ),
    "bad enum": (
        _source("    read_from: middle\n"),
        "sources.app.read_from",
        "middle",
        r"'middle'",
    ),
    "bad sink enum": (
        _sink("    type: console\n    stream: stdin\n"),
        "sinks.out.stream",
        "stdin",
        r"'stdin'",
    ),
    "unknown source type": (
        "sources:\n  app:\n    type: pipe\n    include: [a]\nsinks:\n  out:\n    type: blackhole\n",
        "sources.app.type",
        "pipe",
        r"'pipe'",
    ),
    "unknown sink type": (
        _sink("    type: kafkaa\n"),
        "sinks.out.type",
        "kafkaa",
        r"'kafkaa'",
    ),
    "missing source type": (
        "sources:\n  app:\n    include: [a]\nsinks:\n  out:\n    type: blackhole\n",
        "sources.app",
        "app:",
        r"missing required key 'type'",
    ),
    "missing sink type": (
        _sink("    path: x\n"),
        "sinks.out",
        "out:",
        r"missing required key 'type'",
    ),
    "missing include": (
        "sources:\n  app:\n    type: file\nsinks:\n  out:\n    type: blackhole\n",
        "sources.app",
        "app:",
        r"missing required field `include`",
    ),
    "empty include": (
        "sources:\n  app:\n    type: file\n    include: []\nsinks:\n  out:\n    type: blackhole\n",
        "sources.app.include",
        "include",
        r"length >= 1",
    ),
    "missing file sink path": (
        _sink("    type: file\n"),
        "sinks.out",
        "out:",
        r"missing required field `path`",
    ),
    "zero batch_max_events": (
        MINIMAL + "dispatcher:\n  batch_max_events: 0\n",
        "dispatcher.batch_max_events",
        "batch_max_events",
        r">= 1|> 0",
    ),
    "api address without port": (
        MINIMAL + "api:\n  address: localhost\n",
        "api.address",
        "localhost",
        r"regex",
    ),
    "section that is not a mapping": (
        MINIMAL + "dispatcher: 5\n",
        "dispatcher",
        "dispatcher",
        r"object",
    ),
    "component that is not a mapping": (
        _sink("    - blackhole\n"),
        "sinks.out",
        "out:",
        r"mapping",
    ),
}


@pytest.mark.parametrize(
    "text,path,needle,reason", BAD_VALUE_CASES.values(), ids=BAD_VALUE_CASES.keys()
)
def test_bad_value_is_rejected_with_its_path_and_line(
    text: str, path: str, needle: str, reason: str
) -> None:
    assert_single_problem(text, path, line_of(text, needle), reason)


@pytest.mark.parametrize(
    "text,section",
    [
        ("sources: {}\nsinks:\n  out: {type: blackhole}\n", "sources"),
        ("sinks:\n  out: {type: blackhole}\n", "sources"),
        ("sources:\n  app: {type: file, include: [a]}\nsinks: {}\n", "sinks"),
        ("sources:\n  app: {type: file, include: [a]}\n", "sinks"),
    ],
    ids=["empty sources", "no sources", "empty sinks", "no sinks"],
)
def test_sources_and_sinks_must_not_be_empty(text: str, section: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert re.match(rf"{ORIGIN}:\d+: {section}: at least one entry", problems[0]), problems


def test_empty_document_reports_both_missing_sections() -> None:
    problems = problems_of("")
    assert any(": sources: " in p for p in problems), problems
    assert any(": sinks: " in p for p in problems), problems


def test_sink_cannot_share_its_name_with_a_source() -> None:
    text = (
        "sources:\n  app:\n    type: file\n    include: [a]\nsinks:\n  app:\n    type: blackhole\n"
    )
    assert_single_problem(text, "sinks.app", 6, r"same name as a source")


@pytest.mark.parametrize("name", ["bad name", "-leading-dash", "a" * 65, "x/y", "ünï"])
def test_invalid_component_name_is_rejected(name: str) -> None:
    text = (
        f"sources:\n  app:\n    type: file\n    include: [a]\n"
        f"sinks:\n  '{name}':\n    type: blackhole\n"
    )
    assert_single_problem(text, f"sinks.{name}", 6, r"letters, digits")


def test_longest_allowed_component_name_is_accepted() -> None:
    name = "a" * 64
    text = f"sources:\n  {name}: {{type: file, include: [a]}}\n"
    config = parse(text + "sinks:\n  b.c_d-e: {type: blackhole}\n")
    assert list(config.sources) == [name]
    assert list(config.sinks) == ["b.c_d-e"]


@pytest.mark.parametrize(
    "text,path,line",
    [
        (MINIMAL + "data_dir: a\ndata_dir: b\n", "data_dir", 9),
        (
            "sources:\n  app:\n    type: file\n    include: [a]\n    include: [b]\n"
            "sinks:\n  out: {type: blackhole}\n",
            "sources.app.include",
            5,
        ),
        (MINIMAL + "sinks:\n  other: {type: blackhole}\n", "sinks", 8),
    ],
    ids=["top level", "inside a source", "whole section"],
)
def test_duplicate_key_is_reported_at_its_second_occurrence(
    text: str, path: str, line: int
) -> None:
    assert_single_problem(text, path, line, r"duplicate key")


def test_invalid_yaml_syntax_is_reported_with_its_line() -> None:
    text = "sources:\n  app: {type: file, include: [a]}\napi: address: x\n"
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{ORIGIN}:3: invalid YAML: "), problems


def test_invalid_yaml_is_reported_on_one_line_with_its_line() -> None:
    problems = problems_of("sources:\n  app: {type: file, include: [a]}\napi: address: x\n")
    assert problems == [f"{ORIGIN}:3: invalid YAML: mapping values are not allowed here"]
    # a control character has no YAML mark, only an offset: its line must still be found
    problems = problems_of(MINIMAL + "data_dir: a\x07b\n")
    assert len(problems) == 1 and "\n" not in problems[0], problems
    assert problems[0].startswith(f"{ORIGIN}:8: invalid YAML: unacceptable character"), problems


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_document_must_be_a_mapping(text: str) -> None:
    assert_single_problem(text, "(document)", 1, r"must be a mapping")


def test_ring_slot_counts_must_be_powers_of_two() -> None:
    text = MINIMAL + "buffer:\n  collector_slots: 12\n  batch_slots: 24\n"
    assert problems_of(text) == [
        f"{ORIGIN}:{line_of(text, 'collector_slots')}: buffer.collector_slots: "
        "must be a power of two, got 12",
        f"{ORIGIN}:{line_of(text, 'batch_slots')}: buffer.batch_slots: "
        "must be a power of two, got 24",
    ]


def test_max_line_bytes_must_fit_a_collector_slot() -> None:
    text = _source("    max_line_bytes: 1MiB\n")
    assert_single_problem(
        text, "sources.app.max_line_bytes", line_of(text, "1MiB"), r"collector_slot_bytes"
    )
    # a larger slot makes the same line limit acceptable
    config = parse(text + "buffer:\n  collector_slot_bytes: 2MiB\n")
    assert config.sources["app"].max_line_bytes == 2**20


def test_restart_backoff_above_its_maximum_is_rejected() -> None:
    text = MINIMAL + "supervisor:\n  restart_backoff: 1m\n  restart_backoff_max: 10s\n"
    assert_single_problem(
        text, "supervisor.restart_backoff", line_of(text, "1m"), r"restart_backoff_max"
    )


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert caught.value.problems == [
        f"{tmp_path / 'absent.yaml'}: cannot read config: No such file or directory"
    ]


# -- units -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written,seconds",
    [
        ("200ms", 0.2),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("3", 3.0),
        ("0.25", 0.25),
        ("'7'", 7.0),
        ("1500us", 0.0015),
        ("250000ns", 0.00025),
        ("1d", 86400.0),
    ],
)
def test_duration_units(written: str, seconds: float) -> None:
    config = parse(MINIMAL + f"dispatcher:\n  batch_timeout: {written}\n")
    assert isinstance(config.dispatcher.batch_timeout, Duration)
    assert config.dispatcher.batch_timeout == pytest.approx(seconds)


@pytest.mark.parametrize(
    "written,size",
    [
        ("64KiB", 64 * 1024),
        ("1MiB", 2**20),
        ("10MB", 10_000_000),
        ("1kb", 1000),
        ("4096", 4096),
        ("'8192'", 8192),
        ("2GiB", 2 * 2**30),
        ("512B", 512),
    ],
)
def test_size_units(written: str, size: int) -> None:
    config = parse(_sink(f"    type: file\n    path: x\n    max_file_bytes: {written}\n"))
    value = config.sinks["out"].max_file_bytes
    assert isinstance(value, ByteSize)
    assert value == size


@pytest.mark.parametrize("written", ["true", "5 parsecs", "1e3s", "s", "[1]"])
def test_malformed_duration_is_rejected(written: str) -> None:
    text = MINIMAL + f"dispatcher:\n  batch_timeout: {written}\n"
    assert_single_problem(
        text, "dispatcher.batch_timeout", line_of(text, "batch_timeout"), r"duration"
    )


# -- ${VAR} interpolation ----------------------------------------------------------------


def _data_dir(value: str, env: dict[str, str]) -> str:
    return parse(MINIMAL + f"data_dir: '{value}'\n", env=env).data_dir


@pytest.mark.parametrize(
    "written,env,expected",
    [
        ("/srv/${NAME}", {"NAME": "x"}, "/srv/x"),
        ("/srv/${NAME}-${NAME}", {"NAME": "x"}, "/srv/x-x"),
        ("/srv/${NAME:-fallback}", {}, "/srv/fallback"),
        ("/srv/${NAME:-fallback}", {"NAME": ""}, "/srv/fallback"),
        ("/srv/${NAME:-fallback}", {"NAME": "set"}, "/srv/set"),
        ("/srv/${NAME:-}x", {}, "/srv/x"),
        ("/srv/a$$b", {}, "/srv/a$b"),
        ("/srv/$${NAME}", {"NAME": "x"}, "/srv/${NAME}"),
        ("/srv/$NAME", {"NAME": "x"}, "/srv/$NAME"),
    ],
    ids=[
        "braced",
        "twice",
        "default when unset",
        "default when empty",
        "value over default",
        "empty default",
        "dollar escape",
        "escaped reference stays literal",
        "bare $NAME is not a reference",
    ],
)
def test_interpolation(written: str, env: dict[str, str], expected: str) -> None:
    assert _data_dir(written, env) == expected


def test_unset_variable_without_default_is_an_error_naming_it() -> None:
    text = (
        "sources:\n  app:\n    type: file\n    include:\n      - /a\n      - ${LOGS_DIR}/x.log\n"
        "sinks:\n  out: {type: blackhole}\n"
    )
    problems = problems_of(text, env={"OTHER": "1"})
    assert problems == [
        f"{ORIGIN}:6: sources.app.include[1]: environment variable LOGS_DIR is not set "
        "(use ${LOGS_DIR:-default})"
    ]


def test_interpolation_reaches_nested_lists_and_mappings() -> None:
    text = """\
api:
  address: ${HOST}:${PORT:-9598}
  token: ${API_TOKEN:-t0ken}
sources:
  app:
    type: file
    include: ["${ROOT}/a/*.log", "${ROOT}/b/*.log"]
    exclude: ["${ROOT}/a/skip.log"]
sinks:
  out:
    type: file
    path: ${OUT:-/srv/out}/{source}.ndjson
"""
    config = parse(text, env={"HOST": "10.0.0.1", "ROOT": "/logs"})
    assert config.api.address == "10.0.0.1:9598"
    assert config.sources["app"].include == ["/logs/a/*.log", "/logs/b/*.log"]
    assert config.sources["app"].exclude == ["/logs/a/skip.log"]
    assert config.sinks["out"].path == "/srv/out/{source}.ndjson"


def test_interpolated_value_is_not_parsed_as_yaml() -> None:
    # a value that looks like YAML flow syntax must arrive as the literal string
    tricky = "/srv/a: {b: [c]} # d"
    config = parse(MINIMAL + "data_dir: ${DIR}\n", env={"DIR": tricky})
    assert config.data_dir == tricky


def test_interpolated_numbers_and_booleans_set_typed_fields() -> None:
    text = MINIMAL + (
        "api:\n  enabled: ${API_ON:-false}\n"
        "dispatcher:\n  batch_max_events: ${BATCH:-500}\n"
        "buffer:\n  batch_slots: ${SLOTS}\n"
    )
    config = parse(text, env={"SLOTS": "64"})
    assert config.api.enabled is False
    assert config.dispatcher.batch_max_events == 500
    assert config.buffer.batch_slots == 64


# -- paths -------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_file_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "logcap.yaml").write_text(
        SPEC_EXAMPLE.replace("exclude: []", 'exclude: ["../skip/*.log"]')
    )
    monkeypatch.chdir("/")  # systemd starts the agent in /, far from the config
    config = load_config(conf_dir / "logcap.yaml", env={})
    base = conf_dir.resolve()
    assert config.data_dir == str(base / "data")
    assert config.sources["app"].include == [str(base / "logs/**/*.log")]
    assert config.sources["app"].exclude == [str(tmp_path.resolve() / "skip/*.log")]
    assert config.sinks["archive"].path == str(base / "out/{source}.ndjson")


def test_absolute_paths_stay_as_written(tmp_path: Path) -> None:
    text = """\
data_dir: /var/lib/logcap
sources:
  app: {type: file, include: [/var/log/*.log], exclude: [/var/log/x.log]}
sinks:
  out: {type: file, path: "/srv/out/{source}.ndjson"}
"""
    (tmp_path / "c.yaml").write_text(text)
    config = load_config(tmp_path / "c.yaml", env={})
    assert config.data_dir == "/var/lib/logcap"
    assert config.sources["app"].include == ["/var/log/*.log"]
    assert config.sources["app"].exclude == ["/var/log/x.log"]
    assert config.sinks["out"].path == "/srv/out/{source}.ndjson"


def test_tilde_expands_to_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # os.path.expanduser reads HOME
    text = """\
data_dir: ~/state
sources:
  app: {type: file, include: [~/logs/*.log], exclude: [~/logs/x.log]}
sinks:
  out: {type: file, path: "~/out/{source}.ndjson"}
"""
    (tmp_path / "c.yaml").write_text(text)
    config = load_config(tmp_path / "c.yaml", env={})
    assert config.data_dir == str(home / "state")
    assert config.sources["app"].include == [str(home / "logs/*.log")]
    assert config.sources["app"].exclude == [str(home / "logs/x.log")]
    assert config.sinks["out"].path == str(home / "out/{source}.ndjson")


def test_problem_lines_name_the_file_they_were_loaded_from(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL + "bogus: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [f"{path}:8: bogus: unknown key 'bogus'"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("dlq: {max_bytes: 1MiB}\ndispatcher: {batch_max_bytes: 1MiB}", "dlq.max_bytes"),
        ("retry: {max_bytes: 512KiB}\ndispatcher: {batch_max_bytes: 1MiB}", "retry.max_bytes"),
        ("retry: {max_entries: 10}\ndispatcher: {batch_max_events: 100}", "retry.max_entries"),
    ],
)
def test_retry_and_dlq_bounds_must_hold_at_least_one_batch(body: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(MINIMAL + body + "\n")
    assert where in str(info.value)


LONG_LINES = """\
sources:
  app:
    type: file
    include: ["/var/log/app/*.log"]
    max_line_bytes: 200KiB
sinks:
  out: {type: blackhole}
buffer: {collector_slot_bytes: 256KiB}
dispatcher: {batch_max_bytes: 16KiB}
"""


def test_a_config_whose_longest_entry_cannot_be_dead_lettered_is_refused() -> None:
    """4 x batch_max_bytes used to pass, yet one 200 KiB line escaped 6x is a ~1.2 MB
    batch: the retry process then waited for this 64 KiB DLQ forever."""
    text = LONG_LINES + "dlq:\n  max_bytes: 64KiB\n  segment_bytes: 64KiB\n"
    problems = problems_of(text)
    (dlq,) = problems
    largest = 6 * 200 * 1024 + ENTRY_OVERHEAD
    assert dlq.startswith(f"{ORIGIN}:11: dlq.max_bytes: 65536 bytes cannot hold")
    assert f"the largest batch is {largest} bytes" in dlq
    assert f"at least {largest + DLQ_RECORD_OVERHEAD}" in dlq


def test_the_retry_heap_must_hold_the_largest_batch() -> None:
    (problem,) = problems_of(LONG_LINES + "retry:\n  max_bytes: 1MiB\n")
    assert problem.startswith(f"{ORIGIN}:11: retry.max_bytes: 1048576 bytes cannot hold")


def test_the_largest_batch_exactly_fitting_dlq_and_retry_is_accepted() -> None:
    largest = 6 * 200 * 1024 + ENTRY_OVERHEAD
    config = parse(
        LONG_LINES
        + f"retry: {{max_bytes: {largest}}}\n"
        + f"dlq: {{max_bytes: {largest + DLQ_RECORD_OVERHEAD}, segment_bytes: 64KiB}}\n"
    )
    assert largest_batch_bytes(config) == largest


def test_an_http_source_bounds_its_entries_by_the_collector_slot() -> None:
    text = (
        "sources:\n  in: {type: http}\nsinks:\n  out: {type: blackhole}\n"
        "buffer: {collector_slot_bytes: 4MiB}\ndlq: {max_bytes: 4MiB, segment_bytes: 1MiB}\n"
    )
    (problem,) = problems_of(text)
    assert problem.startswith(f"{ORIGIN}:6: dlq.max_bytes:")
    assert f"the largest batch is {4 * 2**20 + ENTRY_OVERHEAD} bytes" in problem
