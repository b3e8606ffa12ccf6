"""The metrics catalog through ``logcap run``: a series exists only where it can change,
every component says its role, and every exported family moves in a test that reads it
from ``/metrics`` (the last test here checks that no family is left unread)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from logcap import __version__
from tests._loki_fake import LokiFake
from tests.conftest import free_port, wait_for, write_config
from tests.test_http_sink import Request, Server
from tests.test_http_sink import start_server as start_server  # a fixture

TESTS = Path(__file__).parent


def samples(agent, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of ``name`` on /metrics, by its sorted label pairs."""
    _, body = agent.get("/metrics")
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            text, value = line[len(name) :].rsplit(" ", 1)
            pairs = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', text)))
            found[pairs] = float(value)
    return found


def components(agent, name: str) -> set[str]:
    """The components with a sample of ``name``."""
    return {dict(pairs).get("component", "") for pairs in samples(agent, name)}


def test_series_exist_only_where_they_can_change(tmp_path: Path, start_agent) -> None:
    """No rotation counter for a sink that never rotates, no DLQ or circuit series for a
    blackhole that cannot fail, no pipeline counters for a source without pipelines;
    each component says its role; HEAD /metrics answers like GET without a body; the
    build, the config's hash and its load time are exported."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("one\ntwo\n")
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
  ingest: {{type: http, address: "127.0.0.1:{free_port()}"}}
sinks:
  out: {{type: file, path: "./out/app.log"}}
  devnull: {{type: blackhole}}
retry: {{max_bytes: 32MiB, spool_max_bytes: 256MiB, max_entries: 50000}}
dlq: {{max_bytes: 128MiB}}
""",
        address,
    )
    began = time.time()
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="out") == 2,
        30,
        "two entries",
    )
    roles = {
        dict(pairs)["component"]: (dict(pairs)["kind"], dict(pairs)["role"])
        for pairs in samples(agent, "logcap_child_up")
    }
    assert roles == {
        "app": ("file", "source"),
        "ingest": ("http", "source"),
        "dispatcher": ("dispatcher", "dispatcher"),
        "out": ("file", "sink"),
        "devnull": ("blackhole", "sink"),
        "retry": ("retry", "retry"),
    }
    _, body = agent.get("/metrics")
    text = body.decode()
    for absent in (
        "logcap_sink_file_rotations_total",  # out never rotates
        "logcap_source_pipeline_errors_total",  # no source has pipelines
        "logcap_source_rate_limited_seconds_total",  # none has a rate_limit
        "logcap_source_lines_skipped_total",  # long_lines: truncate (the default)
        "logcap_source_docker_reconnects_total",  # no docker source
    ):
        assert absent not in text, absent
    assert "devnull" not in str(samples(agent, "logcap_sink_circuit_state"))
    assert "devnull" not in str(samples(agent, "logcap_dlq_records_total"))
    assert "devnull" not in str(samples(agent, "logcap_component_errors_total"))
    assert components(agent, "logcap_source_http_throttled_total") == {"ingest"}
    assert components(agent, "logcap_source_file_resets_total") == {"app"}
    assert components(agent, "logcap_component_sent_bytes_total") == {
        "dispatcher",
        "out",
        "devnull",
    }
    # the file source counts what it read; sinks count what they were given
    assert agent.metric("logcap_component_received_events_total", component="app") == 2
    assert agent.metric("logcap_component_received_events_total", component="out") == 2
    assert agent.metric("logcap_component_received_bytes_total", component="out") > 0
    # what the run is, and its bounds
    [build] = samples(agent, "logcap_build_info")
    assert dict(build)["version"] == __version__
    [config_hash] = samples(agent, "logcap_config_info")
    assert re.fullmatch(r"[0-9a-f]{12}", dict(config_hash)["hash"])
    loaded = agent.metric("logcap_config_load_timestamp_seconds")
    assert began - 1 <= loaded <= time.time()
    assert agent.metric("logcap_retry_heap_capacity_bytes") == 32 * 2**20
    assert agent.metric("logcap_retry_heap_capacity_entries") == 50_000
    assert agent.metric("logcap_retry_spool_capacity_bytes") == 256 * 2**20
    assert agent.metric("logcap_dlq_capacity_bytes") == 128 * 2**20
    assert agent.metric("logcap_process_open_fds", component="dispatcher") > 3
    assert agent.metric("logcap_process_open_fds", component="supervisor") > 3
    # HEAD: the same headers, no body
    head = urllib.request.urlopen(
        urllib.request.Request(f"http://{address}/metrics", method="HEAD"), timeout=10
    )
    assert head.status == 200 and head.read() == b""
    assert head.headers["Content-Type"].startswith("text/plain")
    assert int(head.headers["Content-Length"]) > 1000
    assert agent.stop() == 0


