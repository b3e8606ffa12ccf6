"""Configuration: strict msgspec structs loaded from YAML."""

from logcap.config._base import StrictStruct, component_type, doc
from logcap.config._load import load_config, parse_config
from logcap.config._schema import (
    ApiConfig,
    BufferConfig,
    Config,
    DispatcherConfig,
    SupervisorConfig,
)
from logcap.config._units import ByteSize, Duration

__all__ = [
    "ApiConfig",
    "BufferConfig",
    "ByteSize",
    "Config",
    "DispatcherConfig",
    "Duration",
    "StrictStruct",
    "SupervisorConfig",
    "component_type",
    "doc",
    "load_config",
    "parse_config",
]
