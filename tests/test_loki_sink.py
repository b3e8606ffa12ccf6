"""The loki sink (sinks/loki/) against a strict fake of Loki's push API (tests/_loki_fake.py).

Layers: the wire format read back by the fake's own protobuf reader; the sink driven
directly with real batches (labels, grouping, splitting, headers, TLS, every outcome);
config errors; and ``logcap run`` from files to the fake: every line once and in order per
stream, 5xx retried until delivered, an out-of-order refusal dead-lettered.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import cramjam
import msgspec
import pytest
from _component_helpers import batch_view, config_from_yaml, encode_entry

from logcap.dispatch.batch import PREFIX, BatchMeta, Group
from logcap.errors import ConfigError, DeliveryError, Permanent, Retryable
from logcap.metrics import NullBlock
from logcap.sinks.base import retry_after_ms
from logcap.sinks.loki.client import RetryLater, outcome, retry_after, transport_error
from logcap.sinks.loki.config import LokiSinkConfig
from logcap.sinks.loki.labels import sanitise
from logcap.sinks.loki.sink import LokiSink, restamp
from logcap.sinks.loki.wire import (
    Stream,
    encode_json,
    encode_protobuf,
    gzipped,
    label_set,
    snappy,
    split,
    varint,
)
from logcap.sinks.registry import build_sink
from tests._loki_fake import (
    LokiFake,
    decode_json_request,
    decode_push_request,
    parse_labels,
    read_varint,
    signed64,
)
from tests.conftest import free_port, wait_for, write_config

S = 1_000_000_000
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z
HOST = {"host": "h1", "path": "/var/log/app.log"}

GroupSpec = tuple[str, dict[str, str], int | list[int], list[str]]


def make_batch(groups: list[GroupSpec], created_ns: int = 1) -> bytes:
    """Slot bytes of a batch of ``(source, labels, time or per-entry times, messages)``
    groups, laid out by hand from dispatch/batch.py's documented format."""
    pieces, metas = [], []
    for source, labels, stamps, messages in groups:
        times = stamps if isinstance(stamps, list) else [stamps] * len(messages)
        piece = b"".join(
            encode_entry(source, labels, t, m) for t, m in zip(times, messages, strict=True)
        )
        pieces.append(piece)
        own = stamps if isinstance(stamps, list) else []
        metas.append(Group(source, labels, times[0], len(messages), len(piece), own))
    meta = BatchMeta(created_ns, sum(g.count for g in metas), metas, [])
    encoded = msgspec.msgpack.encode(meta)
    return PREFIX.pack(len(encoded), 0) + encoded + b"".join(pieces)


@pytest.fixture
def fake() -> Iterator[LokiFake]:
    with LokiFake() as server:
        yield server


@pytest.fixture
def make_sink(tmp_path: Path) -> Iterator[Callable[..., LokiSink]]:
    """Builds loki sinks from YAML flow-mapping text; closes them at teardown."""
    sinks: list[LokiSink] = []

    def make(url: str, extra: str = "") -> LokiSink:
        config = loki_config(
            tmp_path, f"{{type: loki, url: '{url}'{', ' + extra if extra else ''}}}"
        )
        sink = build_sink(config, NullBlock())
        assert isinstance(sink, LokiSink)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def loki_config(tmp_path: Path, body: str) -> LokiSinkConfig:
    text = f"sources:\n  app: {{type: file, include: ['*.log']}}\nsinks:\n  out: {body}\n"
    config = config_from_yaml(text, tmp_path).sinks["out"]
    assert isinstance(config, LokiSinkConfig)
    return config


