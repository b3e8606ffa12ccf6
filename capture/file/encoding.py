"""Text encodings of input files: how to find line ends in raw bytes, before decoding.

In UTF-8 and in the ASCII-compatible multi-byte encodings (Shift JIS, GB18030, EUC-JP…)
the byte 0x0A never occurs inside another character, so a newline is found with a plain
search. In UTF-16 and UTF-32 it can (U+0A00 is ``00 0A`` in UTF-16-LE), so a newline is
the encoded code unit, found only at offsets aligned to the unit size.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

_WIDE = {"utf-16-le": 2, "utf-16-be": 2, "utf-32-le": 4, "utf-32-be": 4}
_AMBIGUOUS = {"utf-16", "utf-32"}  # byte order from a BOM: say which one instead


@dataclass(frozen=True)
class LineCodec:
    """The newline of an encoding and the unit it must be aligned to."""

    name: str
    newline: bytes
    unit: int

    def rfind(self, data: bytes) -> int:
        """Offset just past the last aligned newline in ``data``, or 0 if there is none."""
        end = len(data)
        while True:
            at = data.rfind(self.newline, 0, end)
            if at < 0:
                return 0
            if at % self.unit == 0:
                return at + len(self.newline)
            end = at + len(self.newline) - 1

    def find(self, data: bytes, start: int = 0) -> int:
        """Offset of the first aligned newline at or after ``start`` (aligned), or -1."""
        at = start
        while True:
            at = data.find(self.newline, at)
            if at < 0 or at % self.unit == 0:
                return at
            at += 1

    def count(self, data: bytes, end: int) -> int:
        """Aligned newlines in ``data[:end]``."""
        if self.unit == 1:
            return data.count(self.newline, 0, end)
        block = data[:end]
        count, at = 0, self.find(block)
        while at >= 0:
            count += 1
            at = self.find(block, at + len(self.newline))
        return count


def line_codec(name: str) -> LineCodec:
    """The :class:`LineCodec` for a Python codec name; ValueError if unusable for logs."""
    try:
        info = codecs.lookup(name)
    except LookupError as exc:
        raise ValueError(f"unknown encoding {name!r}") from exc
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{name!r} is not a text encoding")
    if info.name in _AMBIGUOUS:
        raise ValueError(
            f"{name!r} leaves the byte order open: use {info.name}-le or "
            f"{info.name}-be (a BOM at the start of a file is dropped)"
        )
    unit = _WIDE.get(info.name, 1)
    return LineCodec(info.name, "\n".encode(info.name), unit)
