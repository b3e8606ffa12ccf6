"""Labels a source gives its entries beyond its built-in ones: static ``labels`` from its
config (every source type) and, for file sources, ``path_labels``: the named groups of a
regular expression searched in each file's path.

Labels are low-cardinality strings (Loki streams, Kafka topics, routing), so they are
bounded here: at most :data:`MAX_STATIC_LABELS` static labels of at most
:data:`MAX_STATIC_LABELS_BYTES` as JSON, at most :data:`MAX_PATH_GROUPS` path groups
whose values are cut to :data:`MAX_PATH_LABEL_CHARS` characters. With the path itself
that stays within the batch bound's room for an entry's labels (dispatch/bounds.py).

A source's built-in labels (``host``, ``path``, ``file_name``, Docker's ``container_id``,
…) cannot be set this way: a static label of that name is a config error, so an entry's
built-in labels always say where it came from. Names follow Loki's rule (letters, digits
and ``_``, not starting with a digit).
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import msgspec

from logcap.capture.base import Problems

LabelName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z",
        description="A label name: letters, digits and '_', not starting with a digit",
    ),
]
MAX_STATIC_LABELS = 32
MAX_STATIC_LABELS_BYTES = 4096
MAX_PATH_GROUPS = 8
MAX_PATH_LABEL_CHARS = 256
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")

LABELS_DOC = (
    "Static labels added to every entry of this source, e.g. {env: prod, team: web} "
    f"(at most {MAX_STATIC_LABELS}, {MAX_STATIC_LABELS_BYTES} bytes as JSON; the source's "
    "built-in labels cannot be set)."
)


def check_static(labels: dict[str, str], built_in: frozenset[str]) -> Problems:
    """Static labels: bounded, and none of the source's built-in names."""
    problems: Problems = []
    for name in sorted(set(labels) & built_in):
        problems.append(
            (("labels", name), f"'{name}' is a built-in label of this source and cannot be set")
        )
    if len(labels) > MAX_STATIC_LABELS:
        problems.append((("labels",), f"{len(labels)} labels, at most {MAX_STATIC_LABELS}"))
    size = len(json.dumps(labels, ensure_ascii=False).encode())
    if size > MAX_STATIC_LABELS_BYTES:
        problems.append((("labels",), f"{size} bytes as JSON, at most {MAX_STATIC_LABELS_BYTES}"))
    return problems


def check_path_labels(pattern: str | None, taken: frozenset[str]) -> Problems:
    """``path_labels``: a regular expression with 1 to :data:`MAX_PATH_GROUPS` named
    groups, each a valid label name that no built-in or static label already has."""
    if pattern is None:
        return []
    where = ("path_labels",)
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return [(where, f"not a regular expression: {exc}")]
    names = list(compiled.groupindex)
    if not names:
        return [(where, "has no named group: write (?P<name>...) for each label")]
    problems: Problems = []
    if len(names) > MAX_PATH_GROUPS:
        problems.append((where, f"{len(names)} named groups, at most {MAX_PATH_GROUPS}"))
    for name in names:
        if not _NAME.match(name):
            problems.append((where, f"group '{name}' is not a label name (letters, digits, '_')"))
        elif name in taken:
            problems.append((where, f"group '{name}' would replace the label '{name}'"))
    return problems


class PathLabels:
    """The labels a file's path gives (named groups that took part in the match)."""

    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern)

    def of(self, path: str) -> dict[str, str]:
        """Group name → matched text (cut to MAX_PATH_LABEL_CHARS); {} when no match."""
        match = self.regex.search(path)
        if match is None:
            return {}
        return {
            name: value[:MAX_PATH_LABEL_CHARS]
            for name, value in match.groupdict().items()
            if value is not None
        }


def file_labels(
    host: str, static: dict[str, str], path_labels: PathLabels | None, path: str
) -> dict[str, str]:
    """The labels of every entry read from ``path``: the source's static labels, those
    its ``path_labels`` finds in the path, then the built-in ones (which no other can
    replace: validation keeps their names apart)."""
    found = path_labels.of(path) if path_labels is not None else {}
    built_in = {"host": host, "path": path, "file_name": path.rsplit("/", 1)[-1]}
    return {**static, **found, **built_in}
