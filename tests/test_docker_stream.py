"""The docker source's pure parts: Docker's log stream framing, partial lines, selection."""

from __future__ import annotations

import struct

import msgspec
import pytest

from logcap.capture.docker.config import DockerSourceConfig
from logcap.capture.docker.container import container_key
from logcap.capture.docker.reader import since_param
from logcap.capture.docker.select import entry_labels, selected
from logcap.capture.docker.stream import (
    JOINED,
    PARTIAL_BYTES,
    SKIPPED,
    STDERR,
    STDOUT,
    TRUNCATED,
    Line,
    LogDecoder,
    cut_utf8,
    parse_timestamp,
)
from logcap.config import parse_config
from logcap.errors import ConfigError

T0 = "2026-11-22T10:15:08.665032374Z"
T0_NS = 1795342508665032374


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def message(content: bytes, stamp: str = T0) -> bytes:
    return stamp.encode() + b" " + content


def feed_bytewise(decoder: LogDecoder, data: bytes, step: int = 7) -> list[Line]:
    """Feed in small uneven pieces: frames and timestamps split anywhere."""
    out: list[Line] = []
    for at in range(0, len(data), step):
        out += decoder.feed(data[at : at + step])
    return out


def test_timestamps_parse_to_the_nanosecond() -> None:
    assert parse_timestamp(b"2026-11-22T10:15:08", b"665032374") == T0_NS
    assert parse_timestamp(b"2026-11-22T10:15:08", b"5") == T0_NS - 665032374 + 500_000_000
    assert parse_timestamp(b"1970-01-01T00:00:00", None) == 0
    assert since_param(T0_NS) == "1795342508.665032374"
    assert since_param(5) == "0.000000005"
    assert container_key("f" * 64) == (1 << 60) - 1


def test_multiplexed_frames_give_lines_per_stream_in_order() -> None:
    body = (
        frame(STDOUT, message(b"one\n"))
        + frame(STDERR, message(b"two\n", "2026-11-22T10:15:08.7Z"))
        + frame(STDOUT, message(b"\n"))  # an empty line is a line
        + frame(STDOUT, message("ünïcode \xff".encode("latin-1") + b"\n"))
    )
    lines = feed_bytewise(LogDecoder(False, 1024, False), body)
    assert [(line.stream, line.text) for line in lines] == [
        (STDOUT, "one"),
        (STDERR, "two"),
        (STDOUT, ""),
        (STDOUT, "\ufffdn\ufffdcode \ufffd"),  # invalid UTF-8 is replaced, never a crash
    ]
    assert lines[0].timestamp_ns == T0_NS
    assert lines[1].timestamp_ns == T0_NS - 665032374 + 700_000_000


def test_partial_pieces_are_joined_per_stream_with_the_first_pieces_time() -> None:
    piece = b"a" * PARTIAL_BYTES
    later = "2026-11-22T10:15:09.000000001Z"
    body = (
        frame(STDOUT, message(piece))
        + frame(STDERR, message(b"between\n", later))  # the other stream interleaves
        + frame(STDOUT, message(piece))
        + frame(STDOUT, message(b"tail\n"))
    )
    decoder = LogDecoder(False, 1 << 20, False)
    first = decoder.feed(body[: len(body) - 20])
    assert [line.text for line in first] == ["between"]
    assert decoder.holding  # the collector holds its position before the open line
    rest = decoder.feed(body[len(body) - 20 :])
    assert not decoder.holding
    assert [(line.text, line.timestamp_ns, line.flags) for line in rest] == [
        ("a" * 2 * PARTIAL_BYTES + "tail", T0_NS, JOINED)
    ]
    assert first[0].flags == 0


def test_tty_streams_join_pieces_at_16_kib_and_drop_carriage_returns() -> None:
    piece = b"b" * PARTIAL_BYTES
    body = (
        message(piece)
        + message(piece)
        + message(b"end\r\n")
        + message(b"short\r\n", "2026-11-22T10:15:08.9Z")
    )
    lines = feed_bytewise(LogDecoder(True, 1 << 20, False), body, step=1000)
    assert [line.text for line in lines] == ["b" * 2 * PARTIAL_BYTES + "end", "short"]
    assert {line.stream for line in lines} == {STDOUT}


def test_a_line_over_the_limit_is_truncated_or_skipped_and_flagged() -> None:
    pieces = [frame(STDOUT, message(b"c" * PARTIAL_BYTES)) for _ in range(5)]
    body = b"".join(pieces) + frame(STDOUT, message(b"c\n")) + frame(STDOUT, message(b"ok\n"))
    truncating = LogDecoder(False, 20_000, False)
    lines = truncating.feed(body)
    assert [(len(line.text), line.flags) for line in lines] == [
        (20_000, JOINED | TRUNCATED),
        (2, 0),
    ]
    skipping = LogDecoder(False, 20_000, True)
    # a skipped line comes out empty and flagged: its position is passed, it is counted once
    assert [(line.text, line.flags) for line in skipping.feed(body)] == [
        ("", JOINED | SKIPPED),
        ("ok", 0),
    ]


