"""Config of processing pipelines: ``pipelines: {NAME: {steps: [...]}}`` at the top
level, run by the sources that name them (``pipelines: [NAME, ...]``, in order).

A step is one of the tagged Structs below (``type: json_parse``, …), each with an
optional ``when`` condition. Members an entry has, as steps and conditions name them:
``message``, ``level``, ``source``, ``labels.NAME`` and ``fields.NAME`` (``fields.a.b``
reaches into nested objects).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from logcap.config._base import StrictStruct, doc
from logcap.config._units import Duration, PositiveDuration

#: an entry member a step reads or writes (see the module docstring)
Member = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(message|level|source|labels\.[A-Za-z_][A-Za-z0-9_]*|fields(\.[^.\s]+)+)\Z",
        description="An entry member: message, level, source, labels.NAME or fields.NAME[.SUB]",
    ),
]
#: where parsed values go: ``fields`` (merged into the entry's fields) or ``fields.NAME``
Into = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^fields(\.[^.\s]+)*\Z",
        description="fields (merged into the entry's fields) or fields.NAME[.SUB]",
    ),
]


class Condition(StrictStruct, frozen=True):
    """``{field: F, matches: REGEX}``, ``{field: F, equals: V}`` or ``{field: F, in:
    [V, ...]}``: exactly one test. An entry without ``field`` never matches."""

    field: Annotated[Member, doc("The entry member tested.")]
    matches: Annotated[
        str | None, doc("A regular expression searched in the member (as text).")
    ] = None
    equals: Annotated[str | int | float | bool | None, doc("The value the member must equal.")] = (
        None
    )
    in_: Annotated[
        list[str | int | float | bool] | None, doc("Values the member must be one of.")
    ] = msgspec.field(default=None, name="in")


class _Step(StrictStruct, frozen=True):
    when: Annotated[
        Condition | None, doc("Run the step only on entries this condition matches.")
    ] = None


class JsonParse(_Step, tag_field="type", tag="json_parse", kw_only=True, frozen=True):
    """Parse a member holding a JSON object; its keys (nested ones kept) go to ``into``."""

    field: Annotated[Member, doc("The member holding the JSON text.")] = "message"
    into: Annotated[Into, doc("Where the object's keys go.")] = "fields"


class RegexExtract(_Step, tag_field="type", tag="regex_extract", kw_only=True, frozen=True):
    """Search a regular expression in a member; its named groups go to ``into``."""

    field: Annotated[Member, doc("The member searched.")] = "message"
    pattern: Annotated[str, doc("A regular expression with named groups (?P<name>...).")]
    into: Annotated[Into, doc("Where the named groups go.")] = "fields"


class TimestampParse(_Step, tag_field="type", tag="timestamp_parse", kw_only=True, frozen=True):
    """Set the entry's event ``timestamp`` from a member (``ingested_at`` stays the read
    time). Formats are tried in order."""

    field: Annotated[Member, doc("The member holding the time.")]
    formats: Annotated[
        list[str],
        doc(
            "rfc3339, unix (seconds), unix_ms, unix_ns, or strptime patterns such as "
            "'%d/%b/%Y:%H:%M:%S %z'.",
            min_length=1,
        ),
    ]
    timezone: Annotated[
        str, doc("IANA zone for formats without an offset (e.g. Europe/Paris).")
    ] = "UTC"


class LevelExtract(_Step, tag_field="type", tag="level_extract", kw_only=True, frozen=True):
    """Set the entry's ``level`` from a member or from a regex over the message, normalised
    (see capture/pipeline/levels.py: WARN -> warning, err -> error, crit -> critical, …)."""

    field: Annotated[Member | None, doc("The member holding the level.")] = None
    pattern: Annotated[
        str | None,
        doc("A regular expression over the message whose group 'level' (or first group) is it."),
    ] = None


class FieldAdd(_Step, tag_field="type", tag="field_add", kw_only=True, frozen=True):
    """Set members to fixed values (``labels.x`` and ``level`` take strings)."""

    fields: Annotated[dict[Member, Any], doc("Member -> value.", min_length=1)]


class FieldRemove(_Step, tag_field="type", tag="field_remove", kw_only=True, frozen=True):
    """Remove members (``labels.x`` or ``fields.x``, or ``level``)."""

    fields: Annotated[list[Member], doc("The members removed.", min_length=1)]


class FieldRename(_Step, tag_field="type", tag="field_rename", kw_only=True, frozen=True):
    """Move a member's value to another member."""

    from_: Annotated[Member, doc("The member moved.")] = msgspec.field(name="from")
    to: Annotated[Member, doc("Where it goes.")]


