"""``logcap top``: the screen rendered from two canned scrapes (rates, circuit states,
roles with and without a ``role`` label, an 80x24 fit), and the real command in a real
terminal (tmux) against a running agent: it shows live rates, quits on ``q`` with exit
code 0, and says "agent unreachable" while the agent is down without ever exiting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from logcap.cli import main
from logcap.cli_top import Frame, render
from logcap.top import Scrape, Unreachable, fetch
from tests.conftest import Agent, free_port, wait_for, write_config

LABELS = {
    "app": 'component="app",kind="file"',
    "dispatcher": 'component="dispatcher",kind="dispatcher"',
    "archive": 'component="archive",kind="file"',
    "loki": 'component="loki",kind="loki"',
    "kafka": 'component="kafka",kind="kafka"',
    "retry": 'component="retry",kind="retry"',
}


def _exposition(received: float, sent: float, errors: float, cpu: float) -> str:
    """A scrape of an agent with one source, three sinks (closed, open, half-open)."""
    lines = []
    for name, labels in LABELS.items():
        lines += [
            f"logcap_component_received_events_total{{{labels}}} {received}",
            f"logcap_component_sent_events_total{{{labels}}} {sent}",
            f"logcap_component_errors_total{{{labels}}} {errors if name == 'loki' else 0}",
            f"logcap_child_up{{{labels}}} 1",
            f"logcap_child_restarts_total{{{labels}}} {2 if name == 'kafka' else 0}",
            f"logcap_process_cpu_seconds_total{{{labels}}} {cpu}",
            f"logcap_process_resident_memory_bytes{{{labels}}} 29110272",
        ]
    lines += [
        'logcap_process_cpu_seconds_total{component="supervisor",kind="supervisor"} 1',
        'logcap_source_files_watched{component="app",kind="file"} 1',
        'logcap_sink_circuit_state{component="archive"} 0',
        'logcap_sink_circuit_state{component="loki"} 1',
        'logcap_sink_circuit_state{component="kafka"} 2',
        'logcap_ring_used_slots{ring="app"} 4',
        'logcap_ring_capacity_slots{ring="app"} 16',
        "logcap_checkpoint_lag_bytes 2048",
        "logcap_checkpoint_lag_seconds 1.5",
        "logcap_retry_heap_entries 7",
        "logcap_retry_spool_batches 3",
        "logcap_dlq_size_bytes 1048576",
    ]
    return "\n".join(lines) + "\n"


BEFORE = Scrape.parse(_exposition(received=100, sent=100, errors=1, cpu=1.0), at=100.0)
AFTER = Scrape.parse(_exposition(received=300, sent=250, errors=5, cpu=1.5), at=102.0)


def _frame(previous: Scrape | None, current: Scrape | None, error: str | None = None) -> Frame:
    return Frame("127.0.0.1:9598", 1.0, previous, current, error, wall=0.0, now=105.0)


def _row(lines: list[str], first: str, name: str) -> list[str]:
    """The whitespace-separated cells of the row starting with ``first`` for ``name``."""
    for line in lines:
        cells = line.split()
        if len(cells) > 1 and cells[0] == first and cells[1] == name:
            return cells
    raise AssertionError(f"no {first} row for {name} in:\n" + "\n".join(lines))


def test_rates_are_the_increase_between_two_scrapes_per_second() -> None:
    lines = render(_frame(BEFORE, AFTER))
    # role, name, kind, in/s, out/s, errors, errors/s, circuit
    assert _row(lines, "source", "app")[3:7] == ["100", "75", "0", "0"]
    assert _row(lines, "sink", "loki")[3:7] == ["100", "75", "5", "2.0"]
    # CPU % is the rate of the CPU seconds counter: 0.5 s in 2 s
    assert _row(lines, "kafka", "sink")[2:5] == ["25.0", "27.8M", "2"]


def test_one_scrape_shows_totals_and_no_rates_yet() -> None:
    cells = _row(render(_frame(None, AFTER)), "sink", "loki")
    assert cells[3:7] == ["-", "-", "5", "-"]


def test_a_counter_that_went_down_restarted_and_counts_from_zero() -> None:
    restarted = Scrape.parse(_exposition(received=40, sent=40, errors=0, cpu=0.1), at=104.0)
    assert _row(render(_frame(AFTER, restarted)), "source", "app")[3:5] == ["20", "20"]


def test_sinks_show_their_circuit_by_name() -> None:
    lines = render(_frame(BEFORE, AFTER))
    assert _row(lines, "sink", "archive")[-1] == "closed"
    assert _row(lines, "sink", "loki")[-1] == "open"
    assert _row(lines, "sink", "kafka")[-1] == "half-open"
    assert _row(lines, "source", "app")[-1] == "0"  # no circuit column for a source


def test_roles_are_derived_without_a_role_label_and_rows_follow_the_pipeline() -> None:
    rows = [line.split()[0] for line in render(_frame(BEFORE, AFTER))[2:8]]
    assert rows == ["source", "dispatcher", "sink", "sink", "sink", "retry"]


def test_a_role_label_wins_over_the_derived_role() -> None:
    text = 'logcap_child_up{component="tap",kind="file",role="sink"} 1\n'
    assert [(c.name, c.role) for c in Scrape.parse(text, at=0).components()] == [("tap", "sink")]


def test_queues_rings_and_supervisor_are_shown() -> None:
    text = "\n".join(render(_frame(BEFORE, AFTER)))
    assert "rings  app 4/16 25%" in text
    assert "checkpoint lag 2.0K 1.5s" in text
    assert "retry heap 7 entries" in text and "spool 3 batches" in text
    assert "dlq 1.0M" in text
    # the supervisor has a process (CPU, memory) but no restarts or up state of its own
    assert _row(text.splitlines(), "supervisor", "supervisor")[2:] == ["0.0", "-", "-", "-"]


def test_the_screen_fits_80_by_24_and_says_what_it_hides() -> None:
    many = "".join(
        f'logcap_child_up{{component="sink-with-a-very-long-name-{i}",kind="http"}} 1\n'
        f'logcap_sink_circuit_state{{component="sink-with-a-very-long-name-{i}"}} 0\n'
        f'logcap_ring_used_slots{{ring="sink-with-a-very-long-name-{i}:fail"}} 1\n'
        for i in range(30)
    )
    lines = render(_frame(None, Scrape.parse(many, at=0)), width=80, height=24)
    assert len(lines) == 24
    assert all(len(line) <= 80 for line in lines)
    assert lines[-1].startswith("...") and "more lines" in lines[-1]
    assert _row(lines, "sink", "sink-with-a-v~")  # names are cut, marked with ~


def test_an_unreachable_agent_is_said_with_its_reason() -> None:
    lines = render(_frame(None, None, error="Connection refused"))
    assert lines[1].startswith("agent unreachable: Connection refused")
    stale = render(_frame(BEFORE, AFTER, error="timed out"))
    assert "last answer 3s ago" in stale[1]
    assert _row(stale, "sink", "loki")  # the last answer stays on screen


def test_fetch_of_a_closed_port_raises_unreachable_with_the_reason() -> None:
    with pytest.raises(Unreachable, match="refused"):
        fetch(f"http://127.0.0.1:{free_port()}", timeout=5)


def test_once_prints_a_plain_screen_and_exit_1_when_unreachable() -> None:
    result = CliRunner().invoke(
        main, ["top", "--api", f"127.0.0.1:{free_port()}", "--interval", "0.1", "--once"]
    )
    assert result.exit_code == 1
    assert "agent unreachable" in result.output


# --- the real command in a real terminal -------------------------------------------------

AGENT = """
data_dir: ./data
sources:
  applog: {type: file, include: ["./logs/*.log"]}
