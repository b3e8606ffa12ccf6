"""Routing: a sink's ``inputs`` (issue 11). Every sink type reads the same batch narrowed
to its sources (sinks/routing.py) on every path: first delivery, batches shed while its
circuit is open, redeliveries from the retry process and ``logcap dlq replay``. A batch
with nothing for a sink is acknowledged at once, so checkpoints still advance."""

from __future__ import annotations

import collections
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from logcap.cli import main
from logcap.config import parse_config
from logcap.dispatch.batch import Batch
from logcap.dispatch.checkpoint import CheckpointStore
from logcap.dlq.record import DlqRecord
from logcap.dlq.writer import DlqWriter, dlq_directory
from logcap.errors import DeliveryError, Retryable
from logcap.metrics import Counter, NullBlock
from logcap.ringbuf import Consumer, Producer, SleepWait
from logcap.sinks.base import SinkRunner
from logcap.sinks.file.sink import FileSink
from logcap.sinks.http.sink import requests
from logcap.sinks.routing import RoutedBatch, narrow, nothing_for_sink, slot_bytes
from tests._component_helpers import (
    RingFactory,
    batch_view,
    build_batch,
    publish_batch,
    ring_fixture,
)
from tests.conftest import Agent, free_port, wait_for, write_config
from tests.test_sink_contract import (  # noqa: F401 (fixtures)
    ALL,
    Destination,
    destination,
    start_server,
)

TS = 1_704_067_200_000_000_000


def _mixed() -> bytes:
    """A batch of groups app, web, app, db (non-adjacent groups of one source)."""
    slot, _ = build_batch(
        [
            ("app", TS, ["a1", "a2"]),
            ("web", TS, ["w1"]),
            ("app", TS + 1, ["a3"]),
            ("db", TS, ["d1", "d2"]),
        ]
    )
    return slot


def _messages(data: bytes) -> list[str]:
    return [json.loads(line)["message"] for line in data.splitlines()]


def _file_messages(path: Path) -> list[str]:
    if not path.exists():
        return []
    with open(path, "rb") as out:
        return _messages(b"".join(line for line in out if line.endswith(b"\n")))


Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Server:
    """An HTTP server on 127.0.0.1 keeping the entry lines of requests answered 2xx."""

    url: str = ""
    answer: Callable[[bytes], Answer] = lambda body: (200, {}, b"")
    accepted: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def messages(self) -> list[str]:
        with self.lock:
            return _messages(b"".join(self.accepted))


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status, headers, text = state.answer(body)
            if 200 <= status < 300:
                with state.lock:
                    state.accepted.append(body)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/ingest"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


# -- the view ---------------------------------------------------------------------------


def test_narrow_keeps_only_the_groups_of_its_inputs_as_views_of_the_same_payload() -> None:
    batch = batch_view(_mixed())
    routed = narrow(batch, frozenset({"app", "db"}))
    assert isinstance(routed, RoutedBatch) and routed.payload is batch.payload
    assert [g.source for g in routed.meta.groups] == ["app", "app", "db"]
    assert routed.meta.count == 5
    # the second app group and db are adjacent in the payload: one chunk
    assert len(routed.chunks()) == 2
    assert _messages(b"".join(routed.chunks())) == ["a1", "a2", "a3", "d1", "d2"]
    assert routed.nbytes == sum(len(c) for c in routed.chunks())
    assert [_messages(bytes(d)) for _, d in routed.groups()] == [["a1", "a2"], ["a3"], ["d1", "d2"]]
    assert narrow(batch, None) is batch
    assert narrow(batch, frozenset({"app", "web", "db"})) is batch  # all kept: no view
    nothing = narrow(batch, frozenset({"other"}))
    assert nothing_for_sink(nothing) and nothing.meta.count == 0
    assert not nothing_for_sink(batch)


