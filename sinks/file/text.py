"""The file sink's ``text`` format: one line per entry, rendered from a template.

A template is text with fields in braces: ``{timestamp}``, ``{ingested_at}``,
``{source}``, ``{message}``, ``{level}``, ``{labels.NAME}`` and ``{fields.NAME[.SUB]}``
(what the entry lacks renders as an empty string; a field that is not a string as its
JSON); ``{{`` and ``}}`` stand for literal braces. Example::

    '{timestamp} {labels.host} {message}'

Each rendered entry is followed by ``\\n``. A message that holds newlines (a multiline
event) is written as it is, so such an entry spans several lines of the output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

FIELDS = ("timestamp", "ingested_at", "source", "message", "level")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_LABEL = re.compile(r"^labels\.([^\s{}]+)$")
_FIELD = re.compile(r"^fields((?:\.[^\s{}.]+)+)$")


class Entry(msgspec.Struct, gc=False):
    """One decoded entry line (the layout of dispatch/batch.py)."""

    timestamp: str
    ingested_at: str
    source: str
    labels: dict[str, str]
    message: str
    level: str = ""  # from a pipeline
    fields: dict[str, Any] | None = None  # from a pipeline


Getter = Callable[[Entry], str]
_decode_lines = msgspec.json.Decoder(Entry).decode_lines


def _getter(field: str) -> Getter:
    if field == "timestamp":
        return lambda entry: entry.timestamp
    if field == "ingested_at":
        return lambda entry: entry.ingested_at
    if field == "source":
        return lambda entry: entry.source
    if field == "message":
        return lambda entry: entry.message
    if field == "level":
        return lambda entry: entry.level
    nested = _FIELD.match(field)
    if nested is not None:
        return _field_getter(nested.group(1)[1:].split("."))
    label = _LABEL.match(field)
    if label is None:
        names = ", ".join(f"{{{name}}}" for name in FIELDS)
        raise ValueError(
            f"unknown field {{{field}}} in text_template "
            f"(use {names}, {{labels.NAME}}, {{fields.NAME}})"
        )
    name = label.group(1)
    return lambda entry: entry.labels.get(name, "")


def _field_getter(path: list[str]) -> Getter:
    def get(entry: Entry) -> str:
        value: Any = entry.fields
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return ""
            value = value[key]
        return value if isinstance(value, str) else msgspec.json.encode(value).decode()

    return get


def compile_template(template: str) -> tuple[str, list[Getter]]:
    """``template`` as a ``str.format`` string with positional fields, and one getter per
    field; ValueError names an unknown field or a stray brace."""
    parts: list[str] = []
    getters: list[Getter] = []
    at = 0
    for match in _TOKEN.finditer(template):
        parts.append(template[at : match.start()])
        at = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token)
        elif match.group(1) is None:
            raise ValueError(f"single '{token}' in text_template (write '{token * 2}' for a brace)")
        else:
            parts.append(f"{{{len(getters)}}}")
            getters.append(_getter(match.group(1).strip()))
    parts.append(template[at:])
    return "".join(parts), getters


class TextRenderer:
    """Renders NDJSON entries (bytes as the dispatcher encoded them) as template lines."""

    def __init__(self, template: str) -> None:
        self._format, self._getters = compile_template(template)

    def render(self, ndjson: memoryview) -> bytes:
        """The text lines of every entry in ``ndjson``; entries are decoded in one call."""
        fmt = self._format.format
        getters = self._getters
        lines = [fmt(*[get(entry) for get in getters]) for entry in _decode_lines(ndjson)]
        lines.append("")
        return "\n".join(lines).encode("utf-8", "replace")