def test_fifty_mib_without_a_newline_keeps_memory_bounded() -> None:
    """Neither framing holds more than about one line's limit, whatever arrives."""
    for tty in (False, True):
        decoder = LogDecoder(tty, 64 * 1024, False)
        chunk = (
            frame(STDOUT, message(b"z" * PARTIAL_BYTES))
            if not tty
            else message(b"z" * PARTIAL_BYTES)
        )
        largest = 0
        for _ in range(50 * 1024 * 1024 // PARTIAL_BYTES):
            assert decoder.feed(chunk) == []
            joining = decoder.joining.get(STDOUT)
            largest = max(largest, len(decoder.buffer) + (joining.size if joining else 0))
        assert largest <= 64 * 1024 + 2 * PARTIAL_BYTES
        end = frame(STDOUT, message(b"\n")) if not tty else message(b"\n")
        [line] = decoder.feed(end)
        assert len(line.text) == 64 * 1024 and line.flags & TRUNCATED


def test_a_tty_line_with_no_docker_pieces_is_cut_and_the_rest_dropped() -> None:
    decoder = LogDecoder(True, 1000, False)
    lines = decoder.feed(message(b"x" * 50_000))
    lines += decoder.feed(b"y" * 50_000 + b"\r\n" + message(b"next\r\n"))
    assert [(len(line.text), line.flags) for line in lines] == [(1000, TRUNCATED), (4, 0)]


def test_malformed_frames_are_kept_and_counted_daemon_errors_reported() -> None:
    decoder = LogDecoder(False, 1024, False)
    lines = decoder.feed(
        frame(STDOUT, b"no timestamp here\n")
        + frame(3, b"error from daemon in stream: boom\n")
        + frame(0, b"stdin is ignored\n")
        + frame(STDOUT, b"\x00\x01\xfe binary garbage\n")
    )
    assert [(line.text, line.timestamp_ns) for line in lines] == [
        ("no timestamp here", -1),
        ("\x00\x01\ufffd binary garbage", -1),
    ]
    assert decoder.malformed == 2
    assert decoder.daemon_errors == ["error from daemon in stream: boom"]


def test_finish_sends_a_last_line_that_never_got_its_newline() -> None:
    decoder = LogDecoder(False, 1024, False)
    assert decoder.feed(frame(STDERR, message(b"no newline at exit"))) == []
    assert [line.text for line in decoder.finish()] == ["no newline at exit"]
    assert not decoder.holding


def test_cut_utf8_never_splits_a_character() -> None:
    text = "aé€😀".encode()
    assert [cut_utf8(text, n).decode() for n in range(len(text) + 1)] == [
        "",
        "a",
        "a",
        "aé",
        "aé",
        "aé",
        "aé€",
        "aé€",
        "aé€",
        "aé€",
        "aé€😀",
    ]


def _docker_config(**keys: object) -> DockerSourceConfig:
    return msgspec.convert({"type": "docker", **keys}, DockerSourceConfig)


@pytest.mark.parametrize(
    ("keys", "name", "image", "labels", "expected"),
    [
        ({}, "web", "nginx:1", {}, True),
        ({"include_names": ["api-*"]}, "web", "nginx:1", {}, False),
        ({"include_names": ["api-*", "web"]}, "web", "nginx:1", {}, True),
        ({"exclude_names": ["w*"]}, "web", "nginx:1", {}, False),
        ({"include_images": ["nginx:*"]}, "web", "nginx:1", {}, True),
        ({"exclude_images": ["nginx:*"]}, "web", "nginx:1", {}, False),
        ({"include_labels": ["logs=on"]}, "web", "nginx:1", {"logs": "off"}, False),
        ({"include_labels": ["logs=on"]}, "web", "nginx:1", {"logs": "on"}, True),
        ({"include_labels": ["logs"]}, "web", "nginx:1", {"logs": ""}, True),
        ({"exclude_labels": ["logs=off"]}, "web", "nginx:1", {"logs": "off"}, False),
        # every include list that is set must match
        ({"include_names": ["web"], "include_images": ["redis*"]}, "web", "nginx:1", {}, False),
    ],
)
def test_container_selection(
    keys: dict[str, object], name: str, image: str, labels: dict[str, str], expected: bool
) -> None:
    assert selected(_docker_config(**keys), name, image, labels) is expected


def test_entry_labels_carry_compose_and_chosen_container_labels() -> None:
    config = _docker_config(label_keys=["com.example.team", "absent"])
    labels = entry_labels(
        config,
        "abc",
        "web",
        "nginx:1",
        {
            "com.docker.compose.project": "shop",
            "com.docker.compose.service": "front",
            "com.example.team": "payments",
            "other": "not copied",
        },
    )
    assert labels[STDOUT] == {
        "container_id": "abc",
        "container_name": "web",
        "image": "nginx:1",
        "compose_project": "shop",
        "compose_service": "front",
        "com_example_team": "payments",
        "stream": "stdout",
    }
    assert labels[STDERR]["stream"] == "stderr"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("{type: docker, docker_hots: x}", "unknown key 'docker_hots'"),
        ("{type: docker, docker_host: /var/run/docker.sock}", "docker_host"),
        ("{type: docker, read_from: middle}", "read_from"),
        ("{type: docker, long_lines: wrap}", "long_lines"),
        ("{type: docker, max_line_bytes: 1MiB}", "does not fit a collector ring slot"),
        ("{type: docker, reconnect_max_delay: 0s}", "reconnect_max_delay"),
        ("{type: docker, include_labels: a=b}", "include_labels"),
    ],
)
def test_config_errors_of_the_docker_source(source: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"sources:\n  d: {source}\nsinks:\n  out: {{type: blackhole}}\n")
    assert problem in str(caught.value)
