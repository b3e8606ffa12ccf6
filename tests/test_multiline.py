"""Multi-line events: the rule (presets, start and continuation patterns, max_lines),
the collector holding an unfinished event in the file until the next event starts or the
timeout passes, and whole stack traces arriving as one entry through the real agent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _component_helpers import RingFactory, drain_records, ring_fixture

from logcap.capture.file.encoding import line_codec
from logcap.capture.file.multiline import MultilineRule
from logcap.capture.file.tailer import FileTailer
from logcap.config import parse_config
from logcap.errors import ConfigError
from logcap.metrics import NullBlock
from logcap.ringbuf import Consumer, Producer
from tests.conftest import free_port, wait_for, write_config

JAVA = [
    "2026-11-22 08:00:00 ERROR [main] Service - request failed",
    "java.lang.IllegalStateException: boom",
    "\tat com.example.Service.handle(Service.java:42)",
    "\tat com.example.Main.main(Main.java:7)",
    "Caused by: java.io.IOException: disk",
    "\t... 2 more",
]
PYTHON = [
    "2026-11-22 08:00:01 ERROR worker crashed",
    "Traceback (most recent call last):",
    '  File "worker.py", line 3, in <module>',
    "    run()",
    "ValueError: bad input",
    "",
    "During handling of the above exception, another exception occurred:",
    "",
    "Traceback (most recent call last):",
    '  File "worker.py", line 5, in <module>',
    "KeyError: 'k'",
]


@pytest.fixture
def rings() -> Iterator[RingFactory]:
    yield from ring_fixture()


def test_java_preset_keeps_a_stack_trace_with_its_log_line() -> None:
    rule = MultilineRule.build(None, None, "java", 500)
    assert rule.join(["2026 INFO before", *JAVA, "2026 INFO after"]) == [
        "2026 INFO before",
        "\n".join(JAVA),
        "2026 INFO after",
    ]


def test_python_preset_keeps_chained_tracebacks_together() -> None:
    rule = MultilineRule.build(None, None, "python", 500)
    assert rule.join([*PYTHON, "2026 INFO after"]) == ["\n".join(PYTHON), "2026 INFO after"]


def test_start_pattern_starts_events_and_max_lines_bounds_them() -> None:
    rule = MultilineRule.build(r"^\d{4}-", None, None, 3)
    assert rule.join(["2026-1 a", "b", "c", "d", "2026-2 e"]) == ["2026-1 a\nb\nc", "d", "2026-2 e"]
    continuation = MultilineRule.build(None, r"^\s", None, 100)
    assert continuation.join(["x", " y", "z"]) == ["x\n y", "z"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{start_pattern: a, preset: java}", "exactly one"),
        ("{timeout: 1s}", "exactly one"),
        ("{start_pattern: '(unclosed'}", "not a regular expression"),
        ("{preset: cobol}", "'cobol' is not one of java, python"),
    ],
)
def test_multiline_config_is_validated(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            f"sources: {{app: {{type: file, include: [x], multiline: {body}}}}}\n"
            "sinks: {out: {type: blackhole}}\n",
            "c.yaml",
        )
    assert "sources.app.multiline" in str(info.value) and message in str(info.value)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_unfinished_event_waits_in_the_file_until_the_next_starts_or_the_timeout(
    tmp_path: Path, rings: RingFactory
) -> None:
    log = tmp_path / "a.log"
    log.write_bytes("".join(f"{line}\n" for line in ["2026 INFO first", *JAVA]).encode())
    ring = rings.create(8, 64 * 1024)
    producer, consumer = Producer(ring), Consumer(ring)
    tailer = FileTailer(str(log), 0, codec=line_codec("utf-8"))
    tailer.multiline = MultilineRule.build(None, None, "java", 500)
    tailer.multiline_timeout, clock = 5.0, _Clock()
    tailer.clock = clock
    assert tailer.read_block(producer, 65536, NullBlock())
    (first,) = drain_records(consumer)
    assert first.data == b"2026 INFO first\n"  # the trace may still grow: it waits
    assert tailer.position == len(first.data)
    with open(log, "ab") as f:
        f.write(b"\tat com.example.More.deeper(More.java:1)\n")
    assert not tailer.read_block(producer, 65536, NullBlock())  # grew, still unfinished
    clock.now = 4.0
    assert not tailer.read_block(producer, 65536, NullBlock())
    clock.now = 9.5  # 5 s after the last growth
    assert tailer.read_block(producer, 65536, NullBlock())
    (trace,) = drain_records(consumer)
    assert trace.data.decode().splitlines() == [*JAVA, "\tat com.example.More.deeper(More.java:1)"]
    with open(log, "ab") as f:
        f.write(b"2026 INFO next\n2026 INFO last\n")
    assert tailer.read_block(producer, 65536, NullBlock())
    assert [r.data for r in drain_records(consumer)] == [b"2026 INFO next\n"]
    tailer.close()


def test_stack_traces_arrive_whole_through_the_agent_even_across_a_restart(
    tmp_path: Path, start_agent
) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        """
data_dir: ./data
sources:
  app:
    type: file
    include: ["./logs/*.log"]
    multiline: {preset: java, timeout: 300ms}
sinks:
  out: {type: file, path: "./out/all.ndjson"}
dispatcher: {batch_timeout: 50ms, checkpoint_interval: 100ms}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    expected = []
    with open(log, "ab") as f:
        for n in range(50):
            event = [f"2026 ERROR request {n} failed", *JAVA[1:]]
            for line in event:  # written a line at a time, as a logger would
                f.write(f"{line}\n".encode())
                f.flush()
            expected.append("\n".join(event))
            if n == 25:
                time.sleep(0.05)
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="out") >= 50,
        30,
        "50 events",
    )
    assert agent.stop() == 0
    # a trace half written while the agent is down, finished after it is back
    with open(log, "ab") as f:
        f.write(f"2026 ERROR request 50 failed\n{JAVA[1]}\n".encode())
    again_address = f"127.0.0.1:{free_port()}"
    again = start_agent(
        write_config(tmp_path, config.read_text().split("\n", 1)[1], again_address), again_address
    )
    again.wait_ready()
    with open(log, "ab") as f:
        f.write(f"{JAVA[2]}\n".encode())
    expected.append("\n".join(["2026 ERROR request 50 failed", JAVA[1], JAVA[2]]))
    wait_for(
        lambda: again.metric("logcap_component_sent_events_total", component="out") >= 1,
        30,
        "the last event after the timeout",
    )
    assert again.stop() == 0
    with open(tmp_path / "out" / "all.ndjson", "rb") as out:
        messages = [json.loads(line)["message"] for line in out]
    assert messages == expected


def test_the_collector_cuts_events_where_the_dispatcher_joins_them() -> None:
    """max_lines is counted from an event's first line in both places."""
    rule = MultilineRule.build(r"^E", None, None, 3)
    codec = line_codec("utf-8")
    for lines in (
        ["E1", "c2", "c3", "c4", "c5"],
        ["x", "E1", "c2"],
        ["c0", "c1"],
        ["E1", "c2", "c3", "c4", "c5", "c6", "c7"],
    ):
        block = "".join(f"{line}\n" for line in lines).encode()
        held = block[rule.last_event_start(block, codec) :].decode().splitlines()
        assert "\n".join(held) == rule.join(lines)[-1], lines
