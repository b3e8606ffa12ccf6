"""A config that ``logcap validate`` accepts must run (issue 10): what used to pass
validation and then fail at run time (a traceback or a crash loop) is refused up front,
each problem as ``FILE:LINE: path: reason`` and exit 78. The exact operator-facing
lines are asserted, through the CLI.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from logcap.cli import main
from logcap.cli_common import EX_CONFIG

HEAD = """\
data_dir: ./state
api: {enabled: false}
sources:
  app: {type: file, include: ["./logs/*.log"]}
sinks:
  devnull: {type: blackhole}
"""


def validate(tmp_path: Path, text: str, env: dict[str, str | None] | None = None) -> Result:
    config = tmp_path / "logcap.yaml"
    config.write_text(text, encoding="utf-8")
    return CliRunner().invoke(
        main, ["validate", "--config", str(config)], env=env, catch_exceptions=False
    )


def refused(tmp_path: Path, text: str, env: dict[str, str | None] | None = None) -> list[str]:
    """The problem lines (``FILE:`` prefix cut) of a config validate must refuse."""
    result = validate(tmp_path, text, env)
    assert result.exit_code == EX_CONFIG, result.output
    assert "Traceback" not in result.output
    *problems, summary = result.stderr.splitlines()
    assert summary == f"invalid configuration: {len(problems)} problem(s)"
    prefix = f"{tmp_path / 'logcap.yaml'}:"
    assert all(p.startswith(prefix) for p in problems), problems
    return [p[len(prefix) :] for p in problems]


# -- values that pass the type but cannot run ------------------------------------------


def test_nan_and_infinite_durations_are_refused(tmp_path: Path) -> None:
    text = HEAD + "dispatcher: {batch_timeout: .nan}\nsupervisor: {shutdown_timeout: .inf}\n"
    assert refused(tmp_path, text) == [
        "7: dispatcher.batch_timeout: a duration must be a finite number of seconds, got nan",
        "8: supervisor.shutdown_timeout: a duration must be a finite number of seconds, got inf",
    ]


def test_a_duration_too_long_for_a_timer_is_refused(tmp_path: Path) -> None:
    text = HEAD + "dispatcher: {batch_timeout: 99999999d}\n"
    assert refused(tmp_path, text) == [
        "7: dispatcher.batch_timeout: a duration must be at most 36500d (100 years), "
        "got '99999999d'",
    ]


def test_a_zero_restart_backoff_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, HEAD + "supervisor: {restart_backoff: 0s}\n") == [
        "7: supervisor.restart_backoff: duration must be greater than 0.0s, got '0s'",
    ]


def test_a_zero_max_file_bytes_is_refused(tmp_path: Path) -> None:
    text = HEAD + "  out: {type: file, path: out.log, max_file_bytes: 0}\n"
    assert refused(tmp_path, text) == [
        "7: sinks.out.max_file_bytes: size must be at least 1 bytes, got 0",
    ]


# -- templates ---------------------------------------------------------------------------

USE = "use '{source}', '{level}', '{labels.NAME}' or '{fields.NAME[.SUB]}'"


def test_unknown_placeholders_in_a_file_sink_path_are_refused(tmp_path: Path) -> None:
    text = HEAD + '  out: {type: file, path: "out/{sorce}.log"}\n'
    assert refused(tmp_path, text) == [
        f"7: sinks.out.path: unknown placeholder '{{sorce}}' ({USE}); "
        "dates use strftime fields such as '%Y-%m-%d'",
    ]


def test_unknown_placeholders_in_kafka_topics_are_refused(tmp_path: Path) -> None:
    text = HEAD + (
        "  bus:\n"
        "    type: kafka\n"
        "    bootstrap_servers: k:9092\n"
        "    topic: logs-{labels.service}-{servce}\n"
        "    level_routes: [{levels: [error], topic: 'errors-{lvl}'}]\n"
    )
    assert refused(tmp_path, text) == [
        f"10: sinks.bus.topic: unknown placeholder '{{servce}}' ({USE})",
        f"11: sinks.bus.level_routes: route 0 topic: unknown placeholder '{{lvl}}' ({USE})",
    ]


def test_kafka_keys_and_headers_must_name_a_member(tmp_path: Path) -> None:
    text = HEAD + (
        "  bus:\n"
        "    type: kafka\n"
        "    bootstrap_servers: k:9092\n"
        "    topic: logs-{fields.service}\n"
        "    key_field: 'fields.'\n"
        "    header_labels: [host, 'a b', fields.user.id]\n"
    )
    assert refused(tmp_path, text) == [
        "12: sinks.bus.header_labels: 'a b' is neither a label name nor 'level', "
        "'labels.NAME' or 'fields.NAME[.SUB]'",
        "11: sinks.bus.key_field: 'fields.' is neither a label name nor 'level', "
        "'labels.NAME' or 'fields.NAME[.SUB]'",
    ]


# -- tokens and headers ------------------------------------------------------------------

TOKEN = "(a token: printable ASCII, no spaces or line breaks)"
EMPTY = f"Expected `str` of length >= 1 {TOKEN}"
NOT_TOKEN = f"Expected `str` matching regex '^[!-~]+\\\\Z' {TOKEN}"
NOT_HEADER = (
    "Expected `str` matching regex '^[\\\\t -~\\\\x80-\\\\xff]*\\\\Z' "
    "(an HTTP header value: one line of Latin-1 text)"
)


def test_an_empty_or_malformed_http_source_token_is_refused(tmp_path: Path) -> None:
    text = HEAD.replace(
        "sinks:",
        "  a: {type: http, address: '127.0.0.1:8001', bearer_token: ''}\n"
        "  b: {type: http, address: '127.0.0.1:8002', bearer_token: '${UNSET_TOKEN:-}'}\n"
        "  c: {type: http, address: '127.0.0.1:8003', bearer_token: '${INGEST TOKEN}'}\n"
        "sinks:",
    )
    assert refused(tmp_path, text, env={"UNSET_TOKEN": None}) == [
        "7: sources.c.bearer_token: malformed variable '${INGEST TOKEN}': write ${NAME} or "
        "${NAME:-default} (NAME: letters, digits, '_'), or $$ for a literal '$'",
        f"5: sources.a.bearer_token: {EMPTY}",
        f"6: sources.b.bearer_token: {EMPTY}",
    ]


def test_line_breaks_in_http_and_loki_tokens_and_headers_are_refused(tmp_path: Path) -> None:
    text = HEAD + (
        '  web: {type: http, url: "http://h/x", bearer_token: "t\\r\\nX: y",'
        ' headers: {X-A: "a\\nb"}}\n'
        '  loki: {type: loki, url: "http://l:3100", tenant_id: "a\\nb",'
        ' bearer_token: "t\\n", headers: {X-B: "c\\rd"}}\n'
    )
    assert refused(tmp_path, text) == [
        f"7: sinks.web.bearer_token: {NOT_TOKEN}",
        f"7: sinks.web.headers.X-A: {NOT_HEADER}",
        f"8: sinks.loki.tenant_id: {NOT_TOKEN}",
        f"8: sinks.loki.bearer_token: {NOT_TOKEN}",
        f"8: sinks.loki.headers.X-B: {NOT_HEADER}",
    ]


# -- TLS files ---------------------------------------------------------------------------


def test_missing_tls_files_are_named_with_their_key_and_resolved_path(tmp_path: Path) -> None:
    text = HEAD + (
        "  web: {type: http, url: 'https://h/x', tls: {ca_file: certs/ca.pem}}\n"
        "  loki: {type: loki, url: 'https://l:3100', tls: {cert_file: /nonexistent/c.pem}}\n"
        "  bus: {type: kafka, bootstrap_servers: 'k:9092', topic: t, security_protocol: SSL,\n"
        "        tls: {ca_file: certs/ca.pem, key_file: k.pem, cert_file: certs/ca.pem}}\n"
    )
    ca, key = tmp_path / "certs" / "ca.pem", tmp_path / "k.pem"
    assert refused(tmp_path, text) == [
        f"7: sinks.web.tls.ca_file: no readable file {ca}",
        "8: sinks.loki.tls.cert_file: no readable file /nonexistent/c.pem",
        f"10: sinks.bus.tls.ca_file: no readable file {ca}",
        f"10: sinks.bus.tls.cert_file: no readable file {ca}",
        f"10: sinks.bus.tls.key_file: no readable file {key}",
    ]


def test_tls_files_next_to_the_config_are_found_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("not checked here")
    monkeypatch.chdir("/")
    text = HEAD + "  web: {type: http, url: 'https://h/x', tls: {ca_file: certs/ca.pem}}\n"
    result = validate(tmp_path, text)
    assert result.exit_code == 0, result.output


# -- limits that must agree --------------------------------------------------------------


def test_the_default_http_source_fits_the_default_ring(tmp_path: Path) -> None:
    text = HEAD.replace("sinks:", "  web: {type: http}\nsinks:")
    assert validate(tmp_path, text).exit_code == 0


def test_an_http_body_limit_larger_than_the_ring_is_refused(tmp_path: Path) -> None:
    text = HEAD.replace("sinks:", "  web: {type: http, max_body_bytes: 10MiB}\nsinks:")
    assert refused(tmp_path, text) == [
        "5: sources.web.max_body_bytes: 10485760 bytes can never fit the collector ring of "
        "4194304 bytes (buffer.collector_slots x collector_slot_bytes) with room for the "
        "labels its entries gain: at most 2097152 (half the ring), or enlarge the ring",
    ]


def test_rings_of_tebibytes_are_refused(tmp_path: Path) -> None:
    text = HEAD + "buffer: {collector_slots: 65536, collector_slot_bytes: 64MiB}\n"
    problems = refused(tmp_path, text)
    assert "7: buffer: the rings would take 4398063288320 bytes of shared memory " in (problems[-1])
    assert problems[-1].endswith("at most 8589934592 (8 GiB)")


# -- keys that cannot apply, impossible setups -------------------------------------------


def test_keys_that_cannot_apply_are_refused(tmp_path: Path) -> None:
    text = HEAD + (
        "  out: {type: file, path: out.log, fsync: batch, fsync_interval: 2s}\n"
        "  loki: {type: loki, url: 'http://l:3100', compression: none}\n"
        "dlq: {fsync: always, fsync_interval: 2s}\n"
    )
    assert refused(tmp_path, text) == [
        "7: sinks.out.fsync_interval: only applies with fsync: interval (fsync is batch)",
        "8: sinks.loki.compression: only applies with encoding: json (protobuf bodies are "
        "always snappy compressed)",
        "9: dlq.fsync_interval: only applies with fsync: interval (fsync is always)",
    ]


def test_impossible_listening_addresses_are_refused(tmp_path: Path) -> None:
    text = HEAD.replace("api: {enabled: false}", "api: {address: '127.0.0.1:9598'}").replace(
        "sinks:",
        "  big: {type: http, address: '127.0.0.1:99999'}\n"
        "  onapi: {type: http, address: '0.0.0.0:9598'}\n"
        "  one: {type: http, address: '127.0.0.1:8686'}\n"
        "  two: {type: http, address: '127.0.0.1:8686'}\n"
        "sinks:",
    )
    assert refused(tmp_path, text) == [
        "5: sources.big.address: port 99999 is not between 1 and 65535",
        "6: sources.onapi.address: 0.0.0.0:9598 is also where the API listens",
        "8: sources.two.address: 127.0.0.1:8686 is also where http source one listens",
    ]


# -- how problems are reported -----------------------------------------------------------


def test_an_enum_error_lists_the_valid_values(tmp_path: Path) -> None:
    text = HEAD.replace('include: ["./logs/*.log"]', "include: [x], read_from: start")
    assert refused(tmp_path, text) == [
        "4: sources.app.read_from: 'start' is not one of beginning, end",
    ]


def test_every_problem_of_a_component_is_reported(tmp_path: Path) -> None:
    text = HEAD.replace(
        'include: ["./logs/*.log"]',
        "include: [x], read_from: start, max_line_bytes: 10, long_lines: cut, colour: red",
    )
    assert refused(tmp_path, text) == [
        "4: sources.app.read_from: 'start' is not one of beginning, end",
        "4: sources.app.max_line_bytes: size must be at least 64 bytes, got 10",
        "4: sources.app.long_lines: 'cut' is not one of truncate, skip",
        "4: sources.app.colour: unknown key 'colour'",
    ]


def test_an_unknown_key_does_not_hide_the_rules_across_the_component_s_other_keys(
    tmp_path: Path,
) -> None:
    """A typo'd key used to stop a component's checks there: its placeholder and
    inapplicable-key rules were only reported on the next run, once the typo was fixed."""
    text = HEAD + (
        '  out: {type: file, path: "out/{sorce}.log", colur: red, fsync: batch, '
        "fsync_interval: 1s}\n"
    )
    assert refused(tmp_path, text) == [
        "7: sinks.out.colur: unknown key 'colur'",
        f"7: sinks.out.path: unknown placeholder '{{sorce}}' ({USE}); "
        "dates use strftime fields such as '%Y-%m-%d'",
        "7: sinks.out.fsync_interval: only applies with fsync: interval (fsync is batch)",
    ]


def test_source_labels_are_checked_names_patterns_and_built_ins(tmp_path: Path) -> None:
    text = HEAD.replace(
        'include: ["./logs/*.log"]}',
        'include: ["./logs/*.log"], labels: {host: me, env: prod},\n'
        "        path_labels: '(?P<env>x)(?P<path>y)'}\n"
        "  other: {type: file, include: [x], path_labels: '([a-z]+)', labels: {9bad: x}}\n"
        "  third: {type: file, include: [y], path_labels: '(?P<a>'}\n"
        "  web: {type: http, labels: {client_ip: x}}\n"
        "  box: {type: docker, labels: {stream: x}}",
    )
    assert refused(tmp_path, text) == [
        "4: sources.app.labels.host: 'host' is a built-in label of this source and cannot be set",
        "5: sources.app.path_labels: group 'env' would replace the label 'env'",
        "5: sources.app.path_labels: group 'path' would replace the label 'path'",
        "6: sources.other.labels.9bad: Expected `str` matching regex "
        "'^[A-Za-z_][A-Za-z0-9_]{0,127}\\\\Z' (a label name: letters, digits and '_', not "
        "starting with a digit)",
        "7: sources.third.path_labels: not a regular expression: missing ), unterminated "
        "subpattern at position 0",
        "8: sources.web.labels.client_ip: 'client_ip' is a built-in label of this source and "
        "cannot be set",
        "9: sources.box.labels.stream: 'stream' is a built-in label of this source and cannot "
        "be set",
    ]
    many = ", ".join(f"l{n}: v" for n in range(33))
    text = HEAD.replace(
        'include: ["./logs/*.log"]', f'include: ["./logs/*.log"], labels: {{{many}}}'
    )
    assert refused(tmp_path, text) == ["4: sources.app.labels: 33 labels, at most 32"]


PIPELINE_PROBLEMS = """\
pipelines:
  p:
    steps:
      - {type: regex_extract, pattern: '(oops'}
      - {type: regex_extract, pattern: '([a-z]+)'}
      - {type: timestamp_parse, field: fields.t, formats: [iso8601, '%Q'], timezone: Mars/Olympus}
      - {type: drop, when: {field: level, equals: x, in: [y]}}
      - {type: level_extract}
      - {type: field_rename, from: message, to: fields.m}
