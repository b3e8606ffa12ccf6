"""From an entry group's source and labels to a Loki label set.

Loki indexes labels, not lines: every distinct label set is a stream, and tens of
thousands of streams make it slow or make it refuse pushes. So the label set is chosen
here with two guards: a drop list of entry labels known to vary per line or per process
(ids, times, paths, addresses), and ``max_label_values``: a label name seen with more
distinct values than that stops being sent at all, from then on.
"""

from __future__ import annotations

import fnmatch
import logging
import re

from logcap.dispatch.batch import Group
from logcap.sinks.loki.config import LokiSinkConfig
from logcap.sinks.loki.wire import label_set
from logcap.sinks.template import GroupKey, compile_template, group_key

log = logging.getLogger(__name__)

Pairs = tuple[tuple[str, str], ...]
_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_CACHE_LIMIT = 4096


def sanitise(name: str) -> str:
    """A valid Loki label name for ``name`` (empty if nothing is left of it)."""
    clean = _NOT_NAME_CHAR.sub("_", name)
    if clean[:1].isdigit():
        clean = "_" + clean
    if clean.startswith("__"):  # reserved for Loki's own labels
        clean = "_" + clean.lstrip("_")
    return "" if clean.strip("_") == "" else clean


class LabelMapper:
    """Chooses the label set of each group; remembers which names it stopped sending."""

    def __init__(self, config: LokiSinkConfig) -> None:
        self.templates = {name: compile_template(t, "") for name, t in config.labels.items()}
        self.entry_labels = config.entry_labels
        self.max_values = config.max_label_values
        patterns = [fnmatch.translate(p.lower()) for p in config.drop_labels]
        self._drop = re.compile("|".join(patterns)) if patterns else None
        self._names: dict[str, str] = {}  # entry label name -> sanitised name, "" if dropped
        self._values: dict[str, set[str]] = {}
        self.dropped: set[str] = set()  # names past max_label_values
        self._cache: dict[GroupKey, tuple[str, Pairs, bool]] = {}

    def stream(self, group: Group) -> tuple[str, Pairs, bool]:
        """The label set of ``group``'s entries in Loki's syntax, its pairs sorted by
        name, and whether a name past ``max_label_values`` was left out of it."""
        key = group_key(group)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            found = self._cache[key] = self._build(group)
        return found

    def _name(self, name: str) -> str:
        clean = self._names.get(name)
        if clean is None:
            clean = sanitise(name)
            if clean and self._drop is not None and self._drop.fullmatch(clean.lower()):
                clean = ""
            self._names[name] = clean
        return clean

    def _build(self, group: Group) -> tuple[str, Pairs, bool]:
        chosen: dict[str, str] = {}
        if self.entry_labels:
            for name, value in sorted(group.labels.items()):
                clean = self._name(name)
                if clean and value and clean not in chosen:
                    chosen[clean] = value
        for name, render in self.templates.items():
            chosen[name] = render(group)
        pruned = False
        for name, value in list(chosen.items()):
            if not value:
                del chosen[name]
            elif name in self.dropped or self._too_many(name, value):
                del chosen[name]
                pruned = True
        if not chosen:  # Loki refuses a stream without labels
            chosen["source"] = group.source
        pairs = tuple(sorted(chosen.items()))
        return label_set(pairs), pairs, pruned

    def _too_many(self, name: str, value: str) -> bool:
        seen = self._values.setdefault(name, set())
        seen.add(value)
        if len(seen) <= self.max_values:
            return False
        log.warning(
            "loki label %r had more than %d distinct values: no longer sent (set "
            "max_label_values, or drop_labels to choose)",
            name,
            self.max_values,
        )
        self.dropped.add(name)
        del self._values[name]
        self._cache.clear()  # label sets built earlier still hold the name
        return True