@pytest.mark.parametrize("label_bytes", [10, 20_000])  # HTTP ingest labels reach 16 KiB
def test_a_narrowed_batch_handed_off_holds_only_its_own_entries(label_bytes: int) -> None:
    labels = {"host": "h", "big": "v" * label_bytes}
    slot, _ = build_batch(
        [("app", TS, ["a1"]), ("web", TS, ["w1"]), ("app", TS, ["a2"]), ("db", TS, ["d1", "d2"])],
        labels,
    )
    routed = narrow(batch_view(slot), frozenset({"web", "db"}))
    handed = slot_bytes(routed)
    again = Batch.from_slot(memoryview(bytearray(handed)))
    assert [g.source for g in again.meta.groups] == ["web", "db"]
    assert again.meta.count == 3
    assert _messages(bytes(again.payload)) == ["w1", "d1", "d2"]
    assert again.meta.progress == routed.meta.progress
    assert len(handed) < len(slot)  # app's entries are not copied along


def test_file_sink_writes_only_the_kept_groups_in_order(tmp_path: Path) -> None:
    config = parse_config(
        "sources: {app: {type: file, include: [x]}}\n"
        f"sinks: {{out: {{type: file, path: '{tmp_path}/out.ndjson'}}}}\n"
    ).sinks["out"]
    sink = config.build(NullBlock())
    assert isinstance(sink, FileSink)
    sink.write(narrow(batch_view(_mixed()), frozenset({"app"})))
    assert sink.flush() == []
    sink.close()
    assert _file_messages(tmp_path / "out.ndjson") == ["a1", "a2", "a3"]


@pytest.mark.parametrize("limit", [1, 40, 200, 10_000])
def test_http_requests_of_a_narrowed_batch_cover_its_entries_within_the_limit(limit: int) -> None:
    routed = narrow(batch_view(_mixed()), frozenset({"app", "db"}))
    bodies = [b"".join(pieces) for pieces in requests(routed.chunks(), limit)]
    assert _messages(b"".join(bodies)) == ["a1", "a2", "a3", "d1", "d2"]
    for body in bodies:
        assert body.endswith(b"\n")
        assert len(body) <= limit or body.count(b"\n") == 1  # only a lone entry is over
    if limit == 10_000:
        assert len(bodies) == 1  # non-adjacent pieces share one request


# -- logcap run -------------------------------------------------------------------------

ROUTED = """
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/app/*.log"]}}
  web: {{type: file, include: ["./logs/web/*.log"]}}
sinks:
{sinks}
dispatcher: {{batch_max_events: 500, batch_timeout: 100ms, checkpoint_interval: 100ms}}
retry: {{initial_backoff: 50ms, max_backoff: 200ms}}
"""


def _routed_config(tmp_path: Path, sinks: str, address: str) -> Path:
    for source, name in (("app", "a.log"), ("web", "w.log")):
        (tmp_path / "logs" / source).mkdir(parents=True, exist_ok=True)
        # watched from the start, so paced writes are read as many small blocks
        (tmp_path / "logs" / source / name).touch()
    return write_config(tmp_path, ROUTED.format(sinks=sinks), address)


def _start(start_agent: Callable[..., Agent], config: Path, address: str) -> Agent:
    """The agent, ready and tailing both (empty) files: what is written next is read as
    it is written."""
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(
        lambda: all(
            agent.metric("logcap_source_files_watched", component=source) == 1
            for source in ("app", "web")
        ),
        30,
        "both sources to watch their file",
    )
    return agent


def _write_interleaved(tmp_path: Path, count: int, tag: str = "") -> tuple[list[str], list[str]]:
    """``count`` lines to each source, written in small alternating rounds a little
    apart (pacing, not synchronisation), so the collectors read many small blocks and
    batches hold groups of both sources one after the other: a narrowed batch has gaps."""
    app = [f"app{tag} {n:05d}" for n in range(count)]
    web = [f"web{tag} {n:05d}" for n in range(count)]
    with (
        open(tmp_path / "logs" / "app" / "a.log", "a") as a,
        open(tmp_path / "logs" / "web" / "w.log", "a") as w,
    ):
        for start in range(0, count, 10):
            a.write("".join(f"{m}\n" for m in app[start : start + 10]))
            w.write("".join(f"{m}\n" for m in web[start : start + 10]))
            a.flush()
            w.flush()
            time.sleep(0.002)
    return app, web


