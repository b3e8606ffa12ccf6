"""Per-entry routing: a sink's ``when`` condition, decided once per entry, here.

The dispatcher is the one stage that touches every entry of every source (it cuts lines
into entries and encodes them), so it evaluates every sink's ``when`` on each entry and
splits a run of entries where the set of sinks changes. The result travels with each
group of the batch as ``Group.skip`` (dispatch/batch.py): bit *i* set means sink *i*
(in the run plan's sink order) skips the group. A sink reads the same batch in place and
skips its groups without decoding or re-encoding an entry (sinks/routing.py); with no
``when`` anywhere nothing here runs and every ``skip`` is 0.

Conditions are those of pipeline steps (capture/pipeline/config.py): on ``message``,
``level``, ``source``, ``labels.x`` or ``fields.x``; an entry without the member never
matches, so a sink with ``when: {field: level, ...}`` gets no entry that has no level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from logcap.capture.pipeline.config import Condition
from logcap.capture.pipeline.entry import Entry
from logcap.capture.pipeline.steps import condition
from logcap.dispatch.records import Piece, cut


class Router:
    """The ``when`` of each sink that has one, by its bit."""

    def __init__(self, conditions: dict[int, Condition]) -> None:
        self.tests: list[tuple[int, Callable[[Entry], bool]]] = [
            (1 << index, condition(when)) for index, when in sorted(conditions.items())
        ]

    @property
    def active(self) -> bool:
        """Whether any sink has a ``when`` (else pieces pass untouched)."""
        return bool(self.tests)

    def split(self, pieces: list[Piece]) -> list[Piece]:
        """``pieces`` cut where the sinks skipping their entries change, each with its
        ``skip`` mask."""
        out: list[Piece] = []
        for piece in pieces:
            masks = [self._skip(piece, i) for i in range(len(piece.messages))]
            start = 0
            for i in range(1, len(masks) + 1):
                if i == len(masks) or masks[i] != masks[start]:
                    out.append(cut(piece, start, i)._replace(skip=masks[start]))
                    start = i
        return out

    def _skip(self, piece: Piece, i: int) -> int:
        entry = Entry(
            piece.source,
            piece.labels,
            piece.stamps[i] if piece.stamps else piece.timestamp_ns,
            piece.messages[i],
            piece.levels[i] if piece.levels is not None else None,
            _fields(piece.fields[i]) if piece.fields is not None else None,
        )
        mask = 0
        for bit, test in self.tests:
            if not test(entry):
                mask |= bit
        return mask


def regroup(
    pieces: list[Piece], routed: tuple[str, ...] = (), by_level: bool = True
) -> list[Piece]:
    """Pieces whose entries a pipeline gave levels or fields, cut where the level or the
    value of a ``routed`` field (a path 'NAME.SUB' that a sink's template names as
    '{fields.NAME.SUB}') changes, each with its ``level`` and ``keys``: the group-level
    values sinks route, name files and label by (sinks/template.py). A level is one of a
    few names, so levels add few groups; routed fields add as many as they have values
    in a batch. Pieces without levels and fields pass untouched. Without ``by_level`` (no
    sink names the group's level) levels do not cut: entries of alternating levels would
    make a group each, and every group costs its meta in the batch and a look in each
    sink."""
    out: list[Piece] = []
    for piece in pieces:
        levels = piece.levels if by_level else None
        if levels is None and (piece.fields is None or not routed):
            out.append(piece)
            continue
        count = len(piece.messages)
        marks: list[tuple[str | None, dict[str, str]]] = [
            (
                None if levels is None else levels[i],
                {} if not routed or piece.fields is None else _keys(piece.fields[i], routed),
            )
            for i in range(count)
        ]
        start = 0
        for i in range(1, count + 1):
            if i == count or marks[i] != marks[start]:
                level, keys = marks[start]
                out.append(cut(piece, start, i)._replace(level=level, keys=keys))
                start = i
    return out


MAX_KEY_CHARS = 256  # a routed field's value is cut to this: it names topics and files


def _keys(text: bytes | None, routed: tuple[str, ...]) -> dict[str, str]:
    """The routed fields an entry has, as text: strings as they are, other values as
    JSON; a field that is absent or null is left out (templates render it as missing)."""
    fields = _fields(text)
    keys: dict[str, str] = {}
    if not fields:
        return keys
    for path in routed:
        value: Any = fields
        for name in path.split("."):
            value = value.get(name) if isinstance(value, dict) else None
        if value is None:
            continue
        rendered = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        keys[path] = rendered[:MAX_KEY_CHARS]
    return keys


def _fields(text: bytes | None) -> dict[str, Any] | None:
    """An entry's fields for a condition (the one place the dispatcher decodes them)."""
    return None if text is None else msgspec.json.decode(text)
