"""Multi-line events (stack traces): one rule, applied in two places.

* The collector never publishes half an event: it publishes blocks that end before the
  last event's first line and leaves that event *in the file* (its position stays before
  it) until a later event starts or ``timeout`` passes with no growth. Nothing is held in
  memory, so a crash only means reading it again.
* The dispatcher joins the lines of each block into events with the same rule.

A line *starts* an event if it matches ``start_pattern``, or — with
``continuation_pattern`` — if it does not match it. An event never grows past
``max_lines``; the next line then starts a new one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from logcap.capture.file.encoding import LineCodec

# Java: "java.lang.IllegalStateException: boom" under the log line, "\tat com.x.Y(Y.java:1)",
# "\t... 5 more", "Caused by: ...", "Suppressed: ..."
JAVA_CONTINUATION = r"^(?:\s|Caused by:|Suppressed:|[\w$.]*(?:Exception|Error|Throwable)(?::|$))"
# Python: indented frames, the "Traceback" header, chained-exception notes, the final
# "SomeError: message" line, and the blank lines between chained tracebacks
PYTHON_CONTINUATION = (
    r"^(?:$|\s|Traceback \(most recent call last\):|During handling of the above exception"
    r"|The above exception was the direct cause|[A-Za-z_][\w.]*(?:Error|Exception|Exit"
    r"|Interrupt|Warning|Iteration)\b)"
)
PRESETS = {"java": JAVA_CONTINUATION, "python": PYTHON_CONTINUATION}


@dataclass(frozen=True)
class MultilineRule:
    """When a line starts a new event."""

    pattern: re.Pattern[str]
    pattern_starts: bool  # True: a match starts an event; False: a match continues one
    max_lines: int

    @classmethod
    def build(
        cls,
        start_pattern: str | None,
        continuation_pattern: str | None,
        preset: str | None,
        max_lines: int,
    ) -> MultilineRule:
        """From the config's three mutually exclusive ways of saying it."""
        if start_pattern is not None:
            return cls(re.compile(start_pattern), True, max_lines)
        return cls(re.compile(continuation_pattern or PRESETS[preset or ""]), False, max_lines)

    def starts(self, line: str) -> bool:
        """Whether ``line`` begins a new event."""
        return bool(self.pattern.match(line)) == self.pattern_starts

    def join(self, lines: list[str]) -> list[str]:
        """The events of a block of whole events, each its lines joined with ``\\n``."""
        events: list[str] = []
        current: list[str] = []
        for line in lines:
            if current and len(current) < self.max_lines and not self.starts(line):
                current.append(line)
            else:
                if current:
                    events.append("\n".join(current))
                current = [line]
        if current:
            events.append("\n".join(current))
        return events

    def last_event_start(self, block: bytes, codec: LineCodec) -> int:
        """Offset in ``block`` (whole lines) of the first line of its last event, as
        :meth:`join` would cut it: back to the last line that starts an event, then
        forward in steps of ``max_lines``."""
        starts: list[int] = []  # line offsets from the end back to a starting line
        end = len(block) - len(codec.newline)  # the newline of the last line
        while end > 0:
            start = codec.rfind(block[:end])  # just past the previous newline (0 if none)
            starts.append(start)
            if self.starts(block[start:end].decode(codec.name, "replace")):
                break
            end = start - len(codec.newline)
        if not starts:
            return 0
        starts.reverse()  # from the event's first line forward
        return starts[(len(starts) - 1) // self.max_lines * self.max_lines]