def test_each_sink_gets_exactly_the_entries_of_its_inputs(
    tmp_path: Path, server: Server, start_agent: Callable[..., Agent]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    sinks = f"""
  only_app: {{type: file, path: "./out/app.ndjson", inputs: [app]}}
  only_web: {{type: http, url: "{server.url}", inputs: [web]}}
  both: {{type: file, path: "./out/both.ndjson", inputs: [web, app]}}
  every: {{type: file, path: "./out/every.ndjson"}}
"""
    agent = _start(start_agent, _routed_config(tmp_path, sinks, address), address)
    app, web = _write_interleaved(tmp_path, 3000)
    out = tmp_path / "out"
    wait_for(lambda: len(_file_messages(out / "every.ndjson")) >= 6000, 60, "every entry")
    wait_for(lambda: len(server.messages()) >= 3000, 60, "web's entries at the server")
    wait_for(lambda: len(_file_messages(out / "app.ndjson")) >= 3000, 60, "app's entries")
    metric = agent.metric
    sent = {
        n: metric("logcap_component_sent_events_total", component=n)
        for n in ("only_app", "only_web", "every")
    }
    assert agent.stop() == 0
    assert _file_messages(out / "app.ndjson") == app  # each once, in order, nothing else
    assert server.messages() == web
    both = _file_messages(out / "both.ndjson")
    assert sorted(both) == sorted(app + web)
    assert sorted(_file_messages(out / "every.ndjson")) == sorted(app + web)
    # per-sink metrics count what each sink sent, not the batches it read
    assert sent == {"only_app": 3000, "only_web": 3000, "every": 6000}


def test_a_sink_whose_inputs_match_nothing_lets_checkpoints_advance(
    tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    sinks = """
  out: {type: file, path: "./out/app.ndjson", inputs: [app]}
  quiet: {type: file, path: "./out/web.ndjson", inputs: [web]}
"""
    config = _routed_config(tmp_path, sinks, address)
    agent = start_agent(config, address)
    agent.wait_ready()
    app = [f"app {n:05d}" for n in range(5000)]
    log = tmp_path / "logs" / "app" / "a.log"
    with open(log, "a") as a:
        for start in range(0, len(app), 100):  # a long run of batches, none with web
            a.write("".join(f"{m}\n" for m in app[start : start + 100]))
            a.flush()
    store = CheckpointStore(str(tmp_path / "data"))
    size = log.stat().st_size

    def committed() -> int:
        return max((p.offset for p in store.load().files if p.source == "app"), default=0)

    wait_for(lambda: committed() == size, 60, "app's end checkpointed while quiet gets nothing")
    assert agent.metric("logcap_component_sent_events_total", component="quiet") == 0
    agent.kill()  # no drain: only the checkpoint counts
    assert _file_messages(tmp_path / "out" / "app.ndjson") == app
    again = start_agent(config, address)
    again.wait_ready()
    more = [f"after {n:03d}" for n in range(100)]
    with open(log, "a") as a:
        a.write("".join(f"{m}\n" for m in more))
    wait_for(
        lambda: len(_file_messages(tmp_path / "out" / "app.ndjson")) >= len(app) + len(more),
        60,
        "the lines written after the restart",
    )
    assert again.stop() == 0
    # nothing re-delivered, nothing lost
    assert _file_messages(tmp_path / "out" / "app.ndjson") == app + more
    assert not (tmp_path / "out" / "web.ndjson").exists()


def test_a_sink_down_then_back_gets_only_its_inputs_after_retries(
    tmp_path: Path, server: Server, start_agent: Callable[..., Agent]
) -> None:
    up = threading.Event()
    refused = [0]

    def outage(body: bytes) -> Answer:
        if not up.is_set():
            refused[0] += 1
            return 503, {"Retry-After": "0"}, b"down"
        return 200, {}, b""

    server.answer = outage
    address = f"127.0.0.1:{free_port()}"
    sinks = f"""
  only_app: {{type: file, path: "./out/app.ndjson", inputs: [app]}}
  only_web:
    type: http
    url: "{server.url}"
    inputs: [web]
    circuit_breaker: {{failure_threshold: 3, open_duration: 200ms}}
"""
    agent = _start(start_agent, _routed_config(tmp_path, sinks, address), address)
    app, web = _write_interleaved(tmp_path, 2000)
    wait_for(lambda: len(_file_messages(tmp_path / "out" / "app.ndjson")) >= 2000, 60, "app")
    metric = agent.metric
    wait_for(lambda: metric("logcap_retry_spool_batches") > 0, 60, "web's batches in the spool")
    wait_for(lambda: metric("logcap_sink_circuit_state", component="only_web") == 1, 60, "open")
    up.set()
    wait_for(lambda: len(set(server.messages())) >= 2000, 60, "web's entries after retries")
    wait_for(lambda: metric("logcap_retry_spool_batches") == 0, 60, "an empty spool")
    assert metric("logcap_component_sent_events_total", component="only_web") == len(
        server.messages()
    )
    assert agent.stop() == 0
    assert refused[0] > 0
    assert sorted(server.messages()) == web  # nothing of app, each web entry once
    assert _file_messages(tmp_path / "out" / "app.ndjson") == app


def test_batches_spooled_before_the_sink_had_inputs_are_redelivered_narrowed(
    tmp_path: Path, server: Server, start_agent: Callable[..., Agent]
) -> None:
    # an operator routes a sink that is down: what it already had to retry waits in the
    # spool with every source's entries, and is redelivered after the restart narrowed
    up = threading.Event()
    server.answer = lambda body: (200, {}, b"") if up.is_set() else (503, {}, b"down")
    address = f"127.0.0.1:{free_port()}"
    web_sink = f'{{type: http, url: "{server.url}"{{inputs}}}}'
    sinks = f"""
  witness: {{type: file, path: "./out/every.ndjson"}}
  target: {web_sink.replace("{inputs}", "")}
"""
    config = _routed_config(tmp_path, sinks, address)
    agent = _start(start_agent, config, address)
    app, web = _write_interleaved(tmp_path, 1000)
    wait_for(lambda: len(_file_messages(tmp_path / "out" / "every.ndjson")) >= 2000, 60, "all")
    wait_for(lambda: agent.metric("logcap_retry_spool_batches") > 0, 60, "spooled batches")
    assert agent.stop() == 0  # the spool is kept for the next start
    assert server.messages() == []
    routed = web_sink.replace("{inputs}", ", inputs: [web]")
    config.write_text(config.read_text().replace(web_sink.replace("{inputs}", ""), routed))
    up.set()
    again = start_agent(config, address)
    again.wait_ready()
    wait_for(lambda: again.metric("logcap_retry_spool_batches") == 0, 60, "the spool redelivered")
    wait_for(lambda: len(set(server.messages())) >= 1000, 60, "web's entries")
    assert again.stop() == 0
    assert sorted(server.messages()) == web  # no app entry, though the spool held them
    assert sorted(_file_messages(tmp_path / "out" / "every.ndjson")) == sorted(app + web)


def test_a_dead_lettered_batch_of_a_routed_sink_holds_only_its_inputs(
    tmp_path: Path, server: Server, start_agent: Callable[..., Agent]
) -> None:
    server.answer = lambda body: (400, {}, b"no")
    address = f"127.0.0.1:{free_port()}"
    sinks = f"""
  only_app: {{type: file, path: "./out/app.ndjson", inputs: [app]}}
  only_web: {{type: http, url: "{server.url}", inputs: [web]}}
  every: {{type: http, url: "{server.url}"}}
"""
    agent = _start(start_agent, _routed_config(tmp_path, sinks, address), address)
    app, web = _write_interleaved(tmp_path, 500)
    wait_for(lambda: len(_file_messages(tmp_path / "out" / "app.ndjson")) >= 500, 60, "app")
    wait_for(
        lambda: (
            _count(_dead_lettered(tmp_path, "only_web")) >= 500
            and _count(_dead_lettered(tmp_path, "every")) >= 1000
        ),
        60,
        "the refused entries in the DLQ",
    )
    assert agent.stop() == 0
    # the batches mixed both sources (else this test would prove nothing) ...
    mixed = [m for m in _dead_lettered(tmp_path, "every") if len({s for s, _ in m}) == 2]
    assert mixed, "no batch held entries of both sources"
    # ... and only_web's records hold its own entries, each record counting them
    records = _dead_lettered(tmp_path, "only_web")
    assert sorted(message for record in records for _, message in record) == web
    shown = CliRunner().invoke(main, ["dlq", "show", "--config", str(tmp_path / "logcap.yaml")])
    assert shown.exit_code == 0, shown.output
    shown_web = [json.loads(line) for line in shown.stdout.splitlines()]
    assert (
        sorted(e["message"] for r in shown_web if r["sink"] == "only_web" for e in r["entries"])
        == web
    )
    assert sorted(
        e["message"] for r in shown_web if r["sink"] == "every" for e in r["entries"]
    ) == sorted(app + web)


def _count(records: list[list[tuple[str, str]]]) -> int:
    return sum(map(len, records))


def _dead_lettered(tmp_path: Path, sink: str) -> list[list[tuple[str, str]]]:
    """Per DLQ record of ``sink``: its entries' (source, message); each record's entry
    count is checked against its batch."""
    from logcap.dlq import reader

    records = []
    directory = tmp_path / "data" / "dlq"
    for found in reader.scan(directory) if directory.exists() else []:
        if found.record.sink != sink:
            continue
        batch = Batch.from_slot(memoryview(found.record.batch))
        assert found.record.entries == batch.meta.count
        records.append(
            [
                (e["source"], e["message"])
                for e in map(json.loads, bytes(batch.payload).splitlines())
            ]
        )
    return records


def test_dlq_replay_delivers_only_the_entries_of_the_sink_s_inputs(tmp_path: Path) -> None:
    # a record dead-lettered before the sink had inputs: it holds every source's entries
    config = write_config(
        tmp_path,
        """
data_dir: ./data
sources:
  app: {type: file, include: [x]}
  web: {type: file, include: [y]}
  db: {type: file, include: [z]}
sinks:
  out: {type: file, path: ./out/out.ndjson, inputs: [app, db]}
  web_only: {type: file, path: ./out/web.ndjson, inputs: [web]}
""",
        "127.0.0.1:1",
    )
    parsed = parse_config(config.read_text(), base_dir=config.parent)
    slot = _mixed()
    writer = DlqWriter(dlq_directory(parsed.data_dir), parsed.dlq)
    for seq, sink in ((1, "out"), (2, "web_only"), (3, "web_only")):
        writer.append(
            DlqRecord(
                sink=sink,
                kind="permanent",
                reason="refused",
                attempts=1,
                first_failure_ns=1,
                written_ns=2,
                batch_seq=seq,
                entries=6,
                batch=slot if seq < 3 else build_batch([("app", TS, ["only app"])])[0],
            )
        )
    writer.close()
    result = CliRunner().invoke(main, ["dlq", "replay", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "replayed 3 records" in result.stdout
    assert _file_messages(tmp_path / "out" / "out.ndjson") == ["a1", "a2", "a3", "d1", "d2"]
    # record 3 had nothing for web_only: marked replayed, nothing written
    assert _file_messages(tmp_path / "out" / "web.ndjson") == ["w1"]
    again = CliRunner().invoke(main, ["dlq", "replay", "--config", str(config)])
    assert again.exit_code == 0 and "nothing to replay" in again.stdout


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "problem", "line"),
    [
        (
            "[app, wbe]",
            "sinks.out.inputs[1]: 'wbe' is not a configured source (sources: app, web)",
            9,
        ),
        ("[]", "sinks.out.inputs: an empty list routes nothing", 9),
    ],
)
def test_validate_reports_inputs_that_route_to_no_source(
    tmp_path: Path, inputs: str, problem: str, line: int
) -> None:
    config = tmp_path / "logcap.yaml"
    config.write_text(
        f"""data_dir: ./data
sources:
  app: {{type: file, include: [x]}}
  web: {{type: file, include: [y]}}
sinks:
  out:
    type: file
    path: ./out.ndjson
    inputs: {inputs}
"""
    )
    result = CliRunner().invoke(main, ["validate", "--config", str(config)])
    assert result.exit_code == 78
    assert f"{config}:{line}: {problem}" in result.output


# -- every sink type --------------------------------------------------------------------


@pytest.mark.parametrize("destination", ALL, indirect=True)
def test_every_network_and_file_sink_type_gets_only_its_inputs(
    tmp_path: Path,
    start_agent: Callable[..., Agent],
    destination: Destination,  # noqa: F811 (the fixture imported above)
) -> None:
    address = f"127.0.0.1:{free_port()}"
    routed = destination.sink_yaml.replace("{", "{inputs: [web], ", 1)
    sinks = f"""
  target: {routed}
  witness: {{type: file, path: "./out/witness.ndjson", inputs: [app]}}
"""
    agent = _start(start_agent, _routed_config(tmp_path, sinks, address), address)
    app, web = _write_interleaved(tmp_path, 1000)
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="target") >= 1000,
        60,
        "web's entries at the target",
    )
    wait_for(lambda: len(_file_messages(tmp_path / "out" / "witness.ndjson")) >= 1000, 60, "app")
    assert agent.metric("logcap_component_sent_events_total", component="target") == 1000
    assert agent.stop() == 0
    assert sorted(destination.received()) == web
    assert _file_messages(tmp_path / "out" / "witness.ndjson") == app


