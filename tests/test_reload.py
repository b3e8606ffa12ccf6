"""Hot reload through ``logcap run`` (logcap/reload.py): SIGHUP, POST /config/reload and
``watch_config``; only what changed restarts, nothing is lost, a bad config changes
nothing."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests._output import read_ndjson
from tests._waiting import wait_for
from tests.conftest import Agent, free_port

TOKEN = "reload-test-token"


def config_text(address: str, data: Path, sources: str, sinks: str, extra: str = "") -> str:
    return (
        f'api: {{address: "{address}", token: "{TOKEN}"}}\n'
        f"data_dir: {data}\n"
        "dispatcher: {batch_timeout: 20ms}\n"
        "supervisor: {shutdown_timeout: 20s}\n"
        f"sources:\n{sources}"
        f"sinks:\n{sinks}"
        f"{extra}"
    )


def file_source(name: str, pattern: Path) -> str:
    return (
        f"  {name}:\n    type: file\n    include: ['{pattern}']\n"
        "    read_from: beginning\n    glob_interval: 100ms\n"
    )


def file_sink(name: str, path: Path, extra: str = "") -> str:
    return f"  {name}:\n    type: file\n    path: '{path}'\n{extra}"


class Setup:
    """A config file, its agent, and numbered lines written into the inputs."""

    def __init__(self, tmp_path: Path, start_agent: Callable[..., Agent]) -> None:
        self.tmp = tmp_path
        self.address = f"127.0.0.1:{free_port()}"
        self.config = tmp_path / "logcap.yaml"
        self.data = tmp_path / "data"
        self.start_agent = start_agent
        self.written: dict[str, int] = {}

    def one_file_to_file(self) -> tuple[str, str, Agent]:
        """Start the agent on one file source and one file sink: (source, sink, agent)."""
        source = file_source("app", self.tmp / "in" / "*.log")
        sink = file_sink("out", self.tmp / "out.ndjson")
        self.write(source, sink)
        return source, sink, self.start()

    def write(self, sources: str, sinks: str, extra: str = "") -> None:
        self.config.write_text(config_text(self.address, self.data, sources, sinks, extra))

    def start(self) -> Agent:
        self.agent = self.start_agent(self.config, self.address, cwd=self.tmp)
        self.agent.wait_ready(60)
        return self.agent

    def lines(self, path: Path, count: int, tag: str) -> list[str]:
        """Append ``count`` numbered lines to ``path``; return them."""
        start = self.written.get(tag, 0)
        lines = [f"{tag}-{i:07d}" for i in range(start, start + count)]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as out:
            out.write("".join(line + "\n" for line in lines))
        self.written[tag] = start + count
        return lines

    def post_reload(self, token: str | None = TOKEN) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://{self.address}/config/reload", data=b"", method="POST"
        )
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def messages(path: Path) -> list[str]:
    return [entry["message"] for entry in read_ndjson(path)]


def wait_delivered(path: Path, expected: list[str], timeout: float = 60) -> None:
    wanted = set(expected)
    wait_for(lambda: wanted <= set(messages(path)), timeout, f"{len(wanted)} lines in {path}")


@pytest.fixture
def setup(tmp_path: Path, start_agent: Callable[..., Agent]) -> Setup:
    return Setup(tmp_path, start_agent)


def test_adding_a_sink_restarts_no_collector_and_no_dispatcher(setup: Setup) -> None:
    tmp = setup.tmp
    source = file_source("app", tmp / "in" / "*.log")
    setup.write(source, file_sink("a", tmp / "a.ndjson"))
    agent = setup.start()
    before = setup.lines(tmp / "in" / "app.log", 500, "x")
    wait_delivered(tmp / "a.ndjson", before)
    pids = agent.children()

    setup.write(source, file_sink("a", tmp / "a.ndjson") + file_sink("b", tmp / "b.ndjson"))
    status, body = setup.post_reload()
    assert status == 200, body
    assert body["applied"] and "sinks added: b" in body["summary"], body
    after = agent.children()
    for kept in ("collector:app", "dispatcher:dispatcher", "sink:a"):
        assert after[kept] == pids[kept], (kept, pids, after)
    assert "sink:b" in after
    assert after["retry:retry"] != pids["retry:retry"]  # it serves one ring per sink

    later = setup.lines(tmp / "in" / "app.log", 500, "x")
    wait_delivered(tmp / "a.ndjson", before + later)
    wait_delivered(tmp / "b.ndjson", later)  # an added sink starts at the current batch
    assert not set(messages(tmp / "b.ndjson")) & set(before)  # published before it came
    assert agent.metric("logcap_config_reloads_total") == 1
    assert agent.metric("logcap_config_reload_duration_seconds") > 0
    assert agent.metric("logcap_config_last_reload_successful") == 1
    assert agent.metric("logcap_events_unaccounted") == 0
    assert agent.stop() == 0


def test_removing_and_changing_sinks_drains_them_and_loses_nothing(setup: Setup) -> None:
    tmp = setup.tmp
    source = file_source("app", tmp / "in" / "*.log")
    sinks = file_sink("a", tmp / "a.ndjson") + file_sink("b", tmp / "b.ndjson")
    setup.write(source, sinks)
    agent = setup.start()
    first = setup.lines(tmp / "in" / "app.log", 2000, "x")
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="dispatcher") >= 2000,
        60,
        "the first lines published",
    )
    pids = agent.children()

    # b removed, a moved to another file: a's lines are in a.ndjson then a2.ndjson
    setup.write(source, file_sink("a", tmp / "a2.ndjson"))
    agent.process.send_signal(signal.SIGHUP)
    wait_for(lambda: agent.metric("logcap_config_reloads_total") == 1, 60, "the reload")
    after = agent.children()
    assert after["collector:app"] == pids["collector:app"]
    assert after["dispatcher:dispatcher"] == pids["dispatcher:dispatcher"]
    assert after["sink:a"] != pids["sink:a"]
    assert "sink:b" not in after
    second = setup.lines(tmp / "in" / "app.log", 2000, "x")
    everything = first + second

    def a_has_all() -> bool:
        got = messages(tmp / "a.ndjson") + messages(tmp / "a2.ndjson")
        return set(everything) <= set(got)

    wait_for(a_has_all, 60, "every line in a's two files")
    # b, removed after the first lines were published, delivered them all before it went,
    # and nothing published after
    assert set(messages(tmp / "b.ndjson")) == set(first)
    # the change took effect at one batch: nothing after it in the old file
    old, new = messages(tmp / "a.ndjson"), messages(tmp / "a2.ndjson")
    assert set(second) <= set(new) and not set(second) & set(old)
    assert agent.json("/stats")[1]["reload"]["generation"] == 1
    assert agent.stop() == 0


def test_source_changes_restart_only_that_collector_and_the_dispatcher(setup: Setup) -> None:
    tmp = setup.tmp
    app, web = file_source("app", tmp / "app" / "*.log"), file_source("web", tmp / "web" / "*.log")
    sink = file_sink("out", tmp / "out.ndjson")
    setup.write(app + web, sink)
    agent = setup.start()
    early = setup.lines(tmp / "app" / "a.log", 300, "app") + setup.lines(
        tmp / "web" / "w.log", 300, "web"
    )
    wait_delivered(tmp / "out.ndjson", early)
    pids = agent.children()

    # app reads a second directory too; web is removed; db is added
    app2 = (
        "  app:\n    type: file\n"
        f"    include: ['{tmp / 'app' / '*.log'}', '{tmp / 'app2' / '*.log'}']\n"
        "    read_from: beginning\n    glob_interval: 100ms\n"
    )
    setup.write(app2 + file_source("db", tmp / "db" / "*.log"), sink)
    status, body = setup.post_reload()
    assert status == 200 and body["applied"], body
    after = agent.children()
    assert after["sink:out"] == pids["sink:out"]
    assert after["retry:retry"] == pids["retry:retry"]
    assert after["collector:app"] != pids["collector:app"]
    assert after["dispatcher:dispatcher"] != pids["dispatcher:dispatcher"]
    assert "collector:web" not in after and "collector:db" in after

    late = (
        setup.lines(tmp / "app" / "a.log", 300, "app")
        + setup.lines(tmp / "app2" / "b.log", 300, "app2")
        + setup.lines(tmp / "db" / "d.log", 300, "db")
    )
    wait_delivered(tmp / "out.ndjson", early + late)
    sources = {e["message"]: e["source"] for e in read_ndjson(tmp / "out.ndjson")}
    assert {sources[m] for m in late if m.startswith("db")} == {"db"}
    assert {sources[m] for m in late if m.startswith("app2")} == {"app"}
    assert agent.stop() == 0


def test_a_batching_change_restarts_only_the_dispatcher(setup: Setup) -> None:
    tmp = setup.tmp
    source, sink, agent = setup.one_file_to_file()
    pids = agent.children()
    setup.write(source, sink, "")
    text = setup.config.read_text().replace(
        "dispatcher: {batch_timeout: 20ms}",
        "dispatcher: {batch_timeout: 50ms, batch_max_events: 7}",
    )
    setup.config.write_text(text)
    status, body = setup.post_reload()
    assert status == 200 and body["summary"] == "dispatcher restarted", body
    after = agent.children()
    changed = {k for k in pids if after.get(k) != pids[k]}
    assert changed == {"dispatcher:dispatcher"}
    lines = setup.lines(tmp / "in" / "app.log", 700, "x")
    wait_delivered(tmp / "out.ndjson", lines)
    # 7 entries a batch: at least 100 batches for the 700 lines
    assert agent.metric("logcap_component_batches_total", component="dispatcher") >= 100
    assert agent.stop() == 0


def test_an_invalid_or_unappliable_config_changes_nothing(setup: Setup) -> None:
    tmp = setup.tmp
    _, _, agent = setup.one_file_to_file()
    pids = agent.children()
    good = setup.config.read_text()

    setup.config.write_text(good.replace("type: file\n    path:", "type: file\n    pth:"))
    status, body = setup.post_reload()
    assert status == 422 and not body["applied"], body
    assert any("sinks.out" in p and "pth" in p for p in body["problems"]), body
    assert any(f"{setup.config}:" in p for p in body["problems"]), body  # FILE:LINE
    stats = agent.json("/stats")[1]["reload"]
    assert stats["failures"] == 1 and stats["last_error"] == body["problems"]
    assert agent.metric("logcap_config_last_reload_successful") == 0

    setup.config.write_text(good + "buffer: {batch_slots: 128}\n")
    status, body = setup.post_reload()
    assert status == 422 and any("buffer" in p for p in body["problems"]), body

    setup.config.write_text(good)
    agent.process.send_signal(signal.SIGHUP)  # a torn write is an invalid file too
    wait_for(lambda: agent.metric("logcap_config_reloads_total") == 1, 60, "a good reload")
    assert agent.metric("logcap_config_reload_failures_total") == 2
    assert agent.children() == pids  # nothing restarted, nothing stopped
    lines = setup.lines(tmp / "in" / "app.log", 200, "x")
    wait_delivered(tmp / "out.ndjson", lines)
    log = agent.log.read_text()
    assert "reload refused" in log and "the running config stays" in log
    assert agent.stop() == 0


def test_post_config_reload_needs_the_token(setup: Setup) -> None:
    tmp = setup.tmp
    setup.write(file_source("app", tmp / "in" / "*.log"), file_sink("out", tmp / "o.ndjson"))
    agent = setup.start()
    assert setup.post_reload(token=None)[0] == 401
    assert setup.post_reload(token="wrong")[0] == 401
    status, body = setup.post_reload()
    assert status == 200 and body["summary"] == "no change", body
    assert agent.metric("logcap_config_reloads_total") == 1
    assert agent.stop() == 0


def test_watch_config_applies_a_file_once_written_not_while_written(setup: Setup) -> None:
    tmp = setup.tmp
    source = file_source("app", tmp / "in" / "*.log")
    extra = "supervisor: {shutdown_timeout: 20s, watch_config: true}\n"
    setup.write(source, file_sink("a", tmp / "a.ndjson"))
    setup.config.write_text(
        setup.config.read_text().replace("supervisor: {shutdown_timeout: 20s}\n", extra)
    )
    agent = setup.start()
    text = setup.config.read_text()
    added = text + file_sink("b", tmp / "b.ndjson")
    # written in two halves with a pause longer than the settle time: the half-written
    # file (an unfinished sink) is never read; the file closed, one reload applies it
    cut = len(text) + 12
    with open(setup.config, "w") as out:
        out.write(added[:cut])
        out.flush()
        time.sleep(2.5)
        assert agent.metric("logcap_config_reload_failures_total") == 0
        assert agent.metric("logcap_config_reloads_total") == 0
        out.write(added[cut:])
    wait_for(lambda: agent.metric("logcap_config_reloads_total") >= 1, 60, "the watched reload")
    assert "sink:b" in agent.children()
    time.sleep(3)  # nothing changed since: no second reload
    assert agent.metric("logcap_config_reloads_total") == 1
    assert agent.metric("logcap_config_reload_failures_total") == 0
    lines = setup.lines(tmp / "in" / "app.log", 100, "x")
    wait_delivered(tmp / "b.ndjson", lines)
    assert agent.stop() == 0


def test_a_source_on_an_address_in_use_is_refused_not_crash_looped(setup: Setup) -> None:
    import socket

    source, sink, agent = setup.one_file_to_file()
    pids = agent.children()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        setup.write(source + f"  ingest: {{type: http, address: '127.0.0.1:{port}'}}\n", sink)
        status, body = setup.post_reload()
    assert status == 422, body
    assert any(f"127.0.0.1:{port}" in p and "sources.ingest" in p for p in body["problems"])
    assert agent.children() == pids
    assert agent.stop() == 0


def test_a_reload_that_fails_half_way_keeps_the_agent_running(setup: Setup) -> None:
    """Shared memory the reload cannot create (here: the name is taken) breaks it off;
    the agent runs on, says why, and the next reload applies."""
    import re

    source, sink, agent = setup.one_file_to_file()
    pids = agent.children()
    prefix = re.search(r"segments (logcap-\d+-[0-9a-f]+-)\*", agent.log.read_text())
    assert prefix is not None, agent.log.read_text()
    # the ring of the first source a reload adds: block 4 (app, dispatcher, out, retry)
    squatter = Path("/dev/shm") / f"{prefix.group(1)}src-b4"
    squatter.write_bytes(b"")
    try:
        setup.write(source + file_source("more", setup.tmp / "more" / "*.log"), sink)
        status, body = setup.post_reload()
    finally:
        squatter.unlink()
    assert status == 422 and "applying the reload failed" in body["problems"][0], body
    assert agent.children() == pids
    lines = setup.lines(setup.tmp / "in" / "app.log", 100, "x")
    wait_delivered(setup.tmp / "out.ndjson", lines)

    status, body = setup.post_reload()
    assert status == 200 and "sources added: more" in body["summary"], body
    more = setup.lines(setup.tmp / "more" / "m.log", 100, "m")
    wait_delivered(setup.tmp / "out.ndjson", lines + more)
    assert agent.stop() == 0


def test_widening_a_sink_s_inputs_while_lines_arrive_leaves_no_gap(setup: Setup) -> None:
    """The changed sink takes nothing past the switch under its old config: every web
    line from the first it delivered on is there (a sink that read on past the switch
    with its old inputs would have dropped a run of them)."""
    import threading

    tmp = setup.tmp
    sources = file_source("app", tmp / "app" / "*.log") + file_source("web", tmp / "web" / "*.log")
    narrow = file_sink("a", tmp / "a.ndjson", "    inputs: [app]\n")
    wide = file_sink("a", tmp / "a.ndjson", "    inputs: [app, web]\n")
    other = file_sink("all", tmp / "all.ndjson")
    setup.write(sources, narrow + other)
    agent = setup.start()
    stop = threading.Event()
    written: list[str] = []

    def write() -> None:
        while not stop.is_set():
            written.extend(setup.lines(tmp / "web" / "w.log", 50, "web"))
            setup.lines(tmp / "app" / "a.log", 50, "app")
            time.sleep(0.005)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(1.0)
        setup.write(sources, wide + other)
        status, body = setup.post_reload()
        assert status == 200 and "sinks changed: a" in body["summary"], body
        time.sleep(1.0)
    finally:
        stop.set()
        writer.join()
    wait_delivered(tmp / "all.ndjson", written)
    wait_for(lambda: written[-1] in set(messages(tmp / "a.ndjson")), 60, "the last web line in a")
    got = {m for m in messages(tmp / "a.ndjson") if m.startswith("web")}
    first = min(written.index(m) for m in got)
    missing = [m for m in written[first:] if m not in got]
    assert not missing, f"{len(missing)} web lines after the switch missing, e.g. {missing[:3]}"
    assert agent.stop() == 0
