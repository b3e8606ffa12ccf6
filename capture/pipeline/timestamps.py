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