@pytest.mark.parametrize("kind", ["console", "blackhole"])
def test_console_and_blackhole_sinks_get_only_their_inputs(
    tmp_path: Path, start_agent: Callable[..., Agent], kind: str
) -> None:
    address = f"127.0.0.1:{free_port()}"
    sinks = f"""
  target: {{type: {kind}, inputs: [web]}}
  witness: {{type: file, path: "./out/witness.ndjson", inputs: [app]}}
"""
    agent = _start(start_agent, _routed_config(tmp_path, sinks, address), address)
    app, web = _write_interleaved(tmp_path, 1000)
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="target") >= 1000,
        60,
        "web's entries at the target",
    )
    wait_for(lambda: len(_file_messages(tmp_path / "out" / "witness.ndjson")) >= 1000, 60, "app")
    assert agent.metric("logcap_component_sent_events_total", component="target") == 1000
    assert agent.stop() == 0
    assert _file_messages(tmp_path / "out" / "witness.ndjson") == app
    if kind == "console":  # the agent's stdout is its log file
        printed = [
            json.loads(line)["message"]
            for line in agent.log.read_bytes().splitlines()
            if line.startswith(b'{"timestamp"')
        ]
        assert printed == web


# -- the runner without a retry process (tools, tests): delivery held in place ----------


