"""Config of the ``file`` source."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec

from logcap.capture.base import Problems, line_fits_slot
from logcap.capture.file.encoding import line_codec
from logcap.capture.file.multiline import MultilineRule
from logcap.capture.labels import LABELS_DOC, LabelName, PathLabels, check_path_labels, check_static
from logcap.capture.ratelimit import RATE_LIMIT_DOC, RateLimitConfig
from logcap.config._base import StrictStruct, doc, resolve_path
from logcap.config._units import LineBytes, PositiveDuration

if TYPE_CHECKING:
    from logcap.capture.base import Collector, CollectorEnv


class MultilineConfig(StrictStruct, frozen=True):
    """Joining lines into events (stack traces); exactly one of the three ways to say when
    a line starts a new event."""

    start_pattern: Annotated[
        str | None, doc("A line matching this regular expression starts a new event.")
    ] = None
    continuation_pattern: Annotated[
        str | None,
        doc(
            "A line matching this regular expression continues the previous event; any "
            "other line starts a new one."
        ),
    ] = None
    preset: Annotated[
        Literal["java", "python"] | None,
        doc("A built-in continuation rule for Java or Python stack traces."),
    ] = None
    timeout: Annotated[
        PositiveDuration,
        doc("The last event of a file is sent once the file has not grown for this long."),
    ] = PositiveDuration(1.0)
    max_lines: Annotated[
        int,
        doc(
            "An event never holds more lines than this; the next line starts a new one.",
            ge=2,
            le=100_000,
        ),
    ] = 500


class FileSourceConfig(StrictStruct, tag_field="type", tag="file", frozen=True):
    """Tail files matching glob patterns; positions survive restarts."""

    #: what every entry of a file is labelled with (static labels cannot replace them)
    BUILT_IN_LABELS: ClassVar[frozenset[str]] = frozenset({"host", "path", "file_name"})

    include: Annotated[
        list[str],
        doc(
            "Glob patterns of files to read; '**' matches any depth. Relative patterns "
            "resolve against the config file's directory.",
            min_length=1,
        ),
    ]
    exclude: Annotated[
        list[str], doc("Glob patterns of files never to read, matched against full paths.")
    ] = []
    read_from: Annotated[
        Literal["beginning", "end"],
        doc(
            "On the source's first run (no checkpoint yet), where to start in the files "
            "already there: their first byte or their end. Files that appear later, or "
            "on a restart, are always read from their first byte."
        ),
    ] = "beginning"
    max_line_bytes: Annotated[
        LineBytes,
        doc(
            "Lines longer than this are truncated to it (and counted); must fit a "
            "collector ring slot."
        ),
    ] = LineBytes(64 * 1024)
    encoding: Annotated[
        str,
        doc(
            "Text encoding of the files, any Python codec name ('utf-8', 'utf-16-le', "
            "'latin-1', 'shift_jis', ...). Invalid bytes become U+FFFD; a byte-order mark "
            "at the start of a file is dropped."
        ),
    ] = "utf-8"
    multiline: Annotated[
        MultilineConfig | None, doc("Join continuation lines into one event. Null: off.")
    ] = None
    long_lines: Annotated[
        Literal["truncate", "skip"],
        doc(
            "What happens to a line longer than max_line_bytes: cut to that length, or "
            "dropped whole; either way it is counted."
        ),
    ] = "truncate"
    fingerprint_bytes: Annotated[
        int,
        doc(
            "A file is known by device and inode, checked against a checksum of its first "
            "this many bytes, so a rename keeps its position and a reused inode is not "
            "taken for the old file.",
            ge=16,
            le=65536,
        ),
    ] = 256
    ignore_older: Annotated[
        PositiveDuration | None,
        doc(
            "Files not modified for this long (and not checkpointed) are not read until "
            "they are written again. Null: read every matching file."
        ),
    ] = None
    glob_interval: Annotated[
        PositiveDuration, doc("How often include patterns are re-expanded to find new files.")
    ] = PositiveDuration(1.0)
    poll_interval: Annotated[
        PositiveDuration,
        doc(
            "How often known files are checked for new data when no file-system event "
            "arrives (the fallback when inotify misses a change)."
        ),
    ] = PositiveDuration(0.25)
    watch: Annotated[
        bool,
        doc(
            "Use file-system notifications (watchdog/inotify) to react at once; when "
            "false only polling is used."
        ),
    ] = True

    labels: Annotated[dict[LabelName, str], doc(LABELS_DOC)] = {}
    pipelines: Annotated[
        list[str],
        doc(
            "Names of pipelines (top-level `pipelines`) run on this source's entries, in "
            "order, in its collector process."
        ),
    ] = []
    rate_limit: Annotated[
        RateLimitConfig | None,
        doc(RATE_LIMIT_DOC),
    ] = None
    path_labels: Annotated[
        str | None,
        doc(
            "A regular expression searched in each file's path; its named groups become "
            "labels, e.g. '/var/log/(?P<service>[^/]+)/' (at most 8 groups, values cut to "
            "256 characters; a path it does not match gets none)."
        ),
    ] = None

    def with_base(self, base: Path) -> FileSourceConfig:
        """Resolve relative patterns against ``base``."""
        return msgspec.structs.replace(
            self,
            include=[resolve_path(base, p) for p in self.include],
            exclude=[resolve_path(base, p) for p in self.exclude],
        )

    def check(self, collector_slot_bytes: int) -> Problems:
        """Cross-field rules (pure): the line fits a slot, the codec and patterns exist."""
        problems = line_fits_slot(self.max_line_bytes, collector_slot_bytes)
        problems += check_static(self.labels, self.BUILT_IN_LABELS)
        problems += check_path_labels(self.path_labels, self.BUILT_IN_LABELS | set(self.labels))
        try:
            line_codec(self.encoding)
        except ValueError as exc:
            problems.append((("encoding",), str(exc)))
        m = self.multiline
        if m is not None:
            ways = (m.start_pattern, m.continuation_pattern, m.preset)
            if sum(way is not None for way in ways) != 1:
                one_of = "set exactly one of start_pattern, continuation_pattern, preset"
                problems.append((("multiline",), one_of))
            for key in ("start_pattern", "continuation_pattern"):
                try:
                    re.compile(getattr(m, key) or "")
                except re.error as exc:
                    problems.append((("multiline", key), f"not a regular expression: {exc}"))
        return problems

    def build(self, env: CollectorEnv) -> Collector:
        """The collector that tails this source's files."""
        from logcap.capture.file.collector import FileCollector

        return FileCollector(
            env.name,
            self,
            env.producer,
            env.counters,
            env.checkpoints(),
            should_stop=env.should_stop,
            started_marker=env.started_marker,
            processor=env.processor(),
        )

    def line_rules(self, collector_slot_bytes: int) -> dict[str, Any]:
        """How the dispatcher cuts this source's blocks into entries."""
        return {
            "max_line_bytes": self.max_line_bytes,
            "skip_long_lines": self.long_lines == "skip",
            "encoding": line_codec(self.encoding).name,
            "multiline": multiline_rule(self),
            "static_labels": dict(self.labels),
            "path_labels": None if self.path_labels is None else PathLabels(self.path_labels),
            "byte_positions": True,
        }

    def longest_entry_bytes(self, collector_slot_bytes: int) -> int:
        """Encoded bytes of the longest entry: each byte escaped to at most 6. With
        pipelines, an entry (message, fields and all) is bounded by a collector slot
        instead (capture/file/entries.py keeps it within one)."""
        return 6 * int(collector_slot_bytes if self.pipelines else self.max_line_bytes)


def multiline_rule(config: FileSourceConfig) -> MultilineRule | None:
    """The compiled multiline rule of a (validated) source config, or None."""
    m = config.multiline
    if m is None:
        return None
    return MultilineRule.build(m.start_pattern, m.continuation_pattern, m.preset, m.max_lines)
