"""The DLQ directory: segment names, numbers that are never reused, creating a segment.

``<data_dir>/dlq`` (mode 0700: the records hold log contents; every file 0600)::

    0000000000000007.dlq            a segment (record.py); numbers only grow
    0000000000000007.dlq.replayed   which of its records were replayed (marks.py)
    0000000000000008.dlq.tmp        a segment being created: its header is written and
                                    fsynced under this name, then renamed into place, so a
                                    ``.dlq`` file never exists without its header
    last-segment                    the highest number ever given to a segment: ASCII
                                    decimal digits and a newline, replaced atomically

Why numbers are never reused: a ``.replayed`` sidecar can outlive its segment (a kill
between the two unlinks, a replay marking a segment that max_age just deleted); a new
segment of the same name would inherit its marks, and purge would delete it unreplayed.
So ``last-segment`` is advanced (and fsynced) before a segment is created, and a new
number is also past every name in the directory (a lost ``last-segment`` is no danger
while a sidecar survives). Leftovers (``.tmp`` files, sidecars without a segment) are
removed when a writer opens the directory; readers ignore them.

Any other ``*.dlq`` name is not a segment: it is reported and ignored, never parsed.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

from logcap.durable import fsync_directory

log = logging.getLogger(__name__)

SUFFIX = ".dlq"
REPLAYED_SUFFIX = ".replayed"
TMP_SUFFIX = ".tmp"
HIGH_WATER = "last-segment"
_NAME = re.compile(r"(\d{16})\.dlq")
_ANY_NUMBERED = re.compile(r"(\d{16})\.dlq(?:\.replayed|\.tmp)?")
_DIGITS = 16


def dlq_directory(data_dir: str | os.PathLike[str]) -> Path:
    """Where the dead letter queue's segments live."""
    return Path(data_dir) / "dlq"


def segment_name(number: int) -> str:
    """The file name of segment ``number``."""
    return f"{number:0{_DIGITS}d}{SUFFIX}"


def segment_number(path: Path) -> int | None:
    """The number in a segment's name; None if the name is not a segment's."""
    match = _NAME.fullmatch(path.name)
    return int(match.group(1)) if match else None


def segment_paths(directory: Path, strays: list[Path] | None = None) -> list[Path]:
    """Segments oldest first (by number); other ``*.dlq`` entries go to ``strays``."""
    found: list[tuple[int, Path]] = []
    for path in directory.glob(f"*{SUFFIX}"):
        number = segment_number(path)
        if number is None or not _is_file(path):
            if strays is not None:
                strays.append(path)
            continue
        found.append((number, path))
    if strays is not None:
        strays.sort()
    return [path for _, path in sorted(found)]


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def marks_path(segment: Path) -> Path:
    """The ``.replayed`` sidecar of ``segment``."""
    return segment.with_name(segment.name + REPLAYED_SUFFIX)


def ensure_directory(directory: Path) -> None:
    """Create ``directory`` owner-only, and take group and world access from an existing
    one (earlier versions created it 0755)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(directory, mode & 0o700)
        except OSError as exc:
            log.warning(
                "DLQ directory %s is %o and cannot be made owner-only: %s", directory, mode, exc
            )
        else:
            log.info("DLQ directory %s made owner-only (it was %o)", directory, mode)


def read_high_water(directory: Path) -> int:
    """The number in ``last-segment``; 0 if missing or unreadable (reported)."""
    try:
        text = (directory / HIGH_WATER).read_text("ascii")
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("DLQ %s unreadable (%s); numbering follows the file names", HIGH_WATER, exc)
        return 0
    if not text.endswith("\n") or not text[:-1].isdigit():
        log.warning("DLQ %s damaged (%r); numbering follows the file names", HIGH_WATER, text)
        return 0
    return int(text)


def highest_number(directory: Path) -> int:
    """The highest number ever used here: ``last-segment`` or any numbered name."""
    highest = read_high_water(directory)
    for path in directory.iterdir():
        match = _ANY_NUMBERED.fullmatch(path.name)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest


def write_high_water(directory: Path, number: int) -> None:
    """Record durably that ``number`` is used (temp file, fsync, rename, fsync directory)."""
    _write_durably(directory, HIGH_WATER, f"{number:0{_DIGITS}d}\n".encode())


def create_segment(directory: Path, number: int, header: bytes) -> Path:
    """Create segment ``number`` holding ``header``: written and fsynced under a temporary
    name, then renamed into place. On failure nothing named ``*.dlq`` is left behind."""
    path = directory / segment_name(number)
    marks_path(path).unlink(missing_ok=True)  # a sidecar can only be a leftover
    _write_durably(directory, path.name, header)
    return path


def _write_durably(directory: Path, name: str, data: bytes) -> None:
    tmp = directory / (name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {tmp}")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(directory)


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete ``.tmp`` files and sidecars whose segment is gone; return what was removed."""
    removed = []
    for path in directory.iterdir():
        if path.name.endswith(SUFFIX + TMP_SUFFIX) or path.name == HIGH_WATER + TMP_SUFFIX:
            orphan = True
        elif path.name.endswith(SUFFIX + REPLAYED_SUFFIX):
            orphan = not path.with_name(path.name[: -len(REPLAYED_SUFFIX)]).exists()
        else:
            orphan = False
        if orphan:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
