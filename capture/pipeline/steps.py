"""Each step type, compiled once from its config: ``apply(entry)`` returns None (keep
it), :data:`DROP`, or the reason it failed (the entry is then left as it was).

A step whose member is absent leaves the entry alone and is not an error.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec

from logcap.capture.pipeline import config as cfg
from logcap.capture.pipeline.entry import MISSING, Entry, getter, remover, setter
from logcap.capture.pipeline.levels import LEVELS, normalise
from logcap.capture.pipeline.timestamps import parser

DROP = "drop"
Outcome = str | None
_decode_json = msgspec.json.Decoder().decode


def step_label(index: int, kind: str) -> str:
    """A step as metrics and the log name it: its position in the pipeline and type."""
    return f"{index}:{kind}"


class Step:
    """A compiled step; ``kind`` and ``index`` name it in counters and the log.

    The engine runs a step on a whole block of entries at once (:meth:`apply_all`), one
    step after the other: the same outcome as entry by entry (a step sees the entries in
    their order), at a fraction of the per-entry overhead."""

    kind = "step"
    drops = False  # whether apply may return DROP
    reasons: tuple[str, ...] = ()  # every failure reason apply may return (its counters)

    def __init__(self, index: int, when: cfg.Condition | None) -> None:
        self.index = index
        self.label = step_label(index, self.kind)
        self.when = None if when is None else condition(when)

    def apply(self, entry: Entry) -> Outcome:
        """Change ``entry``; None, DROP or a failure reason."""
        raise NotImplementedError

    def apply_all(self, entries: list[Entry], failures: Tally[str]) -> list[Entry]:
        """The step on every entry (``when`` honoured); the entries kept, and each
        failure counted by reason in ``failures``."""
        when, apply = self.when, self.apply
        if not self.drops:
            for entry in entries:
                if when is None or when(entry):
                    outcome = apply(entry)
                    if outcome is not None:
                        failures[outcome] += 1
            return entries
        kept: list[Entry] = []
        for entry in entries:
            if when is not None and not when(entry):
                kept.append(entry)
                continue
            outcome = apply(entry)
            if outcome is None:
                kept.append(entry)
            elif outcome != DROP:
                failures[outcome] += 1
                kept.append(entry)
        return kept


def condition(when: cfg.Condition) -> Callable[[Entry], bool]:
    """The test a ``when`` describes (an absent member never matches)."""
    get = getter(when.field)
    if when.matches is not None:
        regex = re.compile(when.matches)
        return lambda e: (v := get(e)) is not MISSING and regex.search(_text(v)) is not None
    if when.in_ is not None:
        allowed = set(when.in_)
        return lambda e: (v := get(e)) is not MISSING and _hashable(v) in allowed
    wanted = when.equals
    return lambda e: (v := get(e)) is not MISSING and v == wanted


def _text(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else None


def _into(into: str) -> Callable[[Entry, dict[str, Any]], None]:
    """Where a step's parsed mapping goes: merged into fields, or under fields.NAME."""
    if into == "fields":

        def merge(e: Entry, values: dict[str, Any]) -> None:
            if e.fields is None:
                e.fields = values
            else:
                e.fields.update(values)

        return merge
    put = setter(into)
    return put


class JsonParse(Step):
    kind = "json_parse"
    reasons = ("not_text", "invalid_json", "not_an_object")

    def __init__(self, index: int, config: cfg.JsonParse) -> None:
        super().__init__(index, config.when)
        self.get = getter(config.field)
        self.put = _into(config.into)
        self.plain = config.when is None and config.field == "message" and config.into == "fields"

    def apply_all(self, entries: list[Entry], failures: Tally[str]) -> list[Entry]:
        if not self.plain:
            return super().apply_all(entries, failures)
        decode, error = _decode_json, msgspec.DecodeError
        for entry in entries:  # the common case, in one tight loop
            try:
                value = decode(entry.message)
            except error:
                failures["invalid_json"] += 1
                continue
            if type(value) is not dict:
                failures["not_an_object"] += 1
            elif entry.fields is None:
                entry.fields = value
            else:
                entry.fields.update(value)
        return entries

    def apply(self, entry: Entry) -> Outcome:
        text = self.get(entry)
        if text is MISSING:
            return None
        if not isinstance(text, str):
            return "not_text"
        try:
            value = _decode_json(text)
        except msgspec.DecodeError:
            return "invalid_json"
        if not isinstance(value, dict):
            return "not_an_object"
        self.put(entry, value)
        return None


class RegexExtract(Step):
    kind = "regex_extract"
    reasons = ("no_match",)

    def __init__(self, index: int, config: cfg.RegexExtract) -> None:
        super().__init__(index, config.when)
        self.get = getter(config.field)
        self.regex = re.compile(config.pattern)
        self.put = _into(config.into)

    def apply(self, entry: Entry) -> Outcome:
        value = self.get(entry)
        if value is MISSING:
            return None
        match = self.regex.search(_text(value))
        if match is None:
            return "no_match"
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        if groups:
            self.put(entry, groups)
        return None


