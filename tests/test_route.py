"""Per-entry routing in the dispatcher (dispatch/route.py): each sink's ``when`` is
decided once per entry, and runs are cut where the set of sinks changes."""

from __future__ import annotations

import msgspec

from logcap.capture.pipeline.config import Condition
from logcap.dispatch.records import Piece
from logcap.dispatch.route import Router

LABELS = {"host": "h"}


def when(**test: object) -> Condition:
    return msgspec.convert(test, Condition)


def test_runs_are_cut_where_the_skipping_sinks_change() -> None:
    router = Router({1: when(field="level", **{"in": ["error", "critical"]})})
    piece = Piece(
        "app",
        LABELS,
        b"",
        10,
        ["a", "b", "c", "d"],
        [10, 11, 12, 13],
        ["info", "error", "critical", None],
        [None, b'{"k":1}', None, None],
    )
    out = router.split([piece])
    assert [(p.messages, p.skip) for p in out] == [(["a"], 2), (["b", "c"], 0), (["d"], 2)]
    assert [p.stamps for p in out] == [[10], [11, 12], [13]]
    assert [p.timestamp_ns for p in out] == [10, 11, 13]
    assert [p.fields for p in out] == [[None], [b'{"k":1}', None], [None]]


def test_lines_without_level_match_only_message_and_label_conditions() -> None:
    router = Router(
        {
            0: when(field="message", matches="ERROR"),
            2: when(field="labels.host", equals="h"),
            3: when(field="level", equals="error"),
        }
    )
    lines = Piece("app", LABELS, b"prefix", 5, ["ok", "an ERROR", "ok"], [])
    out = router.split([lines])
    # sink 3 skips every line (no level without a pipeline); sink 0 skips the two "ok"
    assert [(p.messages, p.skip) for p in out] == [
        (["ok"], 0b1001),
        (["an ERROR"], 0b1000),
        (["ok"], 0b1001),
    ]
    assert all(p.timestamp_ns == 5 and p.stamps == [] and p.head == b"prefix" for p in out)


def test_without_conditions_the_router_is_inactive() -> None:
    assert not Router({}).active


def test_pieces_with_levels_are_cut_where_the_level_changes() -> None:
    from logcap.dispatch.route import regroup

    piece = Piece("app", LABELS, b"", 1, ["a", "b", "c"], [1, 2, 3], ["info", "info", None])
    out = regroup([piece])
    assert [(p.messages, p.level, p.levels) for p in out] == [
        (["a", "b"], "info", ["info", "info"]),
        (["c"], None, [None]),
    ]
    plain = Piece("app", LABELS, b"", 1, ["x"], [])
    assert regroup([plain]) == [plain]
    assert regroup([plain], ("service",)) == [plain]  # no fields: nothing to cut by


def test_pieces_are_cut_where_a_routed_field_changes_and_carry_its_value() -> None:
    """'{fields.x}' in a sink's template: the dispatcher cuts where x changes, so the
    sink renders once per group; values are text (numbers, objects as JSON), absent or
    null fields are left out, and a value is cut to MAX_KEY_CHARS."""
    from logcap.dispatch.route import MAX_KEY_CHARS, regroup

    fields: list[bytes | None] = [
        b'{"svc":"web","http":{"code":200}}',
        b'{"svc":"web","http":{"code":200},"other":1}',
        b'{"svc":"db","http":{"code":500}}',
        b'{"svc":null}',
        None,
        b'{"svc":"' + b"x" * 1000 + b'"}',
        b'{"svc":true,"http":[1]}',
    ]
    messages = [str(i) for i in range(len(fields))]
    stamps = list(range(len(fields)))
    piece = Piece("app", LABELS, b"", 0, messages, stamps, None, fields)
    out = regroup([piece], ("http.code", "svc"))
    assert [(p.messages, p.keys) for p in out] == [
        (["0", "1"], {"http.code": "200", "svc": "web"}),
        (["2"], {"http.code": "500", "svc": "db"}),
        (["3", "4"], {}),
        (["5"], {"svc": "x" * MAX_KEY_CHARS}),
        (["6"], {"svc": "true"}),
    ]
    assert [p.stamps for p in out] == [[0, 1], [2], [3, 4], [5], [6]]
    assert regroup([piece]) == [piece]  # no sink names a field: untouched


def test_levels_cut_groups_only_when_a_sink_names_the_level() -> None:
    """Alternating levels made a group per entry (its meta in the batch, a look in each
    sink: the pipeline benchmark fell from 147k to 43k lines/s); without a sink that
    routes or labels by level, a piece stays one group."""
    from pathlib import Path

    from logcap.dispatch.route import regroup
    from tests._component_helpers import config_from_yaml

    levels: list[str | None] = ["info", "error"] * 3
    piece = Piece("app", LABELS, b"", 1, list("abcdef"), [1, 2, 3, 4, 5, 6], levels)
    assert regroup([piece], (), by_level=False) == [piece]
    assert len(regroup([piece], (), by_level=True)) == 6

    def by_level(sink: str) -> bool:
        text = f"sources:\n  app: {{type: file, include: ['*.log']}}\nsinks:\n  out: {sink}\n"
        return config_from_yaml(text, Path("/tmp")).sinks["out"].routes_by_level()

    assert not by_level("{type: file, path: 'out/{source}.log'}")
    assert by_level("{type: file, path: 'out/{level}.log'}")
    assert not by_level("{type: kafka, bootstrap_servers: 'k:1', topic: logs}")
    assert by_level("{type: kafka, bootstrap_servers: 'k:1', topic: 'logs-{level}'}")
    assert by_level("{type: kafka, bootstrap_servers: 'k:1', topic: logs, key_field: level}")
    assert by_level(
        "{type: kafka, bootstrap_servers: 'k:1', topic: l, level_routes: [{levels: [error], "
        "topic: e}]}"
    )
    assert not by_level("{type: loki, url: 'http://l:1'}")
    assert by_level("{type: loki, url: 'http://l:1', labels: {level: '{level}'}}")
    assert not by_level("{type: blackhole}")