@pytest.fixture
def rings() -> Iterator[RingFactory]:
    yield from ring_fixture()


class _Counting:
    """Counter words of one component, in process."""

    def __init__(self) -> None:
        self.values: collections.Counter[Counter] = collections.Counter()

    def add(self, counter: Counter, amount: int = 1) -> None:
        self.values[counter] += amount

    def set(self, counter: Counter, value: int) -> None:
        self.values[counter] = value

    def get(self, counter: Counter) -> int:
        return self.values[counter]


class _FailsFirstFlush:
    """Records what each write received; its first flush fails the first write."""

    def __init__(self) -> None:
        self.received: list[list[str]] = []
        self.flushes = 0
        self.writes = 0

    def write(self, batch: Batch) -> None:
        self.writes += 1
        self.received.append(_messages(b"".join(batch.chunks())))

    def flush(self) -> list[tuple[int, DeliveryError]]:
        self.flushes += 1
        failed = [(0, Retryable("once", "other"))] if self.flushes == 1 else []
        self.writes = 0
        return failed

    def close(self) -> None:
        pass


def test_in_place_delivery_skips_batches_with_nothing_for_the_sink_and_retries_the_rest(
    rings: RingFactory,
) -> None:
    slots = [
        build_batch([("web", TS, ["w0"])])[0],  # nothing for the sink
        _mixed(),
        build_batch([("web", TS, ["w1"])])[0],
        build_batch([("app", TS, ["a4"])])[0],
    ]
    ring = rings.create(8, 64 * 1024, 1, "batches")
    producer = Producer(ring, wait=SleepWait())
    for slot in slots:
        publish_batch(producer, slot)
    sink = _FailsFirstFlush()
    counters = _Counting()
    runner = SinkRunner(
        "out",
        sink,
        Consumer(ring, 0),
        counters,
        sleep=lambda _: None,
        inputs=frozenset({"app", "db"}),
    )
    assert runner.step(timeout=0)
    # the mixed batch failed its flush (write 0 of the round, though batch 1 in the ring)
    # and was written again; the web-only batches were never written
    assert sink.received == [["a1", "a2", "a3", "d1", "d2"], ["a4"], ["a1", "a2", "a3", "d1", "d2"]]
    assert ring.consumer_cursor(0) == 3
    assert counters.values[Counter.EVENTS_OUT] == 6
