"""Every pipeline step type, its options and its error paths, on entries directly (the
same steps through ``logcap run``: tests/test_pipeline_run.py)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from logcap.capture.pipeline.config import PipelineConfig, check_pipeline
from logcap.capture.pipeline.engine import Processor
from logcap.capture.pipeline.entry import Entry
from logcap.capture.pipeline.levels import normalise
from logcap.config._units import dec_hook
from logcap.metrics import Counter

READ_NS = 1_764_756_000_000_000_000  # 2025-12-03T10:00:00Z
LABELS = {"host": "h", "path": "/var/log/app.log"}


class Counts:
    """A counter block that remembers what was added."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {}

    def add(self, counter: int, n: int = 1) -> None:
        self.values[counter] = self.values.get(counter, 0) + n

    def get(self, counter: int) -> int:
        return self.values.get(counter, 0)


def pipeline(steps: list[dict[str, Any]], **extra: Any) -> PipelineConfig:
    config = msgspec.convert({"steps": steps, **extra}, PipelineConfig, dec_hook=dec_hook)
    assert check_pipeline(config) == []
    return config


def run(
    steps: list[dict[str, Any]], messages: list[str], **extra: Any
) -> tuple[list[Entry], Counts]:
    counts = Counts()
    processor = Processor("app", [("p", pipeline(steps, **extra))], counts)  # type: ignore[arg-type]
    entries = [Entry("app", LABELS, READ_NS, m) for m in messages]
    return processor.run(entries, READ_NS), counts


def test_json_parse_keeps_nested_keys_and_leaves_junk_as_it_was() -> None:
    out, counts = run(
        [{"type": "json_parse"}],
        ['{"a": 1, "b": {"c": [1, 2]}}', "not json", "[1, 2]", '"text"'],
    )
    assert [e.fields for e in out] == [{"a": 1, "b": {"c": [1, 2]}}, None, None, None]
    assert [e.message for e in out] == [
        '{"a": 1, "b": {"c": [1, 2]}}',
        "not json",
        "[1, 2]",
        '"text"',
    ]
    assert counts.get(Counter.PIPELINE_ERRORS) == 3  # invalid_json, not_an_object twice


def test_json_parse_into_a_named_field_and_from_a_field() -> None:
    out, _ = run(
        [
            {"type": "json_parse", "into": "fields.outer"},
            {"type": "json_parse", "field": "fields.outer.inner", "into": "fields.x"},
        ],
        ['{"inner": "{\\"k\\": \\"v\\"}"}'],
    )
    assert out[0].fields == {"outer": {"inner": '{"k": "v"}'}, "x": {"k": "v"}}


def test_regex_extract_named_groups_and_no_match_counted() -> None:
    out, counts = run(
        [{"type": "regex_extract", "pattern": r"^(?P<ip>\S+) (?P<code>\d+)(?P<opt> x)?"}],
        ["10.0.0.1 200", "nothing"],
    )
    assert out[0].fields == {"ip": "10.0.0.1", "code": "200"}  # a group that took no part: none
    assert out[1].fields is None and counts.get(Counter.PIPELINE_ERRORS) == 1


@pytest.mark.parametrize(
    ("formats", "value", "expected"),
    [
        (["rfc3339"], "2026-12-01T10:00:00.5Z", 1_796_119_200_500_000_000),
        (["rfc3339"], "2026-12-01 11:00:00+01:00", 1_796_119_200_000_000_000),
        (["unix"], 1_796_119_200.25, 1_796_119_200_250_000_000),
        (["unix"], "1796119200.000000001", 1_796_119_200_000_000_001),
        (["unix_ms"], 1_796_119_200_500, 1_796_119_200_500_000_000),
        (["unix_ns"], "1796119200000000007", 1_796_119_200_000_000_007),
        (["%d/%b/%Y:%H:%M:%S %z"], "01/Dec/2026:10:00:00 +0000", 1_796_119_200_000_000_000),
        (["unix", "rfc3339"], "2026-12-01T10:00:00Z", 1_796_119_200_000_000_000),
    ],
)
def test_timestamp_parse_formats(formats: list[str], value: Any, expected: int) -> None:
    entry = Entry("app", LABELS, READ_NS, "m", fields={"t": value})
    processor = Processor(
        "app",
        [("p", pipeline([{"type": "timestamp_parse", "field": "fields.t", "formats": formats}]))],
        Counts(),  # type: ignore[arg-type]
    )
    (out,) = processor.run([entry], READ_NS)
    assert out.timestamp_ns == expected


def test_timestamp_parse_uses_the_timezone_for_zone_less_times_and_counts_misses() -> None:
    steps = [
        {
            "type": "timestamp_parse",
            "field": "fields.t",
            "formats": ["%Y-%m-%d %H:%M:%S"],
            "timezone": "Europe/Paris",
        }
    ]
    counts = Counts()
    processor = Processor("app", [("p", pipeline(steps))], counts)  # type: ignore[arg-type]
    entries = [
        Entry("app", LABELS, READ_NS, "a", fields={"t": "2026-12-01 11:00:00"}),
        Entry("app", LABELS, READ_NS, "b", fields={"t": "yesterday"}),
        Entry("app", LABELS, READ_NS, "c"),  # no such field: left alone, no error
    ]
    out = processor.run(entries, READ_NS)
    assert [e.timestamp_ns for e in out] == [1_796_119_200_000_000_000, READ_NS, READ_NS]
    assert counts.get(Counter.PIPELINE_ERRORS) == 1


