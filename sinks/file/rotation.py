"""Names of rotated files, and finding them again.

An output file ``<path>`` is rotated by renaming it to ``<path>.<n>``, ``n`` one higher
than any rotation of it that exists; compression turns ``<path>.<n>`` into
``<path>.<n>.gz`` (or ``.zst``) by way of ``<path>.<n>.gz.tmp`` (see compress.py). The
higher ``n``, the newer the file.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from dataclasses import dataclass

from logcap.sinks.template import PLACEHOLDER

SUFFIXES = {"gzip": ".gz", "zstd": ".zst"}
_ROTATED = re.compile(r"^(?P<base>.+)\.(?P<n>\d+)(?P<ext>\.gz|\.zst)?(?P<tmp>\.tmp)?$")
_STRFTIME = re.compile(r"%.")


@dataclass(frozen=True)
class Rotated:
    """One file of a rotation family: ``<base>.<n>[.gz|.zst][.tmp]``."""

    path: str
    n: int
    ext: str  # "" (not compressed), ".gz" or ".zst"
    tmp: bool  # a compression in progress (or interrupted by a crash)


def rotated_files(path: str) -> list[Rotated]:
    """Every rotated file of ``path`` (temporaries included), oldest first."""
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _ROTATED.match(name)
        if match and match.group("base") == base:
            found.append(
                Rotated(
                    os.path.join(directory, name),
                    int(match.group("n")),
                    match.group("ext") or "",
                    match.group("tmp") is not None,
                )
            )
    found.sort(key=lambda r: (r.n, r.ext, r.tmp))
    return found


def highest_number(path: str) -> int:
    """The highest ``n`` any rotated file of ``path`` carries (0: none)."""
    return max((r.n for r in rotated_files(path)), default=0)


def expired(files: list[Rotated], keep: int) -> list[Rotated]:
    """The finished rotated files beyond the newest ``keep`` (what retention deletes)."""
    numbers = sorted({r.n for r in files if not r.tmp})
    old = set(numbers[: max(0, len(numbers) - keep)])
    return [r for r in files if r.n in old and not r.tmp]


def interrupted(files: list[Rotated]) -> bool:
    """Whether a compression among ``files`` was cut short (a temporary is left, or an
    original beside its compressed copy)."""
    compressed = {r.n for r in files if r.ext and not r.tmp}
    return any(r.tmp or (not r.ext and r.n in compressed) for r in files)


def families(template: str) -> set[str]:
    """Output paths of ``template`` that have rotated files on disk (found at start, so
    work a previous run left unfinished is done even for paths no longer written to)."""
    pattern = glob.escape(PLACEHOLDER.sub("\0", template))
    pattern = _STRFTIME.sub("*", pattern.replace("\0", "*"))
    found = set()
    for name in glob.glob(pattern + ".*"):
        match = _ROTATED.match(name)
        if match and fnmatch.fnmatchcase(match.group("base"), pattern):
            found.add(match.group("base"))
    return found
