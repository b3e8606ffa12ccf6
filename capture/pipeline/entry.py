"""An entry as pipeline steps see it, and the members they name.

Members: ``message``, ``level``, ``source``, ``labels.NAME``, ``fields.NAME[.SUB…]``
(see capture/pipeline/config.py). Entries of one file share one labels mapping until a
step changes an entry's labels; that entry then gets a copy (never change a shared one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MISSING: Any = object()  # what a getter returns for a member the entry does not have


class Entry:
    """One entry between its read and its packing into the collector ring."""

    __slots__ = ("fields", "labels", "level", "message", "source", "timestamp_ns")

    def __init__(
        self,
        source: str,
        labels: dict[str, str],
        timestamp_ns: int,
        message: str,
        level: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        self.source = source
        self.labels = labels
        self.timestamp_ns = timestamp_ns
        self.message = message
        self.level = level
        self.fields = fields


Getter = Callable[[Entry], Any]
Setter = Callable[[Entry, Any], None]
Remover = Callable[[Entry], bool]


def _parts(member: str) -> tuple[str, list[str]]:
    head, _, rest = member.partition(".")
    return head, rest.split(".") if rest else []


def getter(member: str) -> Getter:
    """A function giving the member's value, or MISSING."""
    head, path = _parts(member)
    if head == "labels":
        name = path[0]
        return lambda e: e.labels.get(name, MISSING)
    if head == "fields" and len(path) == 1:
        key = path[0]
        return lambda e: MISSING if e.fields is None else e.fields.get(key, MISSING)
    if head == "fields":

        def nested(e: Entry) -> Any:
            value: Any = e.fields
            for key in path:
                if not isinstance(value, dict) or key not in value:
                    return MISSING
                value = value[key]
            return value

        return nested
    if head == "level":
        return lambda e: MISSING if e.level is None else e.level
    if head == "source":
        return lambda e: e.source
    return lambda e: e.message


def setter(member: str) -> Setter:
    """A function setting the member (creating the nested objects on the way)."""
    head, path = _parts(member)
    if head == "labels":
        name = path[0]

        def set_label(e: Entry, value: Any) -> None:
            e.labels = {**e.labels, name: str(value)}

        return set_label
    if head == "fields":

        def set_field(e: Entry, value: Any) -> None:
            if e.fields is None:
                e.fields = {}
            target = e.fields
            for key in path[:-1]:
                inner = target.get(key)
                if not isinstance(inner, dict):
                    inner = target[key] = {}
                target = inner
            target[path[-1]] = value

        return set_field
    if head == "level":

        def set_level(e: Entry, value: Any) -> None:
            e.level = str(value)

        return set_level

    def set_message(e: Entry, value: Any) -> None:
        e.message = value if isinstance(value, str) else str(value)

    return set_message


def remover(member: str) -> Remover:
    """A function removing the member; True if the entry had it."""
    head, path = _parts(member)
    if head == "labels":
        name = path[0]

        def remove_label(e: Entry) -> bool:
            if name not in e.labels:
                return False
            e.labels = {k: v for k, v in e.labels.items() if k != name}
            return True

        return remove_label
    if head == "fields":

        def remove_field(e: Entry) -> bool:
            target: Any = e.fields
            for key in path[:-1]:
                target = target.get(key) if isinstance(target, dict) else None
            if not isinstance(target, dict) or path[-1] not in target:
                return False
            del target[path[-1]]
            return True

        return remove_field

    def remove_level(e: Entry) -> bool:
        had, e.level = e.level is not None, None
        return had

    return remove_level
