"""The whole agent as operators run it: ``logcap run`` with real processes and files.

Covers the walking skeleton's acceptance criteria: lines appended while running arrive
exactly once and in order per file, SIGTERM drains and exits 0 quickly, a second run
adds nothing, crashed children are restarted without loss, segments are owner-only and
cleaned up (also after a dead run), and /metrics, /health and /ready answer.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import msgspec
import pytest

from logcap.dispatch.checkpoint import CheckpointStore
from tests.conftest import free_port, wait_for, write_config

PAD = b"p" * 150
SHM = Path("/dev/shm")


def _line(file_index: int, number: int) -> bytes:
    return b"f%d %08d %s\n" % (file_index, number, PAD)


def _config(tmp_path: Path, address: str, extra: str = "") -> Path:
    return write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/**/*.log"]}}
sinks:
  archive: {{type: file, path: "./out/{{source}}.ndjson"}}
  devnull: {{type: blackhole}}
dispatcher: {{batch_timeout: 50ms, checkpoint_interval: 200ms}}
{extra}""",
        address,
    )


class _Entry(msgspec.Struct):
    timestamp: str
    ingested_at: str
    source: str
    labels: dict[str, str]
    message: str


def _read_output(path: Path) -> dict[str, list[str]]:
    by_file: dict[str, list[str]] = {}
    decoder = msgspec.json.Decoder(_Entry)
    with open(path, "rb") as f:
        for line in f:
            entry = decoder.decode(line)
            assert entry.timestamp == entry.ingested_at and entry.source == "app"
            assert entry.labels["host"]
            by_file.setdefault(entry.labels["path"], []).append(entry.message)
    return by_file


def _append_rounds(files: list[Path], per_file: int, chunk: int) -> None:
    """Append ``per_file`` numbered lines to every file in rounds of ``chunk``; the first
    file's rounds end in a partial line that the next round completes."""
    for start in range(0, per_file, chunk):
        for i, path in enumerate(files):
            data = b"".join(_line(i, n) for n in range(start, start + chunk))
            with open(path, "ab") as out:
                if i == 0 and start:
                    out.write(data[12:])  # complete the line split at the previous round
                else:
                    out.write(data)
                if i == 0 and start + chunk < per_file:
                    out.write(_line(0, start + chunk)[:12])  # a partial last line


def test_appended_lines_arrive_exactly_once_in_order_and_a_rerun_adds_nothing(
    tmp_path: Path, start_agent
) -> None:
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs" / "deep" / "er").mkdir(parents=True)
    files = [tmp_path / "logs" / f"f{i}.log" for i in range(8)]
    files += [tmp_path / "logs" / "deep" / "f8.log", tmp_path / "logs" / "deep" / "er" / "f9.log"]
    config = _config(tmp_path, address)
    agent = start_agent(config, address)
    agent.wait_ready()
    per_file, total = 100_000, 1_000_000
    _append_rounds(files, per_file, 5_000)
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="archive") >= total,
        180,
        "1,000,000 entries",
    )
    began = time.monotonic()
    assert agent.stop(signal.SIGTERM) == 0
    assert time.monotonic() - began < 10, "SIGTERM must drain and exit within 10 s"

    output = tmp_path / "out" / "app.ndjson"
    by_file = _read_output(output)
    for i, path in enumerate(files):
        expected = [_line(i, n)[:-1].decode() for n in range(per_file)]
        assert by_file[str(path)] == expected, f"{path}: lost, duplicated or reordered lines"

    size = output.stat().st_size
    again = start_agent(config, address)
    again.wait_ready()
    wait_for(
        lambda: again.metric("logcap_source_files_watched", component="app") == 10,
        30,
        "the second run to open all files",
    )
    time.sleep(1.0)  # several poll intervals: time enough to (wrongly) re-read anything
    assert again.stop() == 0
    assert output.stat().st_size == size, "a second run over the same files added entries"


