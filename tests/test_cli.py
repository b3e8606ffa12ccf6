"""The ``logcap`` command line: ``validate``, ``run``'s refusal of bad configs, ``--version``.

``validate`` exits 0 with a summary, or prints every problem as ``FILE:LINE: path: reason``
on stderr and exits 78 (EX_CONFIG); ``run`` refuses the same configs the same way before
it creates any shared-memory segment or directory. Uses click's ``CliRunner``, plus real
``python -m logcap`` subprocesses to check the exit status survives a real interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from logcap.cli import main
from logcap.cli_common import EX_CONFIG

VALID = """\
data_dir: ./state
sources:
  app:
    type: file
    include: ["./logs/*.log"]
sinks:
  archive:
    type: file
    path: "./out/{source}.ndjson"
  devnull:
    type: blackhole
"""

# three independent problems in three components
INVALID = """\
data_dir: ./state
sources:
  app:
    type: file
    include: ["./logs/*.log"]
    colour: red
sinks:
  archive:
    type: console
    stream: stdin
dispatcher:
  batch_timeout: 2 fortnights
"""
INVALID_PROBLEMS = [
    (6, "sources.app.colour", "unknown key 'colour'"),
    (10, "sinks.archive.stream", "'stdin'"),
    (12, "dispatcher.batch_timeout", "'2 fortnights'"),
]

PROBLEM_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+): (?P<path>[^\s:]+): (?P<reason>.+)$")


def write(tmp_path: Path, text: str, name: str = "logcap.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """Run the CLI in-process; an ``env`` value of None unsets that variable."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def assert_problems_reported(
    stderr: str, config: Path, expected: list[tuple[int, str, str]]
) -> None:
    """stderr holds exactly the ``expected`` problem lines for ``config`` and a count."""
    lines = stderr.splitlines()
    assert lines[-1] == f"invalid configuration: {len(expected)} problem(s)", stderr
    problems = [PROBLEM_LINE.match(line) for line in lines[:-1]]
    assert all(problems), f"not FILE:LINE: path: reason: {lines[:-1]}"
    found = [(m["file"], int(m["line"]), m["path"], m["reason"]) for m in problems if m]
    assert len(found) == len(expected), found
    for (file, line, path, reason), (want_line, want_path, want_reason) in zip(
        found, expected, strict=True
    ):
        assert (file, line, path) == (str(config), want_line, want_path), found
        assert want_reason in reason, found


def own_segments() -> set[str]:
    """Shared-memory segments a supervisor running in this process would have created."""
    return {p.name for p in Path("/dev/shm").glob(f"logcap-{os.getpid()}-*")}


# -- validate ----------------------------------------------------------------------------


def test_validate_accepts_a_valid_config_and_prints_a_summary(tmp_path: Path) -> None:
    result = invoke("validate", "--config", str(write(tmp_path, VALID)))
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: 1 source(s), 2 sink(s)\n"
    assert result.stderr == ""
    # validation is pure: nothing named in the config is created
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "out").exists()


def test_validate_reports_every_problem_with_file_line_and_path(tmp_path: Path) -> None:
    config = write(tmp_path, INVALID)
    result = invoke("validate", "--config", str(config))
    assert result.exit_code == EX_CONFIG == 78
    assert result.stdout == ""
    assert_problems_reported(result.stderr, config, INVALID_PROBLEMS)


def test_validate_reports_yaml_syntax_errors_with_their_line(tmp_path: Path) -> None:
    config = write(tmp_path, "sources:\n  app: {type: file, include: [a]}\napi: address: x\n")
    result = invoke("validate", "--config", str(config))
    assert result.exit_code == EX_CONFIG
    assert result.stderr.startswith(f"{config}:3: invalid YAML: "), result.stderr


def test_validate_reports_an_unset_variable_with_its_path(tmp_path: Path) -> None:
    config = write(tmp_path, VALID.replace("./state", "${LOGCAP_TEST_UNSET_DIR}"))
    result = invoke("validate", "--config", str(config), env={"LOGCAP_TEST_UNSET_DIR": None})
    assert result.exit_code == EX_CONFIG
    assert f"{config}:1: data_dir: environment variable LOGCAP_TEST_UNSET_DIR is not set" in (
        result.stderr
    )


def test_validate_of_a_missing_file_exits_78_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = invoke("validate", "--config", str(missing))
    assert result.exit_code == EX_CONFIG
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first == f"{missing}: cannot read config: No such file or directory", result.stderr


def test_validate_without_config_checks_the_embedded_default(tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "LOGCAP_INPUT": str(tmp_path / "in"),
        "LOGCAP_OUTPUT": str(tmp_path / "out"),
    }
    result = invoke("validate", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: 1 source(s), 1 sink(s)\n"


def test_version_option_prints_the_package_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert metadata.version("logcap") in result.stdout


# -- run refuses what validate refuses ---------------------------------------------------

RUN_REFUSALS = {
    "unknown key": (
        VALID.replace("    type: blackhole\n", "    type: blackhole\n    speed: fast\n"),
        [(12, "sinks.devnull.speed", "unknown key 'speed'")],
    ),
    "bad duration": (
        VALID + "supervisor:\n  shutdown_timeout: 2 fortnights\n",
        [(13, "supervisor.shutdown_timeout", "'2 fortnights'")],
    ),
}


@pytest.mark.parametrize("text,expected", RUN_REFUSALS.values(), ids=RUN_REFUSALS.keys())
def test_run_refuses_an_invalid_config_before_starting_anything(
    tmp_path: Path, text: str, expected: list[tuple[int, str, str]]
) -> None:
    config = write(tmp_path, text)
    segments_before = own_segments()
    result = invoke("run", "--config", str(config))
    assert result.exit_code == EX_CONFIG
    assert_problems_reported(result.stderr, config, expected)
    assert own_segments() == segments_before, "run created shared memory for a bad config"
    assert not (tmp_path / "state").exists(), "run created data_dir for a bad config"
    assert not (tmp_path / "out").exists()


def test_run_and_validate_report_the_same_problems(tmp_path: Path) -> None:
    config = write(tmp_path, INVALID)
    validated = invoke("validate", "--config", str(config))
    ran = invoke("run", "--config", str(config))
    assert ran.exit_code == validated.exit_code == EX_CONFIG
    assert ran.stderr == validated.stderr
    assert not (tmp_path / "state").exists()


# -- a real interpreter ------------------------------------------------------------------


def _python_m_logcap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logcap", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_python_m_logcap_validate_exit_status(tmp_path: Path) -> None:
    good = write(tmp_path, VALID, "good.yaml")
    ok = _python_m_logcap("validate", "--config", str(good), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "ok: 1 source(s), 2 sink(s)\n"

    bad = write(tmp_path, INVALID, "bad.yaml")
    refused = _python_m_logcap("validate", "--config", str(bad), cwd=tmp_path)
    assert refused.returncode == 78
    assert refused.stdout == ""
    assert_problems_reported(refused.stderr, bad, INVALID_PROBLEMS)