class TimestampParse(Step):
    kind = "timestamp_parse"
    reasons = ("no_format_matched",)

    def __init__(self, index: int, config: cfg.TimestampParse) -> None:
        super().__init__(index, config.when)
        self.get = getter(config.field)
        self.parsers = [parser(fmt, config.timezone) for fmt in config.formats]

    def apply(self, entry: Entry) -> Outcome:
        value = self.get(entry)
        if value is MISSING:
            return None
        for parse in self.parsers:
            stamp = parse(value)
            if stamp is not None:
                entry.timestamp_ns = stamp
                return None
        return "no_format_matched"


class LevelExtract(Step):
    kind = "level_extract"
    reasons = ("unknown_level",)

    def __init__(self, index: int, config: cfg.LevelExtract) -> None:
        super().__init__(index, config.when)
        self.get = getter(config.field) if config.field is not None else None
        self.regex = re.compile(config.pattern) if config.pattern is not None else None

    def apply(self, entry: Entry) -> Outcome:
        if self.get is not None:
            value = self.get(entry)
            if value is MISSING:
                return None
        else:
            assert self.regex is not None
            match = self.regex.search(entry.message)
            if match is None:
                return None  # no level written in this message: nothing to extract
            value = match.group("level") if "level" in self.regex.groupindex else match.group(1)
        level = LEVELS.get(value) if type(value) is str else None  # as written, most often
        if level is None:
            level = normalise(value)
        if level is None:
            return "unknown_level"
        entry.level = level
        return None


class FieldAdd(Step):
    kind = "field_add"

    def __init__(self, index: int, config: cfg.FieldAdd) -> None:
        super().__init__(index, config.when)
        self.puts = [(setter(member), value) for member, value in config.fields.items()]

    def apply(self, entry: Entry) -> Outcome:
        for put, value in self.puts:
            put(entry, value)
        return None


class FieldRemove(Step):
    kind = "field_remove"

    def __init__(self, index: int, config: cfg.FieldRemove) -> None:
        super().__init__(index, config.when)
        self.removers = [remover(member) for member in config.fields]

    def apply(self, entry: Entry) -> Outcome:
        for remove in self.removers:
            remove(entry)
        return None


class FieldRename(Step):
    kind = "field_rename"

    def __init__(self, index: int, config: cfg.FieldRename) -> None:
        super().__init__(index, config.when)
        self.get = getter(config.from_)
        self.remove = remover(config.from_)
        self.put = setter(config.to)

    def apply(self, entry: Entry) -> Outcome:
        value = self.get(entry)
        if value is MISSING:
            return None
        self.remove(entry)
        self.put(entry, value)
        return None


class Drop(Step):
    kind = "drop"
    drops = True

    def __init__(self, index: int, config: cfg.Drop) -> None:
        super().__init__(index, config.when)

    def apply(self, entry: Entry) -> Outcome:
        return DROP


class Dedup(Step):
    """Remembers the keys of kept entries in an LRU mapping bounded by ``max_entries``:
    an entry whose key was kept less than ``window`` ago is dropped, so one copy per
    window passes. ``now`` is the read time of the entries being processed (set by the
    engine): windows run on the clock the entries were read by."""

    kind = "dedup"
    drops = True

    def __init__(self, index: int, config: cfg.Dedup) -> None:
        super().__init__(index, config.when)
        self.gets = [getter(member) for member in config.key]
        self.window_ns = int(config.window * 1e9)
        self.max_entries = config.max_entries
        self.seen: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        self.now = 0
        # (key, its time before) for each key kept since the last commit: a rollback
        # (an HTTP request the ring had no room for) forgets them, or its retry would be
        # dropped as a duplicate of entries that were never published
        self.undo: list[tuple[tuple[Any, ...], int | None]] = []

    def apply(self, entry: Entry) -> Outcome:
        key = tuple(_text(v) if (v := get(entry)) is not MISSING else None for get in self.gets)
        kept = self.seen.get(key)
        if kept is not None and self.now - kept < self.window_ns:
            self.seen.move_to_end(key)  # still recent in the LRU order; its window stays
            return DROP
        self.undo.append((key, kept))
        self.seen[key] = self.now  # kept: its window starts now, one copy per window passes
        self.seen.move_to_end(key)
        if len(self.seen) > self.max_entries:
            self.seen.popitem(last=False)
        return None

    def rollback(self) -> None:
        """Forget the keys kept since the last commit (as if those entries never came)."""
        for key, before in reversed(self.undo):
            if before is None:
                self.seen.pop(key, None)
            else:
                self.seen[key] = before
        self.undo.clear()


_KINDS: dict[type[Any], type[Step]] = {
    cfg.JsonParse: JsonParse,
    cfg.RegexExtract: RegexExtract,
    cfg.TimestampParse: TimestampParse,
    cfg.LevelExtract: LevelExtract,
    cfg.FieldAdd: FieldAdd,
    cfg.FieldRemove: FieldRemove,
    cfg.FieldRename: FieldRename,
    cfg.Drop: Drop,
    cfg.Dedup: Dedup,
}


def compile_step(index: int, config: cfg.Step) -> Step:
    """The runnable step for ``config`` (validated)."""
    make: Callable[[int, Any], Step] = _KINDS[type(config)]
    return make(index, config)


def step_type(config: cfg.Step) -> type[Step]:
    """The class ``config`` compiles to: its ``kind``, ``drops`` and ``reasons``."""
    return _KINDS[type(config)]