"""


def test_pipeline_steps_are_checked_with_path_and_line(tmp_path: Path) -> None:
    text = PIPELINE_PROBLEMS + HEAD.replace(
        'include: ["./logs/*.log"]', 'include: ["./logs/*.log"], pipelines: [p, nope]'
    )
    assert refused(tmp_path, text) == [
        "13: sources.app.pipelines[1]: no pipeline named 'nope' (pipelines: p)",
        "4: pipelines.p.steps[0].pattern: not a regular expression: missing ), unterminated "
        "subpattern at position 0",
        "5: pipelines.p.steps[1].pattern: has no named group: write (?P<name>...) for each value",
        "6: pipelines.p.steps[2].formats[0]: 'iso8601' is not one of rfc3339, unix, unix_ms, "
        "unix_ns nor a strptime pattern (with %)",
        "6: pipelines.p.steps[2].formats[1]: not a strptime pattern: 'Q' is a bad directive in "
        "format '%Q'",
        "6: pipelines.p.steps[2].timezone: unknown time zone 'Mars/Olympus' (an IANA name such "
        "as UTC or Europe/Paris)",
        "7: pipelines.p.steps[3].when: give exactly one of matches, equals, in",
        "8: pipelines.p.steps[4]: give exactly one of field, pattern",
        "9: pipelines.p.steps[5]: message cannot be removed or renamed",
    ]
    typo = "pipelines:\n  p: {steps: [{type: json_prase}, {type: json_parse, colour: red}]}\n"
    assert refused(tmp_path, typo + HEAD) == [
        "2: pipelines.p.steps[0].type: 'json_prase' is not one of json_parse, regex_extract, "
        "timestamp_parse, level_extract, field_add, field_remove, field_rename, drop, dedup",
        "2: pipelines.p.steps[1].colour: unknown key 'colour'",
    ]


def test_a_rate_limit_is_checked(tmp_path: Path) -> None:
    text = HEAD.replace(
        'include: ["./logs/*.log"]',
        'include: ["./logs/*.log"], '
        "rate_limit: {events_per_second: 0, burst: 0, when_exceeded: later}",
    )
    assert refused(tmp_path, text) == [
        "4: sources.app.rate_limit.events_per_second: Expected `float` > 0.0",
        "4: sources.app.rate_limit.burst: Expected `int` >= 1",
        "4: sources.app.rate_limit.when_exceeded: 'later' is not one of wait, drop",
    ]


def test_an_unknown_component_type_lists_the_types(tmp_path: Path) -> None:
    text = HEAD.replace("type: blackhole", "type: blackhol")
    assert refused(tmp_path, text) == [
        "6: sinks.devnull.type: 'blackhol' is not one of file, console, blackhole, kafka, "
        "loki, http",
    ]


# -- the environment and the host at start -----------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_bogus_log_level_is_one_line_and_exit_78(tmp_path: Path, command: str) -> None:
    config = tmp_path / "logcap.yaml"
    config.write_text(HEAD)
    result = CliRunner().invoke(
        main,
        [command, "--config", str(config)],
        env={"LOGCAP_LOG_LEVEL": "bogus"},
        catch_exceptions=False,
    )
    assert result.exit_code == EX_CONFIG
    assert result.stderr == (
        "logcap: LOGCAP_LOG_LEVEL: 'bogus' is not one of debug, info, warning, error, critical\n"
    )
    assert not (tmp_path / "state").exists()


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 some other program is listening on."""
    with socket.create_server(("127.0.0.1", 0)) as held:
        yield held.getsockname()[1]


