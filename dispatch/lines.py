"""A block of whole lines → the messages of its entries, ready to encode.

Decoding (the source's encoding, invalid bytes replaced, a byte-order mark at a file's
start dropped), joining lines into multi-line events, and enforcing ``max_line_bytes``
(cut or skip) happen here, once per block, in the dispatcher.
"""

from __future__ import annotations

from logcap.capture.file.multiline import MultilineRule
from logcap.dispatch.encode import truncate_encoded


def block_messages(
    data: memoryview,
    at_file_start: bool,
    encoding: str,
    multiline: MultilineRule | None,
    max_line_bytes: int,
    skip_long_lines: bool,
) -> tuple[list[str], int]:
    """The messages of a block, and how many were over ``max_line_bytes``."""
    text = str(data, encoding, "replace")
    if at_file_start and text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is not part of the first line
    lines = text.split("\n")
    lines.pop()  # a block always ends with a newline
    if multiline is not None:
        lines = multiline.join(lines)
    overlong = limit_line_length(lines, text, len(data), max_line_bytes, skip_long_lines, encoding)
    return lines, overlong


def limit_line_length(
    lines: list[str],
    text: str,
    raw_len: int,
    limit: int,
    skip: bool = False,
    encoding: str = "utf-8",
) -> int:
    """Cut (or with ``skip`` drop) lines over ``limit`` bytes as read; return how many."""
    if raw_len <= limit or not lines or max(map(len, lines)) <= limit // 4:
        return 0
    ascii_only = encoding == "utf-8" and len(text) == raw_len  # characters == bytes
    over = [
        i
        for i, line in enumerate(lines)
        if len(line) > limit // 4
        and (len(line) if ascii_only else len(line.encode(encoding, "replace"))) > limit
    ]
    for i in reversed(over) if skip else over:
        if skip:
            del lines[i]
        else:
            lines[i] = (
                lines[i][:limit] if ascii_only else truncate_encoded(lines[i], limit, encoding)
            )
    return len(over)
