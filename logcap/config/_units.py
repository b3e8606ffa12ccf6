"""Human units in config: durations (``200ms``, ``5s``, ``1h``) and sizes (``64KiB``, ``1MB``)."""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


MAX_DURATION = 36500 * 86400.0


class Duration(float):
    """Seconds, written in config as ``250ms``, ``5s``, ``2m``, ``1h`` (bare number: seconds)."""

    minimum: float | None = None
    exclusive_minimum: bool = False

    @classmethod
    def parse(cls, value: Any) -> Duration:
        if isinstance(value, bool):
            raise ValueError(f"expected a duration like '200ms' or '5s', got {value!r}")
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value)):
            if match.group(2) is None and value.strip() != match.group(1):
                raise ValueError(f"invalid duration {value!r}")
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
        else:
            raise ValueError(f"expected a duration like '200ms' or '5s', got {value!r}")
        if not math.isfinite(seconds):  # YAML's .nan and .inf are floats
            raise ValueError(f"a duration must be a finite number of seconds, got {value!r}")
        if seconds < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        if seconds > MAX_DURATION:  # threading and select refuse longer timeouts
            raise ValueError(f"a duration must be at most 36500d (100 years), got {value!r}")
        if cls.minimum is not None and (
            seconds <= cls.minimum if cls.exclusive_minimum else seconds < cls.minimum
        ):
            relation = "greater than" if cls.exclusive_minimum else "at least"
            raise ValueError(f"duration must be {relation} {cls.minimum}s, got {value!r}")
        return cls(seconds)


class ByteSize(int):
    """Bytes, written in config as ``64KiB``, ``1MiB``, ``10MB`` or a bare integer."""

    minimum: int | None = None
    maximum: int | None = None

    @classmethod
    def parse(cls, value: Any) -> ByteSize:
        if isinstance(value, bool):
            raise ValueError(f"expected a size like '64KiB', got {value!r}")
        if isinstance(value, int):
            size = value
        elif isinstance(value, str) and (match := _SIZE.match(value)):
            size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").lower()])
        else:
            raise ValueError(f"expected a size like '64KiB' or '10MB', got {value!r}")
        if size < 0:
            raise ValueError(f"a size cannot be negative, got {value!r}")
        if cls.minimum is not None and size < cls.minimum:
            raise ValueError(f"size must be at least {cls.minimum} bytes, got {value!r}")
        if cls.maximum is not None and size > cls.maximum:
            raise ValueError(f"size must be at most {cls.maximum} bytes, got {value!r}")
        return cls(size)


class PositiveDuration(Duration):
    """A :class:`Duration` that must be above zero (msgspec cannot bound custom types)."""

    minimum = 0.0
    exclusive_minimum = True


class BatchBytes(ByteSize):
    """Size of a batch: 4 KiB to 64 MiB."""

    minimum, maximum = 4096, 64 * 2**20


class SlotBytes(ByteSize):
    """Size of a collector ring slot: 8 KiB to 64 MiB."""

    minimum, maximum = 8192, 64 * 2**20


class HeapBytes(ByteSize):
    """Bytes the retry heap may hold: at least 64 KiB."""

    minimum = 64 * 1024


class DlqBytes(ByteSize):
    """A dead letter queue size: at least 64 KiB."""

    minimum = 64 * 1024


class BodyBytes(ByteSize):
    """An HTTP request body limit: 1 KiB to 1 GiB."""

    minimum, maximum = 1024, 2**30


class FileBytes(ByteSize):
    """A file size limit: at least 1 byte (0 would rotate before every write)."""

    minimum = 1


class LineBytes(ByteSize):
    """Longest line kept whole: at least 64 bytes."""

    minimum = 64


def dec_hook(kind: type, value: Any) -> Any:
    """msgspec hook that turns config text into :class:`Duration` / :class:`ByteSize`."""
    if isinstance(kind, type) and issubclass(kind, Duration | ByteSize):
        return kind.parse(value)
    raise NotImplementedError(f"no decoder for {kind!r}")


def enc_hook(value: Any) -> Any:
    """msgspec hook that writes :class:`Duration` / :class:`ByteSize` as plain numbers."""
    if isinstance(value, ByteSize):
        return int(value)
    if isinstance(value, Duration):
        return float(value)
    raise NotImplementedError(f"cannot encode {type(value)!r}")
