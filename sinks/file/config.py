"""Config of the ``file`` sink."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from logcap.config._base import StrictStruct, doc, resolve_path
from logcap.config._units import ByteSize


class FileSinkConfig(StrictStruct, tag_field="type", tag="file", frozen=True):
    """Append entries as JSON lines to files named by a template."""

    path: Annotated[
        str,
        doc(
            "Output file template: '{source}' is the source name, strftime fields "
            "('%Y-%m-%d') use the entry's timestamp in UTC. Relative paths resolve "
            "against the config file's directory.",
            min_length=1,
        ),
    ]
    max_file_bytes: Annotated[
        ByteSize | None,
        doc(
            "Rotate a file before it would grow past this size: it is renamed to "
            "'<path>.<n>' (n counts up) and a new one is started. Null: never rotate.",
        ),
    ] = None

    def with_base(self, base: Path) -> FileSinkConfig:
        """Resolve a relative path template against ``base``."""
        return msgspec.structs.replace(self, path=resolve_path(base, self.path))