sinks:
  archive: {type: file, path: "./out/all.ndjson"}
dispatcher: {batch_timeout: 50ms, checkpoint_interval: 200ms}
"""
TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(TMUX is None, reason="needs tmux")


@pytest.fixture
def appending(tmp_path: Path) -> Iterator[None]:
    """A thread appending lines to the source's file until the test ends."""
    (tmp_path / "logs").mkdir()
    stop = threading.Event()

    def append() -> None:
        with open(tmp_path / "logs" / "app.log", "ab", buffering=0) as out:
            n = 0
            while not stop.wait(0.01):
                out.write(b"".join(b"line %08d\n" % (n + i) for i in range(20)))
                n += 20

    thread = threading.Thread(target=append, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)


class Terminal:
    """``logcap top`` in a detached 100x30 tmux session on a private tmux server."""

    def __init__(self, tmp_path: Path, address: str) -> None:
        self.server = f"logcap-top-{uuid.uuid4().hex[:12]}"
        self.rc_file = tmp_path / "top.rc"
        top = f"{Path(sys.executable).with_name('logcap')} top --api http://{address}"
        command = f"{top} --interval 0.5; echo $? > {self.rc_file}"
        self._tmux("new-session", "-d", "-s", self.server, "-x", "100", "-y", "30", command)

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TMUX or "tmux", "-L", self.server, *args], capture_output=True, text=True, timeout=30
        )

    def screen(self) -> list[str]:
        return self._tmux("capture-pane", "-p", "-t", self.server).stdout.splitlines()

    def running(self) -> bool:
        return self._tmux("has-session", "-t", self.server).returncode == 0

    def wait_for_screen(self, condition: Callable[[list[str]], bool], what: str) -> list[str]:
        seen: list[str] = []

        def shown() -> bool:
            seen[:] = self.screen()
            return condition(seen)

        try:
            wait_for(shown, 30, what)
        except BaseException:
            print("\n".join(seen))  # the last screen, for the failure report
            raise
        return seen

    def close(self) -> None:
        self._tmux("kill-server")
        # tmux leaves its socket behind; a private server's socket is ours to remove
        tmpdir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (tmpdir / self.server).unlink(missing_ok=True)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[[str], Terminal]]:
    terminals: list[Terminal] = []

    def open_terminal(address: str) -> Terminal:
        terminals.append(Terminal(tmp_path, address))
        return terminals[-1]

    yield open_terminal
    for t in terminals:
        t.close()