def test_killed_children_are_restarted_and_no_line_is_lost(tmp_path: Path, start_agent) -> None:
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    files = [tmp_path / "logs" / f"f{i}.log" for i in range(3)]
    agent = start_agent(_config(tmp_path, address, "supervisor: {restart_backoff: 100ms}"), address)
    agent.wait_ready()
    per_file = 30_000
    _append_rounds(files, per_file // 3, 2_000)
    for victim in ("dispatcher:dispatcher", "sink:archive", "collector:app"):
        pid = agent.children()[victim]
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda v=victim, p=pid: agent.children().get(v, p) != p, 30, f"{victim} to be restarted"
        )
    wait_for(lambda: agent.metric("logcap_child_restarts_total") >= 3, 30, "restart metric")
    agent.wait_ready()
    # more input after the restarts, then everything must be there at least once
    for i, path in enumerate(files):
        with open(path, "ab") as out:
            out.write(b"".join(_line(i, n) for n in range(per_file // 3, per_file)))
    output = tmp_path / "out" / "app.ndjson"

    def complete() -> bool:
        try:
            by_file = _read_output(output)
        except (FileNotFoundError, msgspec.DecodeError):
            return False
        return all(len(set(by_file.get(str(p), []))) == per_file for p in files)

    wait_for(complete, 120, "every line after the restarts")
    assert agent.stop() == 0
    by_file = _read_output(output)
    for i, path in enumerate(files):
        assert set(by_file[str(path)]) == {_line(i, n)[:-1].decode() for n in range(per_file)}


def test_segments_are_owner_only_and_removed_on_exit_and_after_a_dead_run(
    tmp_path: Path, start_agent
) -> None:
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    stale = SHM / f"logcap-{dead}-deadbeef-batches"
    stale.write_bytes(b"\0" * 64)
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    agent = start_agent(_config(tmp_path, address), address)
    agent.wait_ready()
    assert not stale.exists(), "a dead run's segment was not swept"
    mine = [p for p in SHM.glob(f"logcap-{agent.process.pid}-*")]
    # one collector ring, the batch ring, a failure and a redelivery ring per sink (2),
    # counters, run state
    assert len(mine) == 8
    for segment in mine:
        assert stat.S_IMODE(segment.stat().st_mode) == 0o600
    assert agent.stop() == 0
    assert not any(p.exists() for p in mine)


def test_metrics_health_and_ready_report_every_component(tmp_path: Path, start_agent) -> None:
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_bytes(b"one\ntwo\n")
    agent = start_agent(_config(tmp_path, address), address)
    agent.wait_ready()
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="devnull") == 2,
        30,
        "two entries",
    )
    status, health = agent.json("/health")
    assert status == 200 and health["status"] == "ok"
    status, ready = agent.json("/ready")
    assert status == 200 and ready["ready"] is True
    assert set(ready["components"]) == {"app", "dispatcher", "archive", "devnull", "retry"}
    assert agent.metric("logcap_component_received_bytes_total", component="app") == 8
    assert agent.metric("logcap_component_sent_events_total", component="app") == 2
    assert agent.metric("logcap_component_received_events_total", component="dispatcher") == 2
    assert agent.metric("logcap_component_sent_events_total", component="archive") == 2
    assert agent.metric("logcap_source_files_watched", component="app") == 1
    assert agent.metric("logcap_child_up") == 5
    assert agent.metric("logcap_ring_capacity_slots", ring="batches") == 16
    assert agent.metric("logcap_process_resident_memory_bytes", component="dispatcher") > 0
    _, body = agent.get("/metrics")
    assert b'kind="file"' in body and b'kind="blackhole"' in body
    assert agent.get("/nope")[0] == 404
    assert agent.stop() == 0


def test_embedded_default_config_runs_with_no_config_file(tmp_path: Path, start_agent) -> None:
    address = f"127.0.0.1:{free_port()}"
    logs = tmp_path / "input"
    (logs / "sub").mkdir(parents=True)
    (logs / "sub" / "x.log").write_bytes(b"hello default\n")
    agent = start_agent(
        Path("<embedded>"),
        address,
        cwd=tmp_path,
        env={"LOGCAP_INPUT": str(logs), "LOGCAP_API_ADDRESS": address},
    )
    agent.wait_ready()
    out = tmp_path / "logcap-out"
    wait_for(lambda: any(out.glob("local-*.ndjson")), 30, "the default sink's output")
    produced = next(out.glob("local-*.ndjson"))
    wait_for(lambda: b"hello default" in produced.read_bytes(), 30, "the line")
    assert agent.stop() == 0
    assert (tmp_path / "logcap-data" / "checkpoints.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_drain_what_was_read(tmp_path: Path, start_agent, sig: int) -> None:
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_bytes(b"".join(_line(0, n) for n in range(50_000)))
    agent = start_agent(_config(tmp_path, address), address)
    agent.wait_ready()
    wait_for(
        lambda: agent.metric("logcap_component_received_bytes_total", component="app") > 0,
        30,
        "reading to begin",
    )
    # what the pipeline had taken in when the signal came must be delivered before exit
    taken_in = agent.metric("logcap_component_received_bytes_total", component="app")
    assert agent.stop(sig) == 0
    read = len(_read_output(tmp_path / "out" / "app.ndjson")[str(tmp_path / "logs" / "a.log")])
    line_bytes = len(_line(0, 0))
    assert read * line_bytes >= taken_in > 0, "lines taken in before the signal were not delivered"
    # and the checkpoint says exactly what was delivered: the drain saved it at the end
    [position] = CheckpointStore(str(tmp_path / "data")).load().files
    assert position.offset == read * line_bytes
    # whatever was delivered is checkpointed: a restart continues after it, no loss
    again_address = f"127.0.0.1:{free_port()}"
    again = start_agent(_config(tmp_path, again_address), again_address)
    again.wait_ready()
    wait_for(
        lambda: (
            len(_read_output(tmp_path / "out" / "app.ndjson")[str(tmp_path / "logs" / "a.log")])
            >= 50_000
        ),
        60,
        "the rest",
    )
    assert again.stop() == 0
    lines = _read_output(tmp_path / "out" / "app.ndjson")[str(tmp_path / "logs" / "a.log")]
    assert lines == [_line(0, n)[:-1].decode() for n in range(50_000)]
