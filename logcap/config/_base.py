"""Shared pieces of every config struct: strictness, field descriptions, path resolution."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import msgspec


class StrictStruct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base for config structs: unknown keys are errors, values are immutable."""


def doc(text: str, **limits: Any) -> msgspec.Meta:
    """A field's description (shown by ``logcap validate`` docs and checked by tests)."""
    return msgspec.Meta(description=text, **limits)


ComponentName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z",
        description="A component name: letters, digits, '_', '-', '.'",
    ),
]


def resolve_path(base: Path, value: str) -> str:
    """Make a config path absolute against the config file's directory (systemd runs in /)."""
    expanded = os.path.expanduser(value)
    return expanded if os.path.isabs(expanded) else os.path.normpath(base / expanded)


def component_type(config: msgspec.Struct) -> str:
    """The ``type`` tag a source or sink config was declared with (``file``, ...)."""
    return str(config.__struct_config__.tag)