def test_a_busy_agent_moves_its_delivery_retry_ring_and_rotation_families(
    tmp_path: Path, start_agent, start_server: Callable[..., Server]
) -> None:
    """A slow, first failing HTTP sink beside a rotating, compressing file sink: retries
    are scheduled and delivered, the batch ring fills behind the slow sink (which the
    consumer lag names), the checkpoint lags and catches up, files rotate, compress and
    are deleted past max_files, and the processes' CPU time grows."""
    answered = 0
    lock = threading.Lock()

    def answer(request: Request) -> tuple[int, dict[str, str], bytes]:
        nonlocal answered
        with lock:
            answered += 1
            number = answered
        if number <= 3:
            return 503, {}, b"warming up"
        time.sleep(0.3)  # slow: batches wait in the ring for this sink
        return 200, {}, b""

    server = start_server()
    server.answer = answer
    (tmp_path / "logs").mkdir()
    lines = 20_000
    log = tmp_path / "logs" / "a.log"
    log.write_text("".join(f"line {n:06d} {'x' * 90}\n" for n in range(lines)))
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  archive: {{type: file, path: "./out/app.log", max_file_bytes: 256KiB, compression: gzip,
            max_files: 2}}
  collector: {{type: http, url: "{server.url}",
              circuit_breaker: {{failure_threshold: 100, open_duration: 1s}}}}
  devnull: {{type: blackhole}}
dispatcher: {{batch_max_events: 500, batch_timeout: 50ms}}
buffer: {{batch_slots: 16}}
retry: {{initial_backoff: 200ms, max_backoff: 1s}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    cpu_before = agent.metric("logcap_process_cpu_seconds_total", component="dispatcher")

    def behind() -> bool:
        lag = samples(agent, "logcap_batch_ring_consumer_lag_slots")
        by_sink = {dict(pairs)["component"]: value for pairs, value in lag.items()}
        return by_sink.get("collector", 0) >= 4 and by_sink.get("devnull", 0) == 0

    wait_for(behind, 60, "the slow sink to fall behind in the batch ring")
    fill = agent.metric("logcap_ring_fill_ratio", ring="batches")
    assert 0 < fill <= 1
    # reported every 0.5 s: the batches the slow sink holds, and the bytes read after them
    wait_for(lambda: agent.metric("logcap_checkpoint_lag_seconds") > 0, 10, "checkpoint lag")
    wait_for(lambda: agent.metric("logcap_checkpoint_lag_bytes") > 0, 10, "lag in bytes")
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="collector") == lines,
        120,
        "every line through the slow sink",
    )
    wait_for(lambda: agent.metric("logcap_checkpoint_lag_bytes") == 0, 30, "the checkpoint")
    assert agent.metric("logcap_checkpoints_written_total") > 0
    assert agent.metric("logcap_retry_scheduled_total", component="collector") >= 1
    assert agent.metric("logcap_retry_delivered_total", component="collector") >= 1
    assert agent.metric("logcap_retries_total", component="collector", reason="server_error") >= 1
    assert agent.metric("logcap_component_errors_total", component="collector") >= 3
    assert agent.metric("logcap_sink_retry_handoffs_total", component="collector") >= 1
    assert agent.metric("logcap_component_batches_total", component="dispatcher") >= lines / 500
    for sink in ("archive", "collector", "devnull"):
        assert agent.metric("logcap_component_received_events_total", component=sink) == lines
        assert agent.metric("logcap_component_sent_bytes_total", component=sink) > lines * 100
    wait_for(
        lambda: agent.metric("logcap_sink_file_deleted_total", component="archive") >= 1,
        30,
        "rotated files past max_files deleted",
    )
    assert agent.metric("logcap_sink_file_rotations_total", component="archive") >= 5
    assert agent.metric("logcap_sink_file_compressed_total", component="archive") >= 2
    assert agent.metric("logcap_process_cpu_seconds_total", component="dispatcher") > cpu_before
    # histograms: every entry's latency once per sink; the slow sink's entries waited
    for sink in ("archive", "collector", "devnull"):
        assert agent.metric("logcap_delivery_latency_seconds_count", component=sink) == lines
        batches = agent.metric("logcap_component_batches_total", component=sink)
        assert agent.metric("logcap_sink_batch_size_events_count", component=sink) == batches
        assert agent.metric("logcap_sink_batch_size_events_sum", component=sink) == lines
        assert agent.metric("logcap_sink_send_duration_seconds_count", component=sink) >= 1
    slow = samples(agent, "logcap_delivery_latency_seconds_bucket")
    quick = {dict(p)["le"]: v for p, v in slow.items() if dict(p)["component"] == "devnull"}
    late = {dict(p)["le"]: v for p, v in slow.items() if dict(p)["component"] == "collector"}
    assert late["+Inf"] == quick["+Inf"] == lines
    assert late["1.0"] < quick["1.0"]  # the slow sink's entries waited longer
    mean = agent.metric("logcap_sink_send_duration_seconds_sum", component="collector") / (
        agent.metric("logcap_sink_send_duration_seconds_count", component="collector")
    )
    assert mean >= 0.2  # most rounds waited for a 0.3 s answer (3 were a quick 503)
    assert agent.stop() == 0


