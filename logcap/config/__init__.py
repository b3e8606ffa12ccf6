"""Configuration: strict msgspec structs loaded from YAML.

The schema and loader are imported on first use: component config modules (which import
``logcap.config._base``) are themselves part of the schema, so importing them eagerly
here would be circular, and child processes never need the YAML loader at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from logcap.config._base import StrictStruct, component_type, doc
from logcap.config._units import ByteSize, Duration

if TYPE_CHECKING:
    from logcap.config._load import load_config, parse_config
    from logcap.config._schema import (
        ApiConfig,
        BufferConfig,
        Config,
        DispatcherConfig,
        DlqConfig,
        RetryConfig,
        SupervisorConfig,
    )

_LAZY = {
    "load_config": "_load",
    "parse_config": "_load",
    "ApiConfig": "_schema",
    "BufferConfig": "_schema",
    "Config": "_schema",
    "DispatcherConfig": "_schema",
    "SupervisorConfig": "_schema",
    "RetryConfig": "_schema",
    "DlqConfig": "_schema",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = [
    "ApiConfig",
    "BufferConfig",
    "ByteSize",
    "Config",
    "DispatcherConfig",
    "DlqConfig",
    "Duration",
    "RetryConfig",
    "StrictStruct",
    "SupervisorConfig",
    "component_type",
    "doc",
    "load_config",
    "parse_config",
]
