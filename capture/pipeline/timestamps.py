"""Event times from text or numbers: the formats ``timestamp_parse`` tries, in order.

``rfc3339`` (also ISO 8601 with a space, and ``Z``), ``unix`` (seconds, may be
fractional), ``unix_ms``, ``unix_ns``, or a strptime pattern (it contains ``%``). A time
without an offset is taken in the step's ``timezone``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NAMED = ("rfc3339", "unix", "unix_ms", "unix_ns")
Parser = Callable[[object], int | None]


def check_format(fmt: str) -> str | None:
    """Why ``fmt`` is not a format, or None."""
    if fmt in NAMED:
        return None
    if "%" not in fmt:
        return f"'{fmt}' is not one of {', '.join(NAMED)} nor a strptime pattern (with %)"
    try:
        datetime.strptime(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).strftime(fmt), fmt)
    except ValueError as exc:
        return f"not a strptime pattern: {exc}"
    return None


def check_zone(name: str) -> str | None:
    """Why ``name`` is not a time zone, or None."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone '{name}' (an IANA name such as UTC or Europe/Paris)"
    return None


def _aware_ns(moment: datetime, zone: tzinfo) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    seconds = int(moment.timestamp())
    return seconds * 1_000_000_000 + moment.microsecond * 1000


_seconds_of: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" (as UTC) -> epoch seconds


def _rfc3339_with_offset(value: str) -> int | None:
    """The common RFC 3339 shapes (``…T…[.fraction](Z|±HH:MM)``) without a datetime: the
    part up to the second is parsed once per second and cached. None: not this shape
    (then datetime.fromisoformat decides)."""
    if len(value) < 20 or value[10] not in "Tt ":
        return None
    if value[-1] in "Zz":
        offset, body = 0, value[19:-1]
    elif value[-6] in "+-" and value[-3] == ":" and value[-5:-3].isdigit() and value[-2:].isdigit():
        offset = int(value[-5:-3]) * 3600 + int(value[-2:]) * 60
        offset, body = (offset if value[-6] == "+" else -offset), value[19:-6]
    else:
        return None
    if not body:
        fraction = 0
    elif body[0] == "." and 1 < len(body) <= 10 and body[1:].isdigit():
        fraction = int(body[1:].ljust(9, "0"))
    else:
        return None
    head = value[:19]
    seconds = _seconds_of.get(head)
    if seconds is None:
        try:
            seconds = int(datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp())
        except ValueError:
            return None
        if len(_seconds_of) >= 4096:
            _seconds_of.clear()
        _seconds_of[head] = seconds
    return (seconds - offset) * 1_000_000_000 + fraction


def parser(fmt: str, zone_name: str) -> Parser:
    """A function from a member's value to nanoseconds since the epoch (None: no match)."""
    zone = ZoneInfo(zone_name)
    factor = {"unix": 10**9, "unix_ms": 10**6, "unix_ns": 1}.get(fmt)
    if factor is not None:

        def number(value: object) -> int | None:
            if isinstance(value, bool):
                return None
            if isinstance(value, str):  # exact: no float rounding of the digits
                try:
                    return int(Decimal(value.strip()) * factor)
                except (InvalidOperation, ValueError):
                    return None
            if isinstance(value, int):
                return value * factor
            if isinstance(value, float) and math.isfinite(value):
                whole = int(value)
                return whole * factor + round((value - whole) * factor)
            return None

        return number
    if fmt == "rfc3339":

        def iso(value: object) -> int | None:
            if not isinstance(value, str):
                return None
            fast = _rfc3339_with_offset(value)
            if fast is not None:
                return fast
            try:
                return _aware_ns(datetime.fromisoformat(value), zone)
            except ValueError:
                return None

        return iso

    def pattern(value: object) -> int | None:
        if not isinstance(value, str):
            return None
        try:
            return _aware_ns(datetime.strptime(value, fmt), zone)
        except ValueError:
            return None

    return pattern
