"""Config of the ``file`` sink."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from logcap.config._base import doc, resolve_path
from logcap.config._units import FileBytes, PositiveDuration
from logcap.sinks.breaker import SinkConfigBase
from logcap.sinks.file.text import compile_template
from logcap.sinks.template import template_fields, template_problems, uses_level

if TYPE_CHECKING:
    from logcap.metrics import CounterBlock
    from logcap.sinks.base import Sink


class FileSinkConfig(SinkConfigBase, tag_field="type", tag="file", frozen=True):
    """Append entries as JSON lines (or template text) to files named by a template."""

    path: Annotated[
        str,
        doc(
            "Output file template: '{source}', '{level}', '{labels.NAME}', "
            "'{fields.NAME[.SUB]}' (a value the entries lack is 'unknown'; characters "
            "other than letters, digits, '.', '_' and '-' become '_', so a value never "
            "leaves its directory), strftime fields ('%Y-%m-%d') use the entry's "
            "timestamp in UTC. Relative paths resolve against the config file's directory.",
            min_length=1,
        ),
    ]
    format: Annotated[
        Literal["json", "text"],
        doc(
            "'json': each entry as the JSON line the pipeline encoded (written as it is, "
            "the fast path); 'text': each entry rendered with text_template."
        ),
    ] = "json"
    text_template: Annotated[
        Annotated[str, msgspec.Meta(min_length=1)] | None,
        doc(
            "With format: text, the line written per entry: '{timestamp}', "
            "'{ingested_at}', '{source}', '{message}', '{level}', '{labels.NAME}', "
            "'{fields.NAME[.SUB]}' (empty when the entry lacks it); '{{' and '}}' are "
            "literal braces. E.g. '{timestamp} {level} {labels.host} {message}'."
        ),
    ] = None
    max_file_bytes: Annotated[
        FileBytes | None,
        doc(
            "Rotate a file before it would grow past this size: it is renamed to "
            "'<path>.<n>' (n counts up) and a new one is started. Null: never rotate.",
        ),
    ] = None
    rotate_every: Annotated[
        PositiveDuration | None,
        doc(
            "Rotate a non-empty file before the first write that finds it opened longer "
            "ago than this (e.g. '1h'). Its age counts from when this sink process first "
            "opened it (created it, or found it at start), so a restart begins a new "
            "period and an idle file is rotated by the next write to it. Null: never.",
        ),
    ] = None
    compression: Annotated[
        Literal["none", "gzip", "zstd"],
        doc(
            "Compress rotated files in the background to '<path>.<n>.gz' / '.zst' "
            "(written to a temporary name, synced and renamed before the original is "
            "deleted, so a crash never loses a rotated file)."
        ),
    ] = "none"
    max_files: Annotated[
        Annotated[int, msgspec.Meta(ge=1)] | None,
        doc(
            "Keep at most this many rotated files per output file, deleting the oldest "
            "(lowest n). Null: keep all."
        ),
    ] = None
    fsync: Annotated[
        Literal["never", "batch", "interval"],
        doc(
            "When written data is forced to disk: 'batch' before a batch is acknowledged "
            "(nothing acknowledged is lost on power failure), 'interval' at most every "
            "fsync_interval (when batches are acknowledged), 'never' (the OS decides)."
        ),
    ] = "never"
    fsync_interval: Annotated[PositiveDuration, doc("With fsync: interval, how often.")] = (
        PositiveDuration(1.0)
    )

    def check(self) -> list[tuple[tuple[str, ...], str]]:
        """Cross-field rules (pure): every problem, each at its key."""
        problems: list[tuple[tuple[str, ...], str]] = []
        for problem in template_problems(self.path):
            problems.append((("path",), f"{problem}; dates use strftime fields such as '%Y-%m-%d'"))
        if self.format == "text":
            if self.text_template is None:
                problems.append((("text_template",), "format: text needs a text_template"))
            else:
                try:
                    compile_template(self.text_template)
                except ValueError as exc:
                    problems.append((("text_template",), str(exc)))
        elif self.text_template is not None:
            problems.append((("text_template",), "is only used with format: text"))
        rotates = self.max_file_bytes is not None or self.rotate_every is not None
        for key in ("compression", "max_files"):
            if not rotates and getattr(self, key) not in ("none", None):
                problems.append(
                    ((key,), "compression and max_files need max_file_bytes or rotate_every")
                )
        return problems

    def routed_fields(self) -> set[str]:
        """The fields the path template names."""
        return template_fields(self.path)

    def routes_by_level(self) -> bool:
        """'{level}' in the path (text_template renders each entry's own)."""
        return uses_level(self.path)

    def inapplicable(self) -> dict[str, str]:
        """Keys that cannot apply with these settings (an error if the config sets them)."""
        if self.fsync != "interval":
            return {"fsync_interval": f"only applies with fsync: interval (fsync is {self.fsync})"}
        return {}

    def with_base(self, base: Path) -> FileSinkConfig:
        """Resolve a relative path template against ``base``."""
        return msgspec.structs.replace(self, path=resolve_path(base, self.path))

    def build(self, counters: CounterBlock) -> Sink:
        """The sink this config describes. Opens no file until the first batch."""
        from logcap.sinks.file.sink import FileSink

        return FileSink(self, counters)
