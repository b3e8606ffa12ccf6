"""Which containers a docker source reads, and the labels their entries carry."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from logcap.capture.docker.config import DockerSourceConfig
from logcap.capture.docker.stream import STDERR, STDOUT

COMPOSE_LABELS = {
    "com.docker.compose.project": "compose_project",
    "com.docker.compose.service": "compose_service",
}
_NOT_LABEL_CHAR = re.compile(r"[^A-Za-z0-9_]")


def _has_label(labels: dict[str, str], wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)


def selected(config: DockerSourceConfig, name: str, image: str, labels: dict[str, str]) -> bool:
    """Whether a container is read: it matches every include list that is set (one
    pattern of each) and no exclude pattern."""
    includes = (
        (config.include_names, lambda p: fnmatchcase(name, p)),
        (config.include_images, lambda p: fnmatchcase(image, p)),
        (config.include_labels, lambda p: _has_label(labels, p)),
    )
    for patterns, matches in includes:
        if patterns and not any(map(matches, patterns)):
            return False
    return not (
        any(fnmatchcase(name, p) for p in config.exclude_names)
        or any(fnmatchcase(image, p) for p in config.exclude_images)
        or any(_has_label(labels, p) for p in config.exclude_labels)
    )


def entry_labels(
    config: DockerSourceConfig, container_id: str, name: str, image: str, labels: dict[str, str]
) -> dict[int, dict[str, str]]:
    """The labels of a container's entries, one mapping per stream (shared by every entry
    of that stream, so runs of them are recognised by identity)."""
    common = {"container_id": container_id, "container_name": name, "image": image}
    for key, label in COMPOSE_LABELS.items():
        if key in labels:
            common[label] = labels[key]
    for key in config.label_keys:
        if key in labels:
            common[_NOT_LABEL_CHAR.sub("_", key)] = labels[key]
    return {
        STDOUT: {**common, "stream": "stdout"},
        STDERR: {**common, "stream": "stderr"},
    }
