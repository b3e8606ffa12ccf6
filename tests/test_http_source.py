"""HTTP ingest (``type: http``) through the real agent: bodies as a JSON object, a JSON
array or NDJSON; event time and level kept; bearer token; body limit; clear 4xx errors;
and 429 with Retry-After while the pipeline is backpressured, with nothing lost once the
client retries."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from logcap.capture.http.collector import BadRequest, TooLarge, parse_body
from tests.conftest import free_port, wait_for, write_config

TOKEN = "s3cret"


def _post(port: int, body: bytes, token: str | None = TOKEN) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/logs", data=body, method="POST"
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        # longer than the 10 s a request may wait for its acknowledgement before a 503
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _agent(tmp_path: Path, start_agent, extra: str = "", dispatcher: str = "{batch_timeout: 50ms}"):
    address, port = f"127.0.0.1:{free_port()}", free_port()
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  ingest: {{type: http, address: "127.0.0.1:{port}", bearer_token: {TOKEN},
            max_body_bytes: 64KiB, retry_after: 2s}}
sinks:
  out: {{type: file, path: "./out/all.ndjson"}}
dispatcher: {dispatcher}
{extra}""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    assert _reachable(port)  # /ready says 200 only once the http source serves
    return agent, port


def _reachable(port: int) -> bool:
    try:
        return _post(port, b"[]")[0] == 200
    except OSError:
        return False


def _messages(tmp_path: Path) -> list[dict]:
    with open(tmp_path / "out" / "all.ndjson", "rb") as out:
        return [json.loads(line) for line in out]


def test_object_array_and_ndjson_bodies_arrive_with_their_time_and_level(
    tmp_path: Path, start_agent
) -> None:
    agent, port = _agent(tmp_path, start_agent)
    assert _post(
        port,
        json.dumps(
            {
                "message": "one",
                "level": "error",
                "labels": {"app": "x"},
                "timestamp": "2026-01-02T03:04:05.123456789Z",
            }
        ).encode(),
    )[:2] == (200, {"accepted": 1})
    assert _post(port, b'[{"message": "two"}, {"message": "three", "timestamp": 1767323045}]')[
        :2
    ] == (200, {"accepted": 2})
    assert _post(port, b'{"message": "four"}\n{"message": "five", "source_id": "s1"}\n')[:2] == (
        200,
        {"accepted": 2},
    )
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="out") >= 5,
        30,
        "5 entries",
    )
    assert agent.stop() == 0
    entries = {e["message"]: e for e in _messages(tmp_path)}
    assert list(entries) == ["one", "two", "three", "four", "five"]
    one = entries["one"]
    assert one["timestamp"] == "2026-01-02T03:04:05.123456789Z"
    assert one["ingested_at"] != one["timestamp"] and one["source"] == "ingest"
    assert one["labels"] == {
        "app": "x",
        "level": "error",
        "client_ip": "127.0.0.1",
        "ingested_via": "http",
        "host": one["labels"]["host"],
    }
    assert entries["three"]["timestamp"] == "2026-01-02T03:04:05.000000000Z"
    assert entries["five"]["labels"]["source_id"] == "s1"
    assert entries["two"]["timestamp"] == entries["two"]["ingested_at"]


def test_bad_requests_get_clear_errors_and_nothing_is_half_taken(
    tmp_path: Path, start_agent
) -> None:
    agent, port = _agent(tmp_path, start_agent)
    assert _post(port, b'{"message": "x"}', token=None)[0] == 401
    assert _post(port, b'{"message": "x"}', token="wrong")[0] == 401
    status, body, _ = _post(port, b'{"msg": "no message field"}')
    assert status == 400 and "msg" in body["error"]
    status, body, _ = _post(port, b'{"message": "x", "timestamp": "yesterday"}')
    assert status == 400 and "RFC 3339" in body["error"]
    assert _post(port, b"not json at all")[0] == 400
    # one bad line in NDJSON refuses the whole request: nothing of it is taken
    assert _post(port, b'{"message": "ok"}\n{"oops": 1}\n')[0] == 400
    status, body, _ = _post(port, json.dumps({"message": "x" * 70_000}).encode())
    assert status == 413 and "65536" in body["error"]
    assert _post(port, b'{"message": "the only one"}')[0] == 200
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="out") >= 1,
        30,
        "the good entry",
    )
    # 401 x2, 400 x4, 413: each refused request is counted as an error of the source
    assert agent.metric("logcap_component_errors_total", component="ingest") == 7
    assert agent.metric("logcap_component_received_events_total", component="ingest") == 1
    assert agent.stop() == 0
    assert [e["message"] for e in _messages(tmp_path)] == ["the only one"]


def test_a_full_pipeline_answers_429_and_a_retrying_client_loses_nothing(
    tmp_path: Path, start_agent
) -> None:
    agent, port = _agent(tmp_path, start_agent, "buffer: {collector_slots: 2}")
    dispatcher = agent.children()["dispatcher:dispatcher"]
    os.kill(dispatcher, signal.SIGSTOP)  # nothing drains the collector ring now
    answers: dict[int, int] = {}
    retry_after: dict[int, str | None] = {}

    def send(n: int) -> None:
        status, _, headers = _post(port, json.dumps({"message": f"m{n}"}).encode())
        retry_after[n] = headers.get("Retry-After")
        answers[n] = status

    def taken(n: int) -> bool:  # in the ring (its client waits for the 200), or refused
        return (
            n in answers
            or agent.metric("logcap_component_received_events_total", component="ingest") > n
        )

    waiting = []
    try:
        throttled = None
        for n in range(50):
            waiting.append(threading.Thread(target=send, args=(n,)))
            waiting[-1].start()
            wait_for(lambda n=n: taken(n), 30, f"m{n} taken in or refused")
            if n in answers:
                throttled = n
                break
        assert throttled is not None, "the ring never filled"
        assert answers == {throttled: 429}  # the ones before it wait for their 200
        assert retry_after[throttled] == "2"
        assert agent.metric("logcap_source_http_throttled_total", component="ingest") >= 1
    finally:
        os.kill(dispatcher, signal.SIGCONT)
    for thread in waiting:
        thread.join(30)
    assert [answers[n] for n in range(throttled)] == [200] * throttled
    # the client retries what was refused, and goes on
    for n in range(throttled, 50):
        wait_for(
            lambda n=n: _post(port, json.dumps({"message": f"m{n}"}).encode())[0] == 200,
            30,
            f"m{n} accepted",
        )
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="out") >= 50,
        30,
        "50 entries",
    )
    assert agent.stop() == 0
    assert [e["message"] for e in _messages(tmp_path)] == [f"m{n}" for n in range(50)]


@pytest.mark.parametrize(
    ("body", "problem"),
    [(b"", "empty"), (b"[1, 2]", "Expected"), (b'{"message": 5}', "Expected `str`")],
)
def test_parse_body_refuses_malformed_input(body: bytes, problem: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(body, "127.0.0.1", 0)
    assert problem.lower() in str(info.value).lower()


def test_config_rejects_unknown_keys_of_the_http_source() -> None:
    from logcap.config import parse_config
    from logcap.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(
            "sources: {a: {type: http, port: 80}}\nsinks: {b: {type: blackhole}}\n", "c.yaml"
        )
    assert "sources.a.port" in str(info.value)


def _entry(message: str, labels: dict[str, str]) -> bytes:
    return json.dumps({"message": message, "labels": labels}).encode()


def test_huge_labels_get_a_clear_client_error_and_crash_nothing(
    tmp_path: Path, start_agent
) -> None:
    """40 KB labels used to be answered 200, then overflowed the batch slot's meta
    estimate: the dispatcher died on them, and again after every restart."""
    agent, port = _agent(
        tmp_path,
        start_agent,
        "buffer: {collector_slot_bytes: 64KiB, collector_slots: 256}",
        dispatcher="{batch_max_bytes: 4MiB, batch_timeout: 2s}",
    )
    refused = [_post(port, _entry(f"h{n}", {"k": f"{n:03d}" + "v" * 40_000})) for n in range(120)]
    assert {status for status, _, _ in refused} == {413}
    assert "labels are 40" in refused[0][1]["error"] and "at most 16384" in refused[0][1]["error"]
    many = {f"l{i}": "x" for i in range(65)}
    status, body, _ = _post(port, _entry("many", many))
    assert status == 400 and "65 labels, at most 64" in body["error"]
    status, body, _ = _post(port, _entry("long name", {"n" * 200: "x"}))
    assert status == 400 and "over 128 bytes" in body["error"]

    # the largest labels allowed, each entry its own group, many to a batch: delivered
    sent = [f"ok{n}" for n in range(150)]
    for n, message in enumerate(sent):
        status, _, _ = _post(port, _entry(message, {"k": f"{n:03d}" + "v" * 16_000}))
        assert status == 200
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="out") >= 150,
        60,
        "150 entries with large labels",
    )
    assert agent.metric("logcap_child_restarts_total") == 0
    assert agent.metric("logcap_component_errors_total", component="dispatcher") == 0
    assert agent.stop() == 0
    assert [e["message"] for e in _messages(tmp_path)] == sent


def test_a_body_of_tiny_entries_that_can_never_fit_the_ring_is_413_at_once(
    tmp_path: Path, start_agent
) -> None:
    """A body within max_body_bytes whose entries, with the labels they gain, need more
    slots than the whole ring has was answered 429 forever, even on an idle agent: a
    client that retries (as 429 tells it to) never got through."""
    agent, port = _agent(
        tmp_path, start_agent, "buffer: {collector_slots: 2, collector_slot_bytes: 64KiB}"
    )
    # ring: 2 x 64 KiB. Entries whose level alternates each become a run of their own
    # that repeats its labels: 64 KB of them are ~140 KB as records, 3 slots' worth
    lines = [b'{"message":"","level":"%s"}\n' % b"ab"[n % 2 : n % 2 + 1] for n in range(2400)]
    tiny = b"".join(lines)
    status, body, headers = _post(port, tiny)
    assert status == 413, (status, body)
    assert "would never fit the ring's 2 slots" in body["error"], body
    assert "Retry-After" not in headers
    status, _, _ = _post(port, b'{"message":"after"}')  # the agent takes the next request
    assert status == 200
    assert agent.stop() == 0
    assert [e["message"] for e in _messages(tmp_path)] == ["after"]


def test_parse_body_bounds_labels_and_entry_size() -> None:
    ok = parse_body(_entry("m", {f"l{i}": "v" for i in range(64)}), "127.0.0.1", 0, 1000)
    assert len(ok[0][0]) == 64 + 2
    with pytest.raises(TooLarge, match="at most 100"):
        parse_body(_entry("m" * 200, {}), "127.0.0.1", 0, 100)
    with pytest.raises(TooLarge, match="labels are"):
        parse_body(_entry("m", {"k": "v" * 17_000}), "127.0.0.1", 0)
    # level, source_type and source_id are labels too: counted in the labels' bytes
    body = json.dumps({"message": "m", "source_id": "s" * 17_000}).encode()
    with pytest.raises(TooLarge):
        parse_body(body, "127.0.0.1", 0)