def labels_of(key: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(key)


# -- wire format ------------------------------------------------------------------------

TRICKY = 'quote " backslash \\ newline \n tab \t bell \x07 nul \x00 ünï 🙂 {}=,'


def test_protobuf_push_request_round_trips_through_an_independent_decoder() -> None:
    streams = [
        Stream('{a="1"}', (("a", "1"),), [(0, b"epoch"), (T0, b"whole second")]),
        Stream(
            label_set((("job", TRICKY), ("x", "y"))),
            (("job", TRICKY), ("x", "y")),
            [(T0 + 123_456_789, TRICKY.encode()), (T0 + 999_999_999, b""), (-S + 1, b"1969")],
        ),
    ]
    decoded = decode_push_request(encode_protobuf(streams))
    assert [parse_labels(text) for text, _ in decoded] == [s.pairs for s in streams]
    assert [entries for _, entries in decoded] == [
        [(t, line.decode()) for t, line in s.entries] for s in streams
    ]


def test_label_values_are_quoted_so_that_loki_reads_them_back_unchanged() -> None:
    for value in [TRICKY, "", "plain", "\u2028\ud7ff", "\\x41 is not an escape here"]:
        assert parse_labels(label_set((("v", value),))) == (("v", value),)


def test_varints_match_the_protobuf_encoding() -> None:
    assert varint(0) == b"\x00"
    assert varint(1) == b"\x01"
    assert varint(300) == b"\xac\x02"
    assert varint(2**63 - 1) == b"\xff" * 8 + b"\x7f"
    assert varint(-1) == b"\xff" * 9 + b"\x01"  # int64 -1: ten bytes
    for bits in range(64):  # every length, read back by the fake's own reader
        for value in (2**bits - 1, 2**bits, -(2**bits)):
            if -(2**63) <= value < 2**63:
                decoded, end = read_varint(varint(value), 0)
                assert (signed64(decoded), end) == (value, len(varint(value)))


def test_protobuf_bodies_are_one_raw_snappy_block() -> None:
    data = encode_protobuf([Stream('{a="b"}', (("a", "b"),), [(T0, b"x" * 5000)])])
    body = snappy(data)
    assert len(body) < len(data) // 10
    # a raw block starts with the uncompressed length as a varint; no stream framing
    assert body.startswith(varint(len(data)))
    assert not body.startswith(b"\xff\x06\x00\x00sNaPpY")
    assert bytes(cramjam.snappy.decompress_raw(body)) == data


def test_json_bodies_carry_nanosecond_strings_and_gzip_round_trips() -> None:
    streams = [Stream('{a="b"}', (("a", "b"),), [(T0 + 5, TRICKY.encode())])]
    body = gzipped(encode_json(streams))
    document = json.loads(gzip.decompress(body))
    assert document == {"streams": [{"stream": {"a": "b"}, "values": [[str(T0 + 5), TRICKY]]}]}
    assert decode_json_request(gzip.decompress(body)) == [('{a="b"}', [(T0 + 5, TRICKY)])]


def test_split_respects_entries_and_bytes_and_keeps_time_order() -> None:
    entries = [(T0 + i, b"%04d" % i + b"." * 96) for i in range(25)]
    streams = [
        Stream('{a="1"}', (("a", "1"),), entries[:15]),
        Stream('{a="2"}', (("a", "2"),), entries[15:]),
    ]
    by_count = split(streams, 10**9, 10)
    assert [sum(len(s.entries) for s in r) for r in by_count] == [10, 10, 5]
    by_bytes = split(streams, 1024, 10**6)
    assert len(by_bytes) > 2
    for request in by_bytes:
        assert sum(len(line) + 24 for s in request for _, line in s.entries) <= 1024
    flat = [e for request in by_bytes for s in request for e in s.entries]
    assert flat == entries
    # an entry larger than the limit goes alone rather than never
    assert split([Stream("{}", (), [(1, b"x" * 5000), (2, b"y")])], 1024, 10) == [
        [Stream("{}", (), [(1, b"x" * 5000)])],
        [Stream("{}", (), [(2, b"y")])],
    ]


def test_the_fake_refuses_what_loki_would_refuse() -> None:
    good = encode_protobuf([Stream('{a="b"}', (("a", "b"),), [(T0, b"x")])])

    def push(body: bytes, content_type: str, **headers: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request(
                "POST", "/loki/api/v1/push", body, {"Content-Type": content_type, **headers}
            )
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    with LokiFake(tenant="t") as fake:
        host, port = fake.url.removeprefix("http://").split(":")
        tenant = {"X-Scope-OrgID": "t"}
        assert push(snappy(good), "application/x-protobuf")[0] == 401  # no tenant
        assert push(snappy(good), "text/plain", **tenant)[0] == 415
        assert push(good, "application/x-protobuf", **tenant)[0] == 400  # not snappy
        framed = bytes(cramjam.snappy.compress(good))
        assert push(framed, "application/x-protobuf", **tenant)[0] == 400
        unknown_field = good + b"\x18\x01"  # PushRequest has no field 3
        assert push(snappy(unknown_field), "application/x-protobuf", **tenant)[0] == 400
        for labels in ["{a=b}", '{1a="x"}', "{}", '{a="x", a="y"}', '{a="\\q"}', 'a="b"']:
            body = snappy(encode_protobuf([Stream(labels, (), [(T0, b"x")])]))
            status, text = push(body, "application/x-protobuf", **tenant)
            assert status == 400, (labels, text)
        stringly = b'{"streams":[{"stream":{"a":"b"},"values":[[1,"x"]]}]}'
        assert push(stringly, "application/json", **tenant)[0] == 400  # ns must be a string
        assert push(snappy(good), "application/x-protobuf", **tenant)[0] == 204
        assert fake.lines() == ["x"]


# -- the sink against the fake --------------------------------------------------------------


def test_entries_are_grouped_by_label_set_and_sorted_by_time_within_each_stream(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url)
    slot = make_batch(
        [
            ("app", HOST, T0 + 2 * S, ["a2", "a2b"]),
            ("web", HOST, T0 + 1 * S, ["w1"]),
            ("app", HOST, T0 + 1 * S, ["a1"]),  # earlier than the group before it
            ("app", HOST, [T0 + 5, T0 + 3, T0 + 4], ["s5", "s3", "s4"]),  # own times
        ]
    )
    sink.write(batch_view(slot))
    assert sink.flush() == []
    streams = {labels_of(k)["source"]: v for k, v in fake.streams().items()}
    assert streams == {
        "app": [
            (T0 + 3, "s3"),
            (T0 + 4, "s4"),
            (T0 + 5, "s5"),
            (T0 + S, "a1"),
            (T0 + 2 * S, "a2"),
            (T0 + 2 * S + 1, "a2b"),  # one time per stream entry: see the next test
        ],
        "web": [(T0 + S, "w1")],
    }
    (push,) = fake.pushes()
    assert (push.status, push.streams, push.entries) == (204, 2, 7)
    assert push.headers["content-type"] == "application/x-protobuf"


@pytest.mark.parametrize("unordered", [False, True])
def test_repeated_lines_read_together_all_arrive_though_loki_drops_identical_entries(
    make_sink: Callable[..., LokiSink], unordered: bool
) -> None:
    with LokiFake(unordered=unordered) as fake:
        sink = make_sink(fake.url)
        sink.write(batch_view(make_batch([("app", HOST, T0, ["same", "same", "", "", "x"])])))
        # the rest of the same block (same read time) in the next batch
        sink.write(batch_view(make_batch([("app", HOST, T0, ["same", "x"])], created_ns=2)))
        (entries,) = fake.streams().values()
        assert entries == [
            (T0, "same"),
            (T0 + 1, "same"),
            (T0 + 2, ""),
            (T0 + 3, ""),
            (T0 + 4, "x"),
            (T0 + 5, "same"),
            (T0 + 6, "x"),
        ]
        assert fake.duplicates == 0


def test_restamp_makes_times_strictly_increasing_and_leaves_older_entries_in_place() -> None:
    entries = [(5, b"o1"), (5, b"o2"), (10, b"a"), (10, b"b"), (11, b"c"), (20, b"d")]
    clocks = restamp(entries, (10, 12))  # the stream's newest entry: time 10, sent as 12
    assert [ns for ns, _ in entries] == [5, 6, 13, 14, 15, 20]
    assert clocks[-1] == (20, 20) and clocks[1] == (10, 12)


def test_the_push_path_is_appended_to_the_url_path(make_sink: Callable[..., LokiSink]) -> None:
    with LokiFake(prefix="/gateway") as fake:
        make_sink(f"{fake.url}/gateway/").write(batch_view(make_batch([("app", HOST, T0, ["m"])])))
        assert fake.lines() == ["m"]


def test_line_format_json_sends_each_entry_as_the_dispatcher_encoded_it(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url, "line_format: json")
    slot = make_batch([("app", HOST, T0, ['one "quoted"', "two\nlines"])])
    sink.write(batch_view(slot))
    payload = bytes(batch_view(slot).payload).decode().splitlines()
    assert fake.lines() == payload
    assert json.loads(fake.lines()[1])["message"] == "two\nlines"


def test_json_encoding_gzips_when_asked_and_sends_plain_json_otherwise(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    make_sink(fake.url, "encoding: json").write(batch_view(make_batch([("app", HOST, T0, ["g"])])))
    make_sink(fake.url, "encoding: json, compression: none").write(
        batch_view(make_batch([("app", HOST, T0 + 1, ["p"])]))
    )
    first, second = fake.pushes()
    assert first.headers["content-type"] == second.headers["content-type"] == "application/json"
    assert first.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in second.headers
    assert fake.lines() == ["g", "p"]


def test_labels_come_from_templates_and_sanitised_entry_labels_and_empty_ones_are_left_out(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(
        fake.url,
        "labels: {job: 'logs-{source}', env: '{labels.env}', zone: '{labels.zone}', "
        "host: '{labels.host}'}",
    )
    entry = {
        "env": "prod",
        "k8s.pod-name": "p1",
        "9lives": "x",
        "__meta": "m",
        "blank": "",
        "host": "h1",
    }
    sink.write(batch_view(make_batch([("app", entry, T0, ["m"])])))
    (key,) = fake.streams()
    assert labels_of(key) == {
        "job": "logs-app",
        "env": "prod",
        "host": "h1",
        "k8s_pod_name": "p1",
        "_9lives": "x",
        "_meta": "m",
    }  # zone (absent) and blank (empty) are left out


def test_sanitise_makes_valid_label_names() -> None:
    assert sanitise("a.b-c") == "a_b_c"
    assert sanitise("1st") == "_1st"
    assert sanitise("__name__") == "_name__"
    assert sanitise("...") == ""
    assert sanitise("ok_Name9") == "ok_Name9"


def test_the_drop_list_keeps_high_cardinality_entry_labels_out_unless_mapped(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    entry = {
        "host": "h1",
        "path": "/x.log",
        "trace_id": "t1",
        "request-id": "r",
        "client_ip": "1.2.3.4",
        "svc": "api",
    }
    make_sink(fake.url, "labels: {trace: '{labels.trace_id}'}").write(
        batch_view(make_batch([("app", entry, T0, ["default drop list"])]))
    )
    make_sink(fake.url, "drop_labels: ['SV*'], labels: {}").write(
        batch_view(make_batch([("app", entry, T0, ["own drop list"])]))
    )
    make_sink(fake.url, "entry_labels: false").write(
        batch_view(make_batch([("app", entry, T0, ["no entry labels"])]))
    )
    found = {entries[0][1]: labels_of(key) for key, entries in fake.streams().items()}
    assert found == {
        "default drop list": {"trace": "t1", "host": "h1", "svc": "api"},
        "own drop list": {
            "host": "h1",
            "path": "/x.log",
            "trace_id": "t1",
            "request_id": "r",
            "client_ip": "1.2.3.4",
        },
        "no entry labels": {"source": "app", "host": "h1"},
    }


def test_a_label_with_more_distinct_values_than_max_label_values_stops_being_sent(
    fake: LokiFake, make_sink: Callable[..., LokiSink], caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(fake.url, "max_label_values: 3")
    caplog.set_level(logging.WARNING, logger="logcap.sinks.loki.labels")
    for n in range(6):
        labels = {"host": "h1", "worker": f"w{n}"}
        sink.write(batch_view(make_batch([("app", labels, T0 + n, [f"m{n}", f"m{n}b"])], n)))
    workers = sorted(labels_of(key).get("worker", "-") for key in fake.streams())
    assert workers == ["-", "w0", "w1", "w2"]
    assert sink.labels.dropped == {"worker"}
    assert sink.entries_pruned == 3 * 2
    assert len(fake.lines()) == 12
    warnings = [r for r in caplog.records if "worker" in r.getMessage()]
    assert len(warnings) == 1


def test_tenant_basic_auth_and_custom_headers_reach_loki(
    make_sink: Callable[..., LokiSink],
) -> None:
    basic = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    with LokiFake(tenant="team-a", authorization=basic) as fake:
        sink = make_sink(
            fake.url,
            "tenant_id: team-a, username: alice, password: s3cret, headers: {X-Extra: 'yes'}",
        )
        sink.write(batch_view(make_batch([("app", HOST, T0, ["m"])])))
        (push,) = fake.pushes()
        assert push.status == 204
        assert push.headers["x-scope-orgid"] == "team-a"
        assert push.headers["x-extra"] == "yes"


def test_bearer_token_is_sent_and_a_missing_tenant_is_refused_permanently(
    make_sink: Callable[..., LokiSink],
) -> None:
    with LokiFake(tenant="t", authorization="Bearer tok") as fake:
        make_sink(fake.url, "bearer_token: tok, tenant_id: t").write(
            batch_view(make_batch([("app", HOST, T0, ["m"])]))
        )
        assert fake.lines() == ["m"]
        with pytest.raises(Permanent, match="401") as refused:
            make_sink(fake.url, "bearer_token: tok").write(
                batch_view(make_batch([("app", HOST, T0 + 1, ["n"])]))
            )
        assert refused.value.code == "rejected"


def test_a_batch_is_pushed_in_requests_of_at_most_max_request_entries(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url, "max_request_entries: 10")
    messages = [f"m{i:03d}" for i in range(25)]
    sink.write(batch_view(make_batch([("app", HOST, T0, messages)])))
    assert [p.entries for p in fake.pushes()] == [10, 10, 5]
    assert fake.lines() == messages
    assert fake.connections == 1  # one keep-alive connection for all three


def test_a_batch_is_pushed_in_requests_of_about_max_request_bytes(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url, "max_request_bytes: 2KiB")
    messages = [f"{i:03d}" + "x" * 200 for i in range(40)]
    sink.write(
        batch_view(make_batch([("app", HOST, T0, messages[:20]), ("web", HOST, T0, messages[20:])]))
    )
    pushes = fake.pushes()
    assert len(pushes) >= 40 * 200 // 2048
    assert all(p.entries * 200 <= 2048 for p in pushes)
    assert sorted(fake.lines()) == messages


def test_a_request_failing_after_others_were_delivered_fails_the_batch_and_only_the_rest_is_resent(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url, "max_request_entries: 10")
    slot = make_batch([("app", HOST, [T0 + i for i in range(30)], [f"m{i}" for i in range(30)])])
    fake.script(None)  # the first request is answered normally
    fake.script(503, "ingester unavailable")
    with pytest.raises(RetryLater) as failed:
        sink.write(batch_view(slot))
    assert failed.value.code == "server_error"
    assert fake.entry_count() == 10
    sink.write(batch_view(slot))  # the retry: an ordered Loki would refuse the first 10 again
    assert sink.entries_skipped == 10
    assert fake.lines() == [f"m{i}" for i in range(30)]
    assert fake.duplicates == 0
    assert [p.status for p in fake.pushes()] == [204, 503, 204, 204]


def test_a_batch_whose_entries_cannot_be_read_is_permanent(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    good = make_batch([("app", HOST, T0, ["a", "b"])])
    torn = good[: len(good) - 20] + b"\n"  # the second entry cut short
    with pytest.raises(Permanent, match="cannot be read"):
        make_sink(fake.url).write(batch_view(torn))
    assert fake.pushes() == []


def test_429_is_retryable_with_the_delay_loki_asked_for(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url)
    fake.script(429, "Ingestion rate limit exceeded", {"Retry-After": "7"})
    with pytest.raises(RetryLater) as limited:
        sink.write(batch_view(make_batch([("app", HOST, T0, ["m"])])))
    assert limited.value.code == "rate_limited"
    assert limited.value.retry_after == 7.0
    assert retry_after_ms(limited.value) == 7000  # what the runner hands the retry process
    sink.write(batch_view(make_batch([("app", HOST, T0, ["m"])])))  # and then it is delivered
    assert fake.lines() == ["m"]


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    now = 1_700_000_000.0
    later = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after(later, now=now) == pytest.approx(30.0)
    assert retry_after("15", now=now) == 15.0
    assert retry_after("-3", now=now) is None  # delay-seconds has no sign (RFC 9110)
    assert retry_after(None) is None
    assert retry_after("soon") is None


def test_5xx_is_retryable_and_the_next_push_succeeds(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url)
    fake.script(500, "internal error")
    with pytest.raises(RetryLater) as failed:
        sink.write(batch_view(make_batch([("app", HOST, T0, ["m"])])))
    assert (failed.value.code, failed.value.retry_after) == ("server_error", None)
    sink.write(batch_view(make_batch([("app", HOST, T0, ["m"])])))
    assert fake.lines() == ["m"]


def test_entries_loki_refuses_as_out_of_order_make_a_permanent_error(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url)
    sink.write(batch_view(make_batch([("app", HOST, T0 + 2 * S, ["newer"])])))
    with pytest.raises(Permanent, match="entry out of order") as refused:
        sink.write(batch_view(make_batch([("app", HOST, T0 + S, ["older"])])))
    assert refused.value.code == "rejected"
    assert fake.lines() == ["newer"]


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (200, "", None, None),
        (204, "", None, None),
        (429, "rate limited", RetryLater, "rate_limited"),
        (500, "", RetryLater, "server_error"),
        (502, "bad gateway", RetryLater, "server_error"),
        (503, "", RetryLater, "server_error"),
        (408, "", Retryable, "timeout"),
        (400, "Max entry size '256' bytes exceeded for stream", Permanent, "rejected"),
        (400, "entry too far behind", Permanent, "rejected"),
        (400, "error parsing labels", Permanent, "rejected"),
        (401, "no org id", Permanent, "rejected"),
        (404, "", Permanent, "rejected"),
        (413, "too large", Permanent, "rejected"),
    ],
)
def test_every_answer_maps_to_one_outcome(
    status: int, body: str, kind: type[Exception] | None, code: str | None
) -> None:
    error = outcome(status, body.encode(), None)
    if kind is None:
        assert error is None
    else:
        assert type(error) is kind and error.code == code  # type: ignore[union-attr]
        assert str(status) in str(error)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (TimeoutError("timed out"), "timeout"),
        (TimeoutError("timed out"), "timeout"),
        (ConnectionRefusedError(111, "refused"), "connection"),
        (ConnectionResetError(104, "reset"), "connection"),
        (ssl.SSLError("bad handshake"), "connection"),
        (http.client.RemoteDisconnected("closed"), "connection"),
        (http.client.BadStatusLine("junk"), "connection"),
    ],
)
def test_every_transport_error_is_retryable(exc: BaseException, code: str) -> None:
    error = transport_error(exc, "http://loki")
    assert type(error) is Retryable and error.code == code


def test_a_refused_connection_is_retryable(make_sink: Callable[..., LokiSink]) -> None:
    sink = make_sink(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Retryable) as failed:
        sink.write(batch_view(make_batch([("app", HOST, T0, ["m"])])))
    assert failed.value.code == "connection"


def test_a_loki_slower_than_timeout_is_retryable(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url, "timeout: 200ms")
    fake.script(204, delay=1.0)
    with pytest.raises(Retryable) as failed:
        sink.write(batch_view(make_batch([("app", HOST, T0, ["m"])])))
    assert failed.value.code == "timeout"
    sink.write(batch_view(make_batch([("app", HOST, T0, ["m"])])))  # a new connection
    assert fake.lines() == ["m"]


def test_a_keep_alive_connection_the_server_closed_is_replaced_without_a_failure(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url)
    sink.write(batch_view(make_batch([("app", HOST, T0, ["a"])])))
    sink.write(batch_view(make_batch([("app", HOST, T0 + 1, ["b"])])))
    assert fake.connections == 1
    fake.drop_connections()  # what Loki does to idle connections
    sink.write(batch_view(make_batch([("app", HOST, T0 + 2, ["c"])])))
    assert fake.lines() == ["a", "b", "c"]
    assert fake.connections == 2


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed server certificate for 127.0.0.1 and a self-signed client one."""
    where = tmp_path_factory.mktemp("certs")
    for name, subject, extra in [
        ("server", "/CN=127.0.0.1", ["-addext", "subjectAltName=IP:127.0.0.1"]),
        ("client", "/CN=logcap", []),
    ]:
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", subject, *extra),
                *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
                *("-keyout", str(where / f"{name}.key"), "-out", str(where / f"{name}.crt")),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return where


def server_tls(certs: Path, client_ca: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "server.crt", certs / "server.key")
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certs / "client.crt")
    return context


def test_tls_with_a_private_ca_and_a_client_certificate(
    certs: Path, make_sink: Callable[..., LokiSink]
) -> None:
    with LokiFake(tls=server_tls(certs, client_ca=True)) as fake:
        sink = make_sink(
            fake.url,
            f"tls: {{ca_file: '{certs}/server.crt', cert_file: '{certs}/client.crt', "
            f"key_file: '{certs}/client.key'}}",
        )
        sink.write(batch_view(make_batch([("app", HOST, T0, ["secret"])])))
        assert fake.lines() == ["secret"]


def test_tls_verification_failure_is_retryable_and_verify_false_skips_it(
    certs: Path, make_sink: Callable[..., LokiSink]
) -> None:
    with LokiFake(tls=server_tls(certs, client_ca=False)) as fake:
        with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED") as failed:
            make_sink(fake.url).write(batch_view(make_batch([("app", HOST, T0, ["no"])])))
        assert failed.value.code == "connection"
        make_sink(fake.url, "tls: {verify: false}").write(
            batch_view(make_batch([("app", HOST, T0, ["yes"])]))
        )
        assert fake.lines() == ["yes"]


def test_a_missing_certificate_file_is_a_retryable_delivery_error(
    tmp_path: Path, make_sink: Callable[..., LokiSink]
) -> None:
    (tmp_path / "missing.pem").write_text("placeholder\n")  # validation wants it to exist
    sink = make_sink("https://127.0.0.1:1", "tls: {ca_file: missing.pem}")
    assert sink.config.tls is not None and sink.config.tls.ca_file == str(tmp_path / "missing.pem")
    (tmp_path / "missing.pem").unlink()  # gone at run time: still a retryable error
    with pytest.raises(Retryable) as failed:
        sink.write(batch_view(make_batch([("app", HOST, T0, ["m"])])))
    assert failed.value.code == "connection"


# -- config ---------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    config = loki_config(tmp_path, "{type: loki, url: 'http://loki:3100/'}")
    assert config.encoding == "protobuf" and config.compression == "gzip"
    assert config.line_format == "message"
    assert config.labels == {"source": "{source}", "host": "{labels.host}"}
    assert config.entry_labels is True
    assert {"trace_id", "request_id", "path", "timestamp", "_temp_*"} <= set(config.drop_labels)
    assert config.max_label_values == 200
    assert (config.max_request_bytes, config.max_request_entries) == (1024 * 1024, 10_000)
    assert config.timeout == 10.0
    assert config.tls is None and config.tenant_id is None and config.headers == {}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{type: loki, url: 'http://x', batch_size: 5}", "sinks.out.batch_size: unknown key"),
        ("{type: loki, url: 'ftp://loki:3100'}", "sinks.out.url"),
        ("{type: loki, url: 'http://a b'}", "sinks.out.url"),
        ("{type: loki}", "missing required field `url`"),
        ("{type: loki, url: 'http://x', labels: {'bad-name': x}}", "'bad-name' is not a Loki"),
        ("{type: loki, url: 'http://x', labels: {'__x': x}}", "'__x' is not a Loki"),
        ("{type: loki, url: 'http://x', labels: {a: '{host}'}}", "unknown placeholder '{host}'"),
        ("{type: loki, url: 'http://x', username: u}", "username and password go together"),
        (
            "{type: loki, url: 'http://x', username: u, password: p, bearer_token: t}",
            "not both",
        ),
        ("{type: loki, url: 'http://x', tls: {verify: false}}", "not https://"),
        ("{type: loki, url: 'https://x', tls: {key_file: k}}", "sinks.out.tls: tls.key_file"),
        ("{type: loki, url: 'http://x', headers: {Content-Type: x}}", "set by the sink"),
        ("{type: loki, url: 'http://x', tenant_id: t, headers: {x-scope-orgid: y}}", "set by"),
        ("{type: loki, url: 'http://x', max_label_values: 0}", "sinks.out.max_label_values"),
        ("{type: loki, url: 'http://x', max_request_bytes: 10}", "sinks.out.max_request_bytes"),
        ("{type: loki, url: 'http://x', encoding: avro}", "sinks.out.encoding"),
        ("{type: loki, url: 'http://x', timeout: 0s}", "sinks.out.timeout"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ConfigError) as failed:
        loki_config(tmp_path, body)
    assert problem in str(failed.value)


# -- the whole agent: files -> loki fake -------------------------------------------------------


def _agent_config(tmp_path: Path, address: str, url: str, sink_extra: str = "") -> Path:
    return write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  loki:
    type: loki
    url: "{url}"
    labels: {{source: "{{source}}", host: "{{labels.host}}", file: "{{labels.path}}"}}
{sink_extra}
dispatcher: {{batch_max_events: 500, batch_timeout: 50ms, checkpoint_interval: 200ms}}
retry: {{initial_backoff: 100ms, max_backoff: 500ms}}
""",
        address,
    )


def _write_logs(tmp_path: Path, files: int, per_file: int) -> dict[str, list[str]]:
    """``per_file`` numbered lines in each of ``files`` log files; expected lines by path."""
    (tmp_path / "logs").mkdir(exist_ok=True)
    expected = {}
    for i in range(files):
        path = tmp_path / "logs" / f"f{i}.log"
        lines = [f"f{i} line {n:06d} " + "p" * 100 for n in range(per_file)]
        path.write_text("".join(line + "\n" for line in lines))
        expected[str(path)] = lines
    return expected


def _by_file(fake: LokiFake) -> dict[str, list[str]]:
    return {labels_of(key)["file"]: [line for _, line in v] for key, v in fake.streams().items()}


def test_every_line_of_the_files_arrives_in_loki_once_and_in_order(
    tmp_path: Path, start_agent: Callable[..., object]
) -> None:
    with LokiFake() as fake:
        address = f"127.0.0.1:{free_port()}"
        agent = start_agent(_agent_config(tmp_path, address, fake.url), address)
        agent.wait_ready()  # type: ignore[attr-defined]
        began = time.monotonic()
        expected = _write_logs(tmp_path, 2, 5000)
        wait_for(lambda: fake.entry_count() >= 10_000, 60, "10,000 entries in the fake Loki")
        took = time.monotonic() - began
        assert agent.stop(signal.SIGTERM) == 0  # type: ignore[attr-defined]
        assert _by_file(fake) == expected
        assert fake.duplicates == 0
        assert all(p.status == 204 for p in fake.pushes())
        print(f"file -> loki fake: 10,000 lines in {took:.2f}s ({10_000 / took:,.0f} lines/s)")


def test_loki_failing_with_5xx_gets_every_line_once_it_recovers(
    tmp_path: Path, start_agent: Callable[..., object]
) -> None:
    # like Loki since 2.4 (unordered_writes): a retried batch may land after later ones
    with LokiFake(unordered=True) as fake:
        fake.script(500, "internal server error", times=2)
        fake.script(503, "ingester not ready", {"Retry-After": "0"})
        address = f"127.0.0.1:{free_port()}"
        agent = start_agent(_agent_config(tmp_path, address, fake.url), address)
        agent.wait_ready()  # type: ignore[attr-defined]
        expected = _write_logs(tmp_path, 2, 1500)
        wait_for(lambda: fake.entry_count() >= 3000, 60, "3,000 entries in the fake Loki")
        assert agent.stop(signal.SIGTERM) == 0  # type: ignore[attr-defined]
        assert len(fake.pushes(500)) == 2 and len(fake.pushes(503)) == 1
        # a retried batch lands after later ones, so its lines are in Loki once, but later
        assert {k: sorted(v) for k, v in _by_file(fake).items()} == expected
        assert fake.duplicates == 0


def test_a_batch_loki_refuses_goes_to_the_dlq_and_the_others_are_delivered(
    tmp_path: Path, start_agent: Callable[..., object]
) -> None:
    with LokiFake() as fake:
        fake.script(
            400,
            "entry with timestamp 2024-01-01 00:00:00 ignored, reason: 'entry out of order' "
            'for stream: {source="app"},\ntotal ignored: 500 out of 500',
        )
        address = f"127.0.0.1:{free_port()}"
        config = _agent_config(tmp_path, address, fake.url)
        agent = start_agent(config, address)
        agent.wait_ready()  # type: ignore[attr-defined]
        expected = _write_logs(tmp_path, 1, 2000)
        total = 2000

        def dead_lettered() -> float:
            return agent.metric(  # type: ignore[attr-defined]
                "logcap_dlq_entries_total", component="loki"
            )

        wait_for(lambda: fake.entry_count() + dead_lettered() >= total, 60, "every entry")
        assert agent.stop(signal.SIGTERM) == 0  # type: ignore[attr-defined]
    listing = subprocess.run(
        [sys.executable, "-m", "logcap", "dlq", "ls", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (segment,) = [json.loads(line) for line in listing.stdout.splitlines()]
    assert segment["records"] == 1
    assert segment["reasons"] == {"permanent": 1} and segment["sinks"] == {"loki": 1}
    shown = subprocess.run(
        [sys.executable, "-m", "logcap", "dlq", "show", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (record,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert "entry out of order" in record["error"]
    dead = [entry["message"] for entry in record["entries"]]
    delivered = fake.lines()
    assert dead and delivered
    (lines,) = expected.values()
    assert sorted(dead + delivered) == sorted(lines)  # each line in exactly one place
    assert dead == lines[: len(dead)]  # the first batch was the one refused


def test_a_level_template_takes_the_group_s_pipeline_level(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    from logcap.sinks.loki.labels import LabelMapper

    sink = make_sink(fake.url, "labels: {job: '{source}', level: '{level}'}")
    assert isinstance(sink.labels, LabelMapper)
    _, pairs, _ = sink.labels.stream(Group("app", {"host": "h"}, 1, 1, 1, [], 0, "warning"))
    assert dict(pairs)["level"] == "warning"
    _, pairs, _ = sink.labels.stream(Group("app", {"level": "info"}, 1, 1, 1))
    assert dict(pairs)["level"] == "info"  # no pipeline level: the entries' label
    _, pairs, _ = sink.labels.stream(Group("app", {}, 1, 1, 1))
    assert "level" not in dict(pairs)  # empty: left out


def test_a_fields_template_takes_the_group_s_field_value(
    fake: LokiFake, make_sink: Callable[..., LokiSink]
) -> None:
    sink = make_sink(fake.url, "labels: {job: '{source}', service: '{fields.service}'}")
    keys = {"service": "web"}
    _, pairs, _ = sink.labels.stream(Group("app", {}, 1, 1, 1, [], 0, None, keys))
    assert dict(pairs)["service"] == "web"
    _, pairs, _ = sink.labels.stream(Group("app", {}, 1, 1, 1))
    assert "service" not in dict(pairs)  # the group lacks it: left out


def test_a_retry_keeps_the_label_sets_of_its_first_attempt_when_a_label_stopped_since(
    make_sink: Callable[..., LokiSink],
) -> None:
    """A batch's first push delivers the {host} stream, its second ({host, worker}) fails;
    other batches then push `worker` past max_label_values. The retry must use the first
    attempt's label sets: recomputed, both groups fall into {host}, the delivered count
    skips the first 4 entries of the merged stream, and 2 never-sent entries are lost."""
    with LokiFake(unordered=True) as fake:
        sink = make_sink(fake.url, "max_label_values: 2, max_request_entries: 4")
        plain, w0 = {"host": "h1"}, {"host": "h1", "worker": "w0"}
        first = make_batch(
            [
                ("app", plain, [T0 + 2 * i for i in range(4)], [f"p{i}" for i in range(4)]),
                ("app", w0, [T0 + 2 * i + 1 for i in range(4)], [f"w{i}" for i in range(4)]),
            ],
            7,
        )
        fake.script(None)
        fake.script(503, "ingester unavailable")
        with pytest.raises(DeliveryError):
            sink.write(batch_view(first))
        for n in (1, 2):  # other batches: `worker` passes max_label_values
            labels = {"host": "h2", "worker": f"w{n}"}
            sink.write(batch_view(make_batch([("app", labels, T0 - 100 + n, [f"o{n}"])], 20 + n)))
        assert "worker" in sink.labels.dropped
        sink.write(batch_view(first))  # the retry
        lines = fake.lines()
        assert sorted(line for line in lines if line[0] in "pw") == sorted(
            [f"p{i}" for i in range(4)] + [f"w{i}" for i in range(4)]
        )
        assert fake.duplicates == 0