@pytest.mark.parametrize("listener", ["api", "source"])
def test_an_address_in_use_at_start_is_one_line_and_exit_78(
    tmp_path: Path, held_port: int, listener: str
) -> None:
    address = f"127.0.0.1:{held_port}"
    if listener == "api":
        text = HEAD.replace("api: {enabled: false}", f"api: {{address: '{address}'}}")
        who = "the API (api.address)"
    else:
        text = HEAD.replace("sinks:", f"  web: {{type: http, address: '{address}'}}\nsinks:")
        who = "http source web (sources.web.address)"
    (tmp_path / "logcap.yaml").write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "logcap", "run", "--config", str(tmp_path / "logcap.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == EX_CONFIG, done.stderr
    assert done.stderr == f"logcap: cannot listen on {address} for {who}: Address already in use\n"
    assert not list((tmp_path / "state").glob("*/")), "started something for a busy address"


def test_an_api_address_taken_after_the_check_is_a_config_error(held_port: int) -> None:
    from types import SimpleNamespace

    from logcap.api import start_api
    from logcap.errors import ConfigError

    address = f"127.0.0.1:{held_port}"
    supervisor = SimpleNamespace(config=SimpleNamespace(api=SimpleNamespace(address=address)))
    with pytest.raises(ConfigError) as refused_bind:
        start_api(supervisor)  # type: ignore[arg-type]
    assert refused_bind.value.problems == [
        f"cannot listen on {address} for the API (api.address): Address already in use"
    ]


def test_an_http_source_address_taken_after_the_check_is_one_log_line(held_port: int) -> None:
    import logging

    from logcap.capture.http.collector import HttpCollector
    from logcap.capture.http.config import HttpSourceConfig

    config = HttpSourceConfig(address=f"127.0.0.1:{held_port}")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("logcap.capture.http.collector").addHandler(handler)
    try:
        with pytest.raises(SystemExit) as exited:
            HttpCollector("web", config, None, None)  # type: ignore[arg-type]
    finally:
        logging.getLogger("logcap.capture.http.collector").removeHandler(handler)
    assert exited.value.code == EX_CONFIG
    assert [r.getMessage() for r in records] == [
        f"source web: cannot listen on 127.0.0.1:{held_port}: Address already in use"
    ]


SECRET = HEAD + ("  web: {type: http, url: 'http://h/x', bearer_token: '${LOGCAP_TEST_SECRET}'}\n")


def test_commands_that_need_no_secrets_load_the_config_without_them(tmp_path: Path) -> None:
    from logcap.cli_common import load

    config = tmp_path / "logcap.yaml"
    config.write_text(SECRET)
    loaded = load(config, secrets=False)
    assert loaded.sinks["web"].bearer_token == "unset"  # type: ignore[union-attr]
    assert loaded.data_dir == str(tmp_path / "state")


def test_validate_still_needs_the_secrets(tmp_path: Path) -> None:
    assert refused(tmp_path, SECRET, env={"LOGCAP_TEST_SECRET": None}) == [
        "7: sinks.web.bearer_token: environment variable LOGCAP_TEST_SECRET is not set "
        "(use ${LOGCAP_TEST_SECRET:-default})",
    ]


def test_a_components_own_rules_are_checked_even_when_other_sections_are_bad(
    tmp_path: Path,
) -> None:
    text = HEAD + (
        '  out: {type: file, path: "out/{sorce}.log", fsync: batch, fsync_interval: 2s}\n'
        "dispatcher: {batch_timeout: soon}\n"
    )
    assert refused(tmp_path, text) == [
        f"7: sinks.out.path: unknown placeholder '{{sorce}}' ({USE}); "
        "dates use strftime fields such as '%Y-%m-%d'",
        "7: sinks.out.fsync_interval: only applies with fsync: interval (fsync is batch)",
        "8: dispatcher.batch_timeout: expected a duration like '200ms' or '5s', got 'soon'",
    ]


def test_a_line_break_in_a_url_or_header_name_is_refused_on_one_line(tmp_path: Path) -> None:
    text = HEAD + (
        '  web: {type: http, url: "http://h/x\\n"}\n'
        '  loki: {type: loki, url: "http://l:3100", headers: {"X-A\\n": v}}\n'
    )
    assert refused(tmp_path, text) == [
        "7: sinks.web.url: Expected `str` matching regex "
        "'^https?://[^\\\\s/?#@]+(/[^\\\\s?#]*)?(\\\\?[^\\\\s#]*)?\\\\Z'",
        "8: sinks.loki.headers.X-A\\n: Expected `str` matching regex "
        '"^[!#$%&\'*+.^_`|~0-9A-Za-z-]+\\\\Z" (an HTTP header name)',
    ]
