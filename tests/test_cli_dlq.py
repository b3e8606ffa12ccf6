"""``logcap dlq`` against a DLQ filled by a real agent: a permanent failure goes to the
DLQ on the first attempt, ``replay`` delivers it once the cause is fixed, a second
replay delivers nothing, and ``ls``/``show``/``purge`` say what a script needs; replay shows
its progress on a terminal only (run under a pseudo-terminal here), never in a pipe.

The permanent failure is a file name longer than the file system allows: an output
directory an operator can fix (missing, read-only, a file in its place) is retryable."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from logcap.cli import main
from tests.conftest import free_port, wait_for, write_config

LINES = 1500
TOO_LONG = "n" * 300  # past NAME_MAX (255): ENAMETOOLONG, a permanent failure
AGENT_CONFIG = """
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  healthy: {{type: file, path: "./out/healthy.ndjson"}}
  broken: {{type: file, path: "{broken}"}}
dispatcher: {{batch_max_events: 500, batch_timeout: 50ms}}
"""


def _dlq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logcap", "dlq", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def filled(
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """An agent run whose `broken` sink fails permanently (its file name is too long)."""
    from tests.conftest import Agent

    root = tmp_path_factory.mktemp("dlqcli")
    (root / "logs").mkdir()
    (root / "logs" / "a.log").write_bytes(b"".join(b"line %06d\n" % n for n in range(LINES)))
    address = f"127.0.0.1:{free_port()}"
    config = write_config(root, AGENT_CONFIG.format(broken=f"./out/{TOO_LONG}"), address)
    agent = Agent(config, address)
    try:
        agent.wait_ready()
        wait_for(
            lambda: (
                agent.metric("logcap_dlq_records_total", component="broken", reason="permanent")
                >= LINES // 500
            ),
            60,
            "DLQ records",
        )
        assert agent.metric("logcap_component_sent_events_total", component="healthy") == LINES
        assert agent.metric("logcap_retries_total", component="broken") == 0
        assert agent.stop() == 0
    finally:
        agent.kill()
    shutil.copytree(root / "data", root / "pristine" / "data")  # for _pending_copy
    return config


def _pending_copy(filled: Path, directory: Path, broken: str) -> Path:
    """A config on a copy of the DLQ as the agent left it (nothing replayed yet), its
    ``broken`` sink writing to ``broken``."""
    shutil.copytree(filled.parent / "pristine" / "data", directory / "data")
    return write_config(directory, AGENT_CONFIG.format(broken=broken), "127.0.0.1:1")


def _replay_on_a_terminal(config: Path) -> tuple[int, str, str]:
    """``dlq replay`` with its stderr on a pseudo-terminal: exit code, stdout, and every
    byte the terminal received."""
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "logcap", "dlq", "replay", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "160"},
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 1)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the last writer closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
        out, _ = process.communicate(timeout=60)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out.decode(), screen.decode()


def test_permanent_failure_is_in_the_dlq_after_one_attempt(filled: Path) -> None:
    result = _dlq("show", "--config", str(filled))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["sink"] for r in records} == {"broken"}
    assert {r["reason"] for r in records} == {"permanent"}
    assert all(r["attempts"] == 1 and not r["replayed"] for r in records)
    messages = [e["message"] for r in records for e in r["entries"]]
    assert sorted(messages) == [f"line {n:06d}" for n in range(LINES)]
    entry = records[0]["entries"][0]
    assert set(entry) == {"timestamp", "ingested_at", "source", "labels", "message"}
    assert "File name too long" in records[0]["error"]


def test_show_filters_by_sink_and_reason(filled: Path) -> None:
    assert _dlq("show", "--config", str(filled), "--sink", "healthy").stdout == ""
    assert _dlq("show", "--config", str(filled), "--reason", "overflow").stdout == ""
    assert _dlq("show", "--config", str(filled), "--reason", "permanent").stdout


def test_ls_lists_segments_with_counts_reasons_and_sinks(filled: Path) -> None:
    result = _dlq("ls", "--config", str(filled), "--json")
    assert result.returncode == 0
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["records"] == LINES // 500 and row["entries"] == LINES
    assert row["reasons"] == {"permanent": LINES // 500} and row["sinks"] == {"broken": 3}
    assert row["first"] <= row["last"]
    assert "records" in _dlq("ls", "--config", str(filled)).stdout


def test_replay_fails_while_the_cause_remains_then_delivers_once_fixed_and_only_once(
    filled: Path,
) -> None:
    root = filled.parent
    failing = _dlq("replay", "--config", str(filled))
    assert failing.returncode == 1 and "0 records" in failing.stdout
    address = filled.read_text().splitlines()[0]
    filled.write_text(address + "\n" + AGENT_CONFIG.format(broken="./blocked/broken.ndjson"))
    fixed = _dlq("replay", "--config", str(filled))
    assert fixed.returncode == 0, fixed.stderr
    assert f"replayed 3 records ({LINES} entries)" in fixed.stdout
    out = (root / "blocked" / "broken.ndjson").read_bytes().splitlines()
    assert sorted(json.loads(line)["message"] for line in out) == [
        f"line {n:06d}" for n in range(LINES)
    ]
    again = _dlq("replay", "--config", str(filled))
    assert again.returncode == 0 and "nothing to replay" in again.stdout
    assert (root / "blocked" / "broken.ndjson").read_bytes().splitlines() == out
    pending = _dlq("show", "--config", str(filled), "--pending")
    assert pending.stdout == ""
    kept = _dlq("purge", "--config", str(filled))  # the newest segment is never purged
    assert kept.returncode == 0 and "purged 0 segments" in kept.stdout
    assert "the newest kept" in kept.stdout
    purged = _dlq("purge", "--config", str(filled), "--all")
    assert purged.returncode == 0 and "purged 1 segments" in purged.stdout
    assert "empty" in _dlq("ls", "--config", str(filled)).stdout


def test_replay_on_a_terminal_shows_progress_that_ends_at_100_percent(
    filled: Path, tmp_path: Path
) -> None:
    config = _pending_copy(filled, tmp_path, "./fixed/broken.ndjson")
    code, out, screen = _replay_on_a_terminal(config)
    assert code == 0, screen
    assert out == f"replayed 3 records ({LINES} entries); 0 failed\n"  # as without a terminal
    lines = [line.strip() for line in screen.split("\r") if "replaying" in line]
    assert "0/3 records" in lines[0] and f"0/{LINES} entries" in lines[0], lines
    last = lines[-1]
    assert "100%" in last and "3/3 records" in last and f"{LINES}/{LINES} entries" in last, last
    assert "entries/s" in last and "ETA" in lines[1], lines
    assert screen.endswith("\n")  # the shell prompt comes back below the progress line


def test_replay_without_a_terminal_prints_only_its_summary_and_warnings(
    filled: Path, tmp_path: Path
) -> None:
    failing = _dlq(
        "replay", "--config", str(_pending_copy(filled, tmp_path / "a", f"./{TOO_LONG}"))
    )
    assert failing.returncode == 1
    assert failing.stdout == "replayed 0 records (0 entries); 3 failed\n"
    warnings = failing.stderr.splitlines()
    assert len(warnings) == 3 and all(w.startswith("warning: ") for w in warnings), warnings
    assert "File name too long" in warnings[0]
    fixed = _dlq("replay", "--config", str(_pending_copy(filled, tmp_path / "b", "./ok.ndjson")))
    assert fixed.returncode == 0
    assert fixed.stdout == f"replayed 3 records ({LINES} entries); 0 failed\n"
    assert fixed.stderr == ""


def test_replay_to_an_unknown_sink_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
sources: {app: {type: file, include: [x]}}
sinks: {out: {type: blackhole}}
""",
        "127.0.0.1:1",
    )
    result = CliRunner().invoke(main, ["dlq", "replay", "--config", str(config), "--to", "nope"])
    assert result.exit_code == 2 and "no sink named 'nope'" in result.output


