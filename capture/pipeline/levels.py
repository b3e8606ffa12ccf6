"""Log levels, normalised: what ``level_extract`` turns the many spellings into.

| written (any case)                        | level       |
|-------------------------------------------|-------------|
| trace, trc, finest, finer                 | `trace`     |
| debug, dbg, fine, d, 7                    | `debug`     |
| info, information, informational, inf, i, 6 | `info`    |
| notice, ntc, 5                            | `notice`    |
| warn, warning, wrn, w, 4                  | `warning`   |
| error, err, eror, e, severe, 3            | `error`     |
| critical, crit, crt, fatal, ftl, f, c, 2  | `critical`  |
| alert, alrt, a, 1                         | `alert`     |
| emergency, emerg, panic, 0                | `emergency` |

Numbers are syslog severities. A value not in the table is an error of the step
(counted; the entry keeps the level it had).
"""

from __future__ import annotations

_SPELLINGS = {
    "trace": ("trace", "trc", "finest", "finer"),
    "debug": ("debug", "dbg", "fine", "d", "7"),
    "info": ("info", "information", "informational", "inf", "i", "6"),
    "notice": ("notice", "ntc", "5"),
    "warning": ("warn", "warning", "wrn", "w", "4"),
    "error": ("error", "err", "eror", "e", "severe", "3"),
    "critical": ("critical", "crit", "crt", "fatal", "ftl", "f", "c", "2"),
    "alert": ("alert", "alrt", "a", "1"),
    "emergency": ("emergency", "emerg", "panic", "0"),
}
LEVELS = {
    written: level
    for level, spellings in _SPELLINGS.items()
    for spelling in spellings
    for written in (spelling, spelling.upper(), spelling.title())
}


def normalise(value: object) -> str | None:
    """The level ``value`` spells, or None if it spells none."""
    if isinstance(value, bool):
        return None
    text = str(value).strip().lower() if isinstance(value, str | int) else ""  # any case
    return LEVELS.get(text)