class Drop(_Step, tag_field="type", tag="drop", kw_only=True, frozen=True):
    """Drop the entries ``when`` matches (every entry without ``when``); counted."""


class Dedup(_Step, tag_field="type", tag="dedup", kw_only=True, frozen=True):
    """Drop an entry identical (by ``key``) to one seen within ``window``; counted."""

    key: Annotated[list[Member], doc("The members compared.", min_length=1)] = msgspec.field(
        default_factory=lambda: ["source", "message"]
    )
    window: Annotated[PositiveDuration, doc("How long an entry is remembered.")] = PositiveDuration(
        10.0
    )
    max_entries: Annotated[
        int, doc("Entries remembered at most (the least recently seen go first).", ge=1)
    ] = 10000


Step = (
    JsonParse
    | RegexExtract
    | TimestampParse
    | LevelExtract
    | FieldAdd
    | FieldRemove
    | FieldRename
    | Drop
    | Dedup
)


class TimestampLimits(StrictStruct, frozen=True):
    """What to do with an event time too far from the time the entry was read."""

    max_past: Annotated[Duration, doc("How far before the read time an event time may be.")] = (
        Duration(7 * 86400.0)
    )
    max_future: Annotated[Duration, doc("How far after the read time it may be.")] = Duration(600.0)
    action: Annotated[
        Literal["clamp", "keep", "drop"],
        doc("clamp: set it to the read time; keep: leave it; drop: drop the entry. Counted."),
    ] = "clamp"


class PipelineConfig(StrictStruct, frozen=True):
    """Steps run in order on every entry of the sources that name this pipeline."""

    steps: Annotated[list[Step], doc("The steps, in order.", min_length=1)]
    timestamp_limits: Annotated[
        TimestampLimits | None,
        doc("Checked after the steps; none by default."),
    ] = None


def check_pipeline(config: PipelineConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """Rules across keys (pure): patterns compile, conditions have one test, zones exist."""
    from logcap.capture.pipeline.timestamps import check_format, check_zone

    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, step in enumerate(config.steps):
        at: tuple[str | int, ...] = ("steps", i)
        if step.when is not None:
            problems += check_when(step.when, (*at, "when"))
        if isinstance(step, RegexExtract):
            problems += _regex(step.pattern, (*at, "pattern"), named=True)
        elif isinstance(step, LevelExtract):
            if (step.field is None) == (step.pattern is None):
                problems.append((at, "give exactly one of field, pattern"))
            problems += _regex(step.pattern, (*at, "pattern"))
            if step.pattern is not None and not _groups(step.pattern):
                problems.append(((*at, "pattern"), "needs a group: (?P<level>...) or (...)"))
        elif isinstance(step, TimestampParse):
            for n, fmt in enumerate(step.formats):
                why = check_format(fmt)
                if why:
                    problems.append(((*at, "formats", n), why))
            why = check_zone(step.timezone)
            if why:
                problems.append(((*at, "timezone"), why))
        elif isinstance(step, FieldAdd):
            for member, value in step.fields.items():
                if not member.startswith("fields.") and not isinstance(value, str):
                    problems.append(((*at, "fields", member), f"{member} takes a string"))
                if member == "source":
                    problems.append(((*at, "fields", member), "the source cannot be set"))
        elif isinstance(step, FieldRemove | FieldRename):
            # every entry keeps a message and its source (a rename may replace the message)
            taken = step.fields if isinstance(step, FieldRemove) else [step.from_]
            for member in taken:
                if member in ("message", "source"):
                    problems.append((at, f"{member} cannot be removed or renamed"))
            if isinstance(step, FieldRename) and step.to == "source":
                problems.append(((*at, "to"), "the source cannot be set"))
    return problems


def check_when(
    when: Condition, at: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    """A condition has exactly one test, and its pattern compiles."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if sum(t is not None for t in (when.matches, when.equals, when.in_)) != 1:
        problems.append((at, "give exactly one of matches, equals, in"))
    return problems + _regex(when.matches, (*at, "matches"))


def _regex(
    pattern: str | None, at: tuple[str | int, ...], named: bool = False
) -> list[tuple[tuple[str | int, ...], str]]:
    if pattern is None:
        return []
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return [(at, f"not a regular expression: {exc}")]
    if named and not compiled.groupindex:
        return [(at, "has no named group: write (?P<name>...) for each value")]
    return []


def _groups(pattern: str) -> int:
    try:
        return re.compile(pattern).groups
    except re.error:
        return 1  # reported as not a regular expression