def test_dlq_commands_refuse_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: {app: {type: file, include: [x], colour: red}}\nsinks: {}\n")
    for command in ("ls", "show", "replay", "purge"):
        result = CliRunner().invoke(main, ["dlq", command, "--config", str(bad)])
        assert result.exit_code == 78, command
        assert "sources.app.colour" in result.output


def test_purge_keeps_segments_with_pending_records_unless_all(tmp_path: Path) -> None:
    from logcap.config import parse_config
    from logcap.dlq.record import DlqRecord
    from logcap.dlq.writer import DlqWriter, dlq_directory

    config = write_config(
        tmp_path,
        """
data_dir: ./data
sources: {app: {type: file, include: [x]}}
sinks: {out: {type: blackhole}}
dlq: {segment_bytes: 64KiB}
""",
        "127.0.0.1:1",
    )
    parsed = parse_config(config.read_text(), base_dir=tmp_path)
    writer = DlqWriter(dlq_directory(parsed.data_dir), parsed.dlq)
    for seq in (0, 1):  # 40 KB each: two segments of 64 KiB
        writer.append(
            DlqRecord(
                sink="out",
                kind="exhausted",
                reason="x",
                attempts=3,
                first_failure_ns=1,
                written_ns=2,
                batch_seq=seq,
                entries=0,
                batch=b"\0" * 40_000,
            )
        )
    writer.close()
    runner = CliRunner()
    kept = runner.invoke(main, ["dlq", "purge", "--config", str(config)])
    assert kept.exit_code == 0 and "1 with pending records kept" in kept.output
    assert "the newest kept" in kept.output
    gone = runner.invoke(main, ["dlq", "purge", "--config", str(config), "--all"])
    assert gone.exit_code == 0 and "purged 2 segments" in gone.output


def test_dlq_ls_show_and_purge_need_no_secrets_but_replay_does(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
data_dir: ./data
sources: {app: {type: file, include: [x]}}
sinks: {out: {type: http, url: "http://127.0.0.1:1/", bearer_token: "${LOGCAP_TEST_UNSET_TOKEN}"}}
""",
        "127.0.0.1:1",
    )
    env = {"LOGCAP_TEST_UNSET_TOKEN": None}  # unset, as on a host without the service's secrets
    for command in ("ls", "show", "purge"):
        result = CliRunner().invoke(main, ["dlq", command, "--config", str(config)], env=env)
        assert result.exit_code == 0, (command, result.output)
    replay = CliRunner().invoke(main, ["dlq", "replay", "--config", str(config)], env=env)
    assert replay.exit_code == 78 and "LOGCAP_TEST_UNSET_TOKEN" in replay.output