def test_level_extract_from_a_field_and_from_the_message_normalised() -> None:
    out, counts = run(
        [
            {"type": "json_parse", "when": {"field": "message", "matches": "^[{]"}},
            {"type": "level_extract", "field": "fields.severity"},
            {
                "type": "level_extract",
                "pattern": r"\[(?P<level>[A-Za-z]+)\]",
                "when": {"field": "message", "matches": r"^\["},
            },
        ],
        ['{"severity": "WARN"}', '{"severity": "bogus"}', "[err] failed", "[CRIT] down", "plain"],
    )
    assert [e.level for e in out] == ["warning", None, "error", "critical", None]
    assert counts.get(Counter.PIPELINE_ERRORS) == 1  # bogus; plain has no level: no error


def test_level_table() -> None:
    assert [normalise(v) for v in ("WARN", "Warning", "err", "crit", "FATAL", "3", 6, "x")] == [
        "warning",
        "warning",
        "error",
        "critical",
        "critical",
        "error",
        "info",
        None,
    ]


def test_field_add_remove_rename_and_labels_are_copied_not_shared() -> None:
    out, _ = run(
        [
            {"type": "json_parse"},
            {
                "type": "field_add",
                "fields": {"labels.team": "web", "fields.env.name": "prod", "level": "info"},
            },
            {"type": "field_remove", "fields": ["fields.secret", "labels.path"]},
            {"type": "field_rename", "from": "fields.msg", "to": "message"},
        ],
        ['{"msg": "hello", "secret": "s3"}'],
    )
    (entry,) = out
    assert entry.message == "hello" and entry.level == "info"
    assert entry.fields == {"env": {"name": "prod"}}
    assert entry.labels == {"host": "h", "team": "web"}
    assert LABELS == {"host": "h", "path": "/var/log/app.log"}  # the shared mapping untouched


def test_when_conditions_matches_equals_in_and_absent_fields() -> None:
    out, counts = run(
        [
            {"type": "json_parse"},
            {"type": "drop", "when": {"field": "fields.n", "equals": 1}},
            {"type": "drop", "when": {"field": "fields.k", "in": ["a", "b"]}},
            {"type": "drop", "when": {"field": "message", "matches": "secret"}},
        ],
        ['{"n": 1}', '{"n": 2}', '{"k": "b"}', '{"k": "c"}', "a secret line", "no fields"],
    )
    assert [e.message for e in out] == ['{"n": 2}', '{"k": "c"}', "no fields"]
    assert counts.get(Counter.PIPELINE_DROPPED) == 3


def test_dedup_drops_repeats_within_the_window_and_is_bounded() -> None:
    config = pipeline([{"type": "dedup", "window": "10s", "max_entries": 2}])
    counts = Counts()
    processor = Processor("app", [("p", config)], counts)  # type: ignore[arg-type]

    def feed(messages: list[str], at_s: float) -> list[str]:
        at = READ_NS + int(at_s * 1e9)
        return [
            e.message for e in processor.run([Entry("app", LABELS, at, m) for m in messages], at)
        ]

    assert feed(["a", "a", "b"], 0) == ["a", "b"]
    assert feed(["a"], 5) == []  # within 10 s of the kept one
    assert feed(["a"], 10) == ["a"]  # a new window: one copy per window passes
    assert feed(["c", "d", "b"], 11) == ["c", "d", "b"]  # max_entries 2: b was forgotten
    assert counts.get(Counter.PIPELINE_DROPPED) == 2


def test_timestamp_limits_clamp_keep_and_drop_are_counted() -> None:
    day = 86_400 * 10**9
    for action, kept, stamp in (
        ("clamp", 1, READ_NS),
        ("keep", 1, READ_NS - 30 * day),
        ("drop", 0, None),
    ):
        counts = Counts()
        config = pipeline(
            [{"type": "field_add", "fields": {"fields.x": 1}}],
            timestamp_limits={"max_past": "7d", "max_future": "10m", "action": action},
        )
        processor = Processor("app", [("p", config)], counts)  # type: ignore[arg-type]
        out = processor.run([Entry("app", LABELS, READ_NS - 30 * day, "old")], READ_NS)
        assert len(out) == kept and counts.get(Counter.TIMESTAMPS_OUT_OF_RANGE) == 1
        if out:
            assert out[0].timestamp_ns == stamp


def test_two_pipelines_run_in_the_source_s_order() -> None:
    first = pipeline([{"type": "json_parse"}])
    second = pipeline([{"type": "field_rename", "from": "fields.m", "to": "message"}])
    processor = Processor("app", [("a", first), ("b", second)], Counts())  # type: ignore[arg-type]
    (out,) = processor.run([Entry("app", LABELS, READ_NS, '{"m": "x"}')], READ_NS)
    assert out.message == "x"


