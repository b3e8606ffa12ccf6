"""Group templates: the names sinks route and label by, rendered once per group.

A file sink's ``path``, a Kafka sink's topics, key and headers and a Loki sink's label
values are templates over the members every entry of a batch group shares:

* ``{source}``, the source name;
* ``{level}``, the level a pipeline gave the group's entries, else their ``level`` label;
* ``{labels.NAME}``, an entry label (labels are per group by construction);
* ``{fields.NAME[.SUB]}``, a structured field a pipeline set. Fields vary per entry, so
  the dispatcher cuts groups where a field named by any sink's template changes and
  hands its value along as ``Group.keys`` (dispatch/route.py ``regroup``): the sink still
  reads the batch in place and renders a template once per group, never per entry.

A member the group lacks renders as the sink's ``missing`` text ('unknown' for topics
and paths, '' for Loki, whose empty labels are left out).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from logcap.dispatch.batch import Group

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_MEMBER = re.compile(r"^(source|level|labels\.[^{}\s]+|fields\.[^{}\s.]+(\.[^{}\s.]+)*)$")
USE = "use '{source}', '{level}', '{labels.NAME}' or '{fields.NAME[.SUB]}'"
GroupKey = tuple[str, tuple[tuple[str, str], ...], str | None, tuple[tuple[str, str], ...]]
Render = Callable[[Group], str]


def template_problems(template: str) -> list[str]:
    """Each placeholder of ``template`` that names no member, as a message."""
    return [
        f"unknown placeholder '{{{member}}}' ({USE})"
        for member in PLACEHOLDER.findall(template)
        if not _MEMBER.match(member)
    ]


def member_problem(member: str) -> str | None:
    """Why ``member`` ('level', 'labels.NAME', 'fields.NAME', or a bare label name) is
    not one a sink can take per group, or None."""
    if _MEMBER.match(member) or (
        member and not re.search(r"[{}\s]", member) and not member.startswith("fields.")
    ):
        return None
    return f"{member!r} is neither a label name nor 'level', 'labels.NAME' or 'fields.NAME[.SUB]'"


def uses_level(template: str) -> bool:
    """Whether ``template`` names '{level}' (then the dispatcher cuts groups by level)."""
    return "level" in PLACEHOLDER.findall(template)


def template_fields(template: str) -> set[str]:
    """The field paths ('NAME.SUB') that ``template``'s '{fields.…}' placeholders name."""
    return {
        member[len("fields.") :]
        for member in PLACEHOLDER.findall(template)
        if member.startswith("fields.") and _MEMBER.match(member)
    }


def member_getter(member: str, missing: str) -> Render:
    """The value of one member of a group: 'source', 'level', 'labels.NAME',
    'fields.NAME' or a bare label name."""
    if member == "source":
        return lambda group: group.source or missing
    if member == "level":
        return lambda group: group.level or group.labels.get("level") or missing
    if member.startswith("fields."):
        path = member[len("fields.") :]
        return lambda group: group.keys.get(path) or missing
    name = member.removeprefix("labels.")
    return lambda group: group.labels.get(name) or missing


def compile_template(template: str, missing: str, clean: Callable[[str], str] = str) -> Render:
    """A function of a group for ``template`` (checked by :func:`template_problems`);
    ``clean`` is applied to every substituted value (e.g. to keep a path one name)."""
    parts: list[str | Render] = []
    at = 0
    for match in PLACEHOLDER.finditer(template):
        if match.start() > at:
            parts.append(template[at : match.start()])
        parts.append(member_getter(match.group(1), missing))
        at = match.end()
    if at < len(template):
        parts.append(template[at:])

    def render(group: Group) -> str:
        return "".join(part if isinstance(part, str) else clean(part(group)) for part in parts)

    return render


def group_key(group: Group) -> GroupKey:
    """What every template's value depends on: for caching rendered values per group."""
    return (group.source, tuple(group.labels.items()), group.level, tuple(group.keys.items()))