def _flowing(lines: list[str]) -> bool:
    """Both the source and the sink row show events per second above zero."""
    try:
        source, sink = _row(lines, "source", "applog"), _row(lines, "sink", "archive")
    except AssertionError:
        return False
    return source[4] not in ("0", "-") and sink[3] not in ("0", "-") and sink[-1] == "closed"


def _start(start_agent: Callable[..., Agent], tmp_path: Path, address: str) -> Agent:
    agent = start_agent(write_config(tmp_path, AGENT, address), address)
    agent.wait_ready()
    return agent


@needs_tmux
def test_top_shows_live_rates_in_a_terminal_and_quits_on_q(
    start_agent: Callable[..., Agent], tmp_path: Path, appending: None, terminal: Callable
) -> None:
    address = f"127.0.0.1:{free_port()}"
    _start(start_agent, tmp_path, address)
    top = terminal(address)
    lines = top.wait_for_screen(_flowing, "top to show events flowing from applog to archive")
    assert lines[0].startswith(f"logcap top  {address}  up ")
    assert any(line.startswith("rings  applog ") for line in lines)
    assert _row(lines, "applog", "source")[-1] == "up"
    top._tmux("send-keys", "-t", top.server, "q")
    wait_for(lambda: not top.running(), 10, "top to exit on q")
    assert top.rc_file.read_text().strip() == "0"


@needs_tmux
def test_top_says_unreachable_while_the_agent_is_down_and_recovers(
    start_agent: Callable[..., Agent], tmp_path: Path, appending: None, terminal: Callable
) -> None:
    address = f"127.0.0.1:{free_port()}"
    agent = _start(start_agent, tmp_path, address)
    top = terminal(address)
    top.wait_for_screen(_flowing, "top to show events flowing")
    assert agent.stop() == 0
    lines = top.wait_for_screen(
        lambda s: len(s) > 1 and s[1].startswith("agent unreachable: "), "the unreachable line"
    )
    assert "retrying every 0.5s" in lines[1]
    time.sleep(2)  # several failed scrapes later top still runs and still says so
    assert top.running() and top.screen()[1].startswith("agent unreachable: ")
    _start(start_agent, tmp_path, address)  # the same address: top finds it again
    top.wait_for_screen(
        lambda s: not any(line.startswith("agent unreachable") for line in s) and _flowing(s),
        "top to show the restarted agent",
    )
    top._tmux("send-keys", "-t", top.server, "C-c")
    wait_for(lambda: not top.running(), 10, "top to exit on Ctrl-C")
    assert top.rc_file.read_text().strip() == "0"