def test_dead_letters_are_counted_dropped_when_full_and_expired(
    tmp_path: Path, start_agent, start_server: Callable[..., Server]
) -> None:
    """A sink that refuses every batch (400, permanent) into a small DLQ that drops its
    oldest segments when full and expires them after 3 s."""
    server = start_server()
    server.answer = lambda request: (400, {}, b"no")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("".join(f"{n:05d} {'y' * 200}\n" for n in range(2000)))
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"], max_line_bytes: 1KiB}}
sinks:
  collector: {{type: http, url: "{server.url}"}}
dispatcher: {{batch_max_bytes: 16KiB, batch_timeout: 20ms}}
retry: {{max_bytes: 1MiB}}
dlq: {{max_bytes: 128KiB, segment_bytes: 64KiB, when_full: drop_oldest, max_age: 3s}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(
        lambda: agent.metric("logcap_dlq_entries_total", component="collector") == 2000,
        60,
        "every entry dead-lettered",
    )
    assert agent.metric("logcap_dlq_dropped_total") > 0  # the oldest, to make room
    assert agent.metric("logcap_dlq_records_total", component="collector", reason="permanent") > 0
    assert agent.metric("logcap_dlq_bytes_total", component="collector") > 128 * 1024
    assert 0 < agent.metric("logcap_dlq_size_bytes") <= 128 * 1024
    wait_for(
        lambda: agent.metric("logcap_dlq_expired_total") > 0, 30, "the DLQ's records to expire"
    )
    wait_for(lambda: agent.metric("logcap_dlq_size_bytes") == 0, 30, "an empty DLQ")
    assert agent.stop() == 0


def test_loki_prunes_a_label_past_max_label_values_and_skips_what_a_retry_delivered(
    tmp_path: Path, start_agent
) -> None:
    """The label stops being sent partway through the first batch, whose second push
    fails: the retry must see the same streams, or it re-sends what was delivered
    (before the fix: 40 entries stored for 30, the first push's 10 twice)."""
    (tmp_path / "logs").mkdir()
    for name in ("a", "b"):
        (tmp_path / "logs" / f"{name}.log").write_text("".join(f"{name}{n}\n" for n in range(15)))
    address = f"127.0.0.1:{free_port()}"
    with LokiFake() as fake:
        fake.script(None)  # the first push is taken, the second refused: a partial batch
        fake.script(503, "ingester unavailable")
        config = write_config(
            tmp_path,
            f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  loki: {{type: loki, url: "{fake.url}", labels: {{file: "{{labels.file_name}}"}},
         entry_labels: false, max_label_values: 1, max_request_entries: 10}}
dispatcher: {{batch_timeout: 500ms}}
retry: {{initial_backoff: 100ms}}
""",
            address,
        )
        agent = start_agent(config, address)
        agent.wait_ready()
        wait_for(lambda: fake.entry_count() == 30, 60, "every entry in Loki")
        assert agent.metric("logcap_sink_loki_entries_pruned_total", component="loki") >= 15
        assert agent.metric("logcap_sink_loki_entries_skipped_total", component="loki") >= 10
        assert fake.duplicates == 0
        assert agent.stop() == 0


def test_every_exported_family_is_read_from_metrics_by_a_test() -> None:
    """The catalog's guard: each family the exporter can produce is named in some test
    module (which reads it from /metrics of a running agent); a new family without a
    test fails here."""
    from logcap.metrics import catalog

    source = "\n".join(path.read_text() for path in (TESTS.parent / "metrics").glob("*.py"))
    names = set(re.findall(r'"(logcap_[a-z_]+)"', source))
    counters = {name for name, *_ in catalog.COMPONENT_COUNTERS}
    counters |= set(re.findall(r'CounterMetricFamily\(\s*"(logcap_[a-z_]+)"', source))
    counters |= {"logcap_dlq_dropped", "logcap_dlq_expired"}  # made in a loop
    tests = "\n".join(
        path.read_text()
        for path in TESTS.glob("test_*.py")
        if path.name not in ("test_top.py", "test_cockpit_rules.py")
    )
    from logcap.metrics.histogram import SINK_HISTOGRAMS

    histograms = {name for name, _, _ in SINK_HISTOGRAMS}
    sample_names = {
        name + "_total" if name in counters else name + "_count" if name in histograms else name
        for name in names
    }
    assert sorted(name for name in sample_names if f'"{name}"' not in tests) == []


def ledger(agent) -> dict[str, dict[str, float]]:
    """Per sink: published, ring, retry, dead, unaccounted (one scrape each family)."""
    out: dict[str, dict[str, float]] = {}
    for name, key in (
        ("logcap_ledger_published_events_total", "published"),
        ("logcap_ledger_dead_lettered_events", "dead"),
        ("logcap_events_unaccounted", "unaccounted"),
        ("logcap_component_sent_events_total", "delivered"),
    ):
        for pairs, value in samples(agent, name).items():
            out.setdefault(dict(pairs)["component"], {})[key] = value
    for pairs, value in samples(agent, "logcap_ledger_in_flight_events").items():
        labels = dict(pairs)
        out.setdefault(labels["component"], {})[labels["place"]] = value
    return out


def test_the_ledger_accounts_for_every_entry_while_sinks_fail_refuse_and_route(
    tmp_path: Path, start_agent, start_server: Callable[..., Server]
) -> None:
    """Published = delivered + dead-lettered + in flight, for sinks that fail for a while,
    refuse everything (the DLQ), take one source (inputs) or some entries (when); the
    unaccounted count is 0 at every scrape, and in the end nothing is in flight."""
    flaky, refusing = start_server(), start_server()
    calls = 0
    lock = threading.Lock()

    def flaky_answer(request: Request) -> tuple[int, dict[str, str], bytes]:
        nonlocal calls
        with lock:
            calls += 1
            return (503, {}, b"") if calls <= 5 else (200, {}, b"")

    flaky.answer = flaky_answer
    refusing.answer = lambda request: (400, {}, b"no")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    app_lines = [f"{'ERR' if n % 10 == 0 else 'ok'} app {n}" for n in range(3000)]
    (tmp_path / "a" / "app.log").write_text("\n".join(app_lines) + "\n")
    (tmp_path / "b" / "web.log").write_text("".join(f"web {n}\n" for n in range(1000)))
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./a/*.log"]}}
  web: {{type: file, include: ["./b/*.log"]}}
sinks:
  flaky: {{type: http, url: "{flaky.url}"}}
  refusing: {{type: http, url: "{refusing.url}"}}
  only_app: {{type: file, path: "./out/app.log", inputs: [app]}}
  errors: {{type: file, path: "./out/errors.log", when: {{field: message, matches: "^ERR"}}}}
dispatcher: {{batch_max_events: 100, batch_timeout: 20ms}}
retry: {{initial_backoff: 100ms, max_backoff: 500ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    seen_unaccounted = []
    expected = {"flaky": 4000, "refusing": 4000, "only_app": 3000, "errors": 300}

    def settled() -> bool:
        books = ledger(agent)
        seen_unaccounted.extend(books[sink]["unaccounted"] for sink in expected)
        return all(
            books[sink]["published"] == want
            and books[sink]["delivered"] + books[sink]["dead"] == want
            and books[sink]["ring"] == books[sink]["retry"] == 0
            for sink, want in expected.items()
        )

    wait_for(settled, 60, "every entry delivered or dead-lettered")
    assert len(seen_unaccounted) > 8 and set(seen_unaccounted) == {0}
    books = ledger(agent)
    assert books["refusing"]["dead"] == 4000 and books["refusing"]["delivered"] == 0
    assert books["flaky"]["delivered"] == 4000
    assert agent.stop() == 0


def test_the_ledger_shows_entries_lost_with_the_retry_spool(
    tmp_path: Path, start_agent, start_server: Callable[..., Server]
) -> None:
    """What the number is for: the retry process holds a down sink's batches; it is
    killed and its spool deleted (a disk lost, an operator's rm): those entries are now
    nowhere, and logcap_events_unaccounted says how many."""
    down = start_server()
    down.answer = lambda request: (503, {}, b"")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("".join(f"line {n}\n" for n in range(500)))
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  collector: {{type: http, url: "{down.url}"}}
dispatcher: {{batch_max_events: 100, batch_timeout: 20ms}}
retry: {{initial_backoff: 30s, max_backoff: 60s}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(
        lambda: ledger(agent)["collector"]["retry"] == 500, 60, "the retry process to hold all"
    )
    assert ledger(agent)["collector"]["unaccounted"] == 0
    os.kill(agent.children()["retry:retry"], signal.SIGKILL)
    shutil.rmtree(tmp_path / "data" / "spool", ignore_errors=True)
    wait_for(lambda: ledger(agent)["collector"]["unaccounted"] == 500, 60, "the loss to be counted")
    assert agent.stop() == 0


def test_a_histogram_never_raises_when_its_sum_would_overflow() -> None:
    """Week-old redelivered batches of 5,000 entries: the sum saturates below the int64
    limit instead of raising in the sink process (before: ValueError after ~3,000)."""
    from logcap.metrics import NullBlock
    from logcap.metrics.histogram import SINK_WORDS, sink_histograms

    latency, _, _ = sink_histograms(NullBlock(SINK_WORDS))
    for _ in range(5000):
        latency.observe(7 * 86400.0, 5000)
    latency.observe(-1.0)  # a clock stepped back: counted as 0
    bounds = len(latency.bounds)
    assert latency.block.get_word(bounds + 2) == 5000 * 5000 + 1
    assert 0 < latency.block.get_word(bounds + 1) <= 1 << 62


def test_the_ledger_counts_a_previous_run_s_spool_as_carried_in(
    tmp_path: Path, start_agent, start_server: Callable[..., Server]
) -> None:
    """The counter table is new each run, the retry spool is not: entries the last run
    spooled for a sink that was down are delivered by the next one. They count as
    published (carried in), so the books balance and a loss beside them still shows."""
    up = threading.Event()
    server = start_server()
    server.answer = lambda request: (200, {}, b"") if up.is_set() else (503, {}, b"")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("".join(f"line {n}\n" for n in range(300)))
    body = f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  collector: {{type: http, url: "{server.url}"}}
dispatcher: {{batch_max_events: 100, batch_timeout: 20ms}}
retry: {{initial_backoff: 200ms, max_backoff: 500ms}}
"""
    address = f"127.0.0.1:{free_port()}"
    agent = start_agent(write_config(tmp_path, body, address), address)
    agent.wait_ready()
    wait_for(lambda: ledger(agent)["collector"]["retry"] == 300, 60, "the spool to hold all")
    assert agent.stop() == 0  # the spool is kept for the next start
    up.set()
    again = f"127.0.0.1:{free_port()}"
    agent = start_agent(write_config(tmp_path, body, again), again)
    agent.wait_ready()
    wait_for(lambda: ledger(agent)["collector"]["delivered"] == 300, 60, "the spool delivered")
    books = ledger(agent)["collector"]
    assert books["published"] == 300 and books["unaccounted"] == 0
    assert agent.stop() == 0