def test_a_rolled_back_run_is_forgotten_by_dedup_and_not_counted() -> None:
    """An HTTP request the ring had no room for (429) comes again: its entries must not
    then be dropped as duplicates of themselves."""
    counts = Counts()
    config = pipeline([{"type": "dedup", "window": "1h"}])
    processor = Processor("app", [("p", config)], counts)  # type: ignore[arg-type]

    def messages(batch: list[str], commit: bool) -> list[str]:
        entries = [Entry("app", LABELS, READ_NS, m) for m in batch]
        return [e.message for e in processor.run(entries, READ_NS, commit=commit)]

    assert messages(["a", "b"], commit=True) == ["a", "b"]
    assert messages(["c", "c", "a"], commit=False) == ["c"]
    processor.rollback()
    assert counts.get(Counter.PIPELINE_DROPPED) == 0
    assert messages(["c", "c", "a"], commit=True) == ["c"]  # c kept once again, a still seen
    assert counts.get(Counter.PIPELINE_DROPPED) == 2


def test_the_rfc3339_fast_path_gives_the_right_times_and_leaves_other_shapes() -> None:
    from logcap.capture.pipeline.timestamps import _rfc3339_with_offset

    base = 1_796_119_200  # 2026-12-01T10:00:00Z
    for value, expected in (
        ("2026-12-01T10:00:00Z", base * 10**9),
        ("2026-12-01T10:00:00.1Z", base * 10**9 + 100_000_000),
        ("2026-12-01T10:00:00.123456Z", base * 10**9 + 123_456_000),
        ("2026-12-01T10:00:00.123456789Z", base * 10**9 + 123_456_789),
        ("2026-12-01 10:00:00.25+05:30", (base - 19_800) * 10**9 + 250_000_000),
        ("2026-12-01t10:00:00-08:00", (base + 28_800) * 10**9),
        ("1999-02-28T23:59:59.999+00:00", 920_246_399 * 10**9 + 999_000_000),
    ):
        assert _rfc3339_with_offset(value) == expected, value
    for shape in (
        "2026-12-01T10:00:00",  # no offset: the step's timezone decides (datetime path)
        "2026-12-01T10:00:00.Z",
        "2026-12-01T10:00:00.1234567890Z",
        "x" * 25,
    ):
        assert _rfc3339_with_offset(shape) is None, shape


def test_entries_are_packed_in_runs_of_equal_labels_with_their_levels_and_fields() -> None:
    from logcap.capture._entries import rich_runs

    other = {"host": "h", "stream": "stderr"}
    entries = [
        Entry("app", LABELS, 1, "a", "info", {"k": 1}),
        Entry("app", dict(LABELS), 2, "b"),  # equal labels, another mapping: the same run
        Entry("app", other, 3, "c"),
        Entry("app", LABELS, 4, "d"),
    ]
    assert rich_runs(entries) == [
        [LABELS, [1, 2], ["a", "b"], ["info", None], [b'{"k":1}', None]],
        [other, [3], ["c"], None, None],
        [LABELS, [4], ["d"], None, None],
    ]
    assert rich_runs([]) == []


def test_every_step_outcome_is_counted_in_its_own_step_area_word() -> None:
    """The words of a source's step area (capture/pipeline/engine.py step_series): one
    per (pipeline, step, outcome), in order; a staged run counts nothing until commit,
    and a rolled-back one never."""
    from logcap.capture.pipeline.engine import step_series

    pipelines = [
        ("p", pipeline([{"type": "json_parse"}, {"type": "dedup", "key": ["message"]}])),
        (
            "q",
            pipeline(
                [{"type": "timestamp_parse", "field": "message", "formats": ["unix"]}],
                timestamp_limits={"max_past": "1s", "max_future": "1s", "action": "keep"},
            ),
        ),
    ]
    series = step_series(pipelines)
    assert series == [
        ("p", "0:json_parse", "not_text"),
        ("p", "0:json_parse", "invalid_json"),
        ("p", "0:json_parse", "not_an_object"),
        ("p", "1:dedup", "dropped"),
        ("q", "0:timestamp_parse", "no_format_matched"),
        ("q", "timestamp_limits", "keep"),
    ]
    steps = Counts()
    processor = Processor("app", pipelines, Counts(), steps=steps)  # type: ignore[arg-type]
    entries = [Entry("app", {}, 10**18, text) for text in ["x", "x", "[1]", "{}"]]
    processor.run(entries, 10**18, commit=False)
    assert steps.values == {}
    processor.rollback()
    processor.run([Entry("app", {}, 10**18, text) for text in ["x", "x", "[1]", "{}"]], 10**18)
    assert steps.values == {
        1: 2,  # invalid_json: both "x" (dedup comes after)
        2: 1,  # not_an_object: [1]
        3: 1,  # dedup dropped the second "x"
        4: 3,  # no unix time in "x", "[1]", "{}"
    }
