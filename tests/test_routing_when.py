"""A sink's ``when`` through ``logcap run``: the dispatcher decides each entry's sinks
once (dispatch/route.py), the sinks skip the groups not for them (sinks/routing.py), and
checkpoints still move when a sink gets none of a batch."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from logcap.cli import main
from logcap.cli_common import EX_CONFIG
from tests._output import read_ndjson
from tests.conftest import free_port, wait_for, write_config

CONFIG = """
data_dir: ./data
pipelines:
  parse: {steps: [{type: json_parse}, {type: level_extract, field: fields.lvl}]}
sources:
  app: {type: file, include: ["./logs/app.log"], pipelines: [parse]}
  raw: {type: file, include: ["./logs/raw.log"]}
sinks:
  all: {type: file, path: "./out/all.ndjson"}
  errors: {type: file, path: "./out/errors.ndjson", when: {field: level, in: [error, critical]}}
  ops: {type: file, path: "./out/ops.ndjson", when: {field: message, matches: '^OPS'}}
  app_warn: {type: file, path: "./out/app_warn.ndjson", inputs: [app],
             when: {field: level, equals: warning}}
dispatcher: {batch_timeout: 20ms}
"""


def _messages(path: Path) -> list[str]:
    return [entry["message"] for entry in read_ndjson(path)]


def test_each_sink_gets_exactly_the_entries_its_when_matches(tmp_path: Path, start_agent) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    levels = ["info", "error", "warn", "crit", "debug"]
    app = [json.dumps({"lvl": levels[n % 5], "n": n}) for n in range(500)]
    raw = [("OPS " if n % 3 == 0 else "") + f"raw {n}" for n in range(300)]
    (logs / "app.log").write_text("\n".join(app) + "\n")
    (logs / "raw.log").write_text("\n".join(raw) + "\n")
    address = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path, CONFIG, address)
    agent = start_agent(config, address)
    agent.wait_ready()
    out = tmp_path / "out"
    wait_for(lambda: len(_messages(out / "all.ndjson")) == 800, 60, "every entry in all")
    assert agent.stop() == 0

    def sent(name: str) -> list[str]:
        return sorted(_messages(out / f"{name}.ndjson"))

    assert sent("all") == sorted(app + raw)
    assert sent("errors") == sorted(a for n, a in enumerate(app) if n % 5 in (1, 3))
    assert sent("ops") == sorted(r for r in raw if r.startswith("OPS"))
    assert sent("app_warn") == sorted(a for n, a in enumerate(app) if n % 5 == 2)

    # every batch was acknowledged by every sink, those that got none of it too: a
    # restart reads nothing again
    again = start_agent(config, address)
    again.wait_ready()
    wait_for(
        lambda: again.metric("logcap_source_files_watched", component="raw") == 1, 30, "a scan"
    )
    assert again.stop() == 0
    assert sent("all") == sorted(app + raw)
    assert len(sent("ops")) == 100


def test_a_sink_s_when_is_checked(tmp_path: Path) -> None:
    text = """\
data_dir: ./state
api: {enabled: false}
sources:
  app: {type: file, include: [x]}
sinks:
  a: {type: blackhole, when: {field: level, equals: x, in: [y]}}
  b: {type: blackhole, when: {field: message, matches: '(oops'}}
  c: {type: blackhole, when: {field: lvl, equals: x}}
"""
    config = tmp_path / "logcap.yaml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["validate", "--config", str(config)])
    assert result.exit_code == EX_CONFIG
    prefix = f"{config}:"
    problems = [line[len(prefix) :] for line in result.stderr.splitlines()[:-1]]
    assert problems[0].startswith("8: sinks.c.when.field: Expected `str` matching regex"), problems
    assert len(problems) == 1  # a bad key first; the rules across keys come once it is fixed
    config.write_text(text.replace("  c: {type: blackhole, when: {field: lvl, equals: x}}\n", ""))
    result = CliRunner().invoke(main, ["validate", "--config", str(config)])
    assert result.stderr.splitlines()[:-1] == [
        f"{config}:6: sinks.a.when: give exactly one of matches, equals, in",
        f"{config}:7: sinks.b.when.matches: not a regular expression: missing ), unterminated "
        "subpattern at position 0",
    ]
