"""Delivered source positions on disk: written atomically, checksummed, with a fallback copy.

File format (``<data_dir>/checkpoints.json``)::

    LOGCAPCK1 <crc32 of body, 8 hex digits> <body length in bytes>\\n
    <body: msgspec JSON of Positions>

Writing: temp file → fsync → current renamed to ``.prev`` → temp renamed to current →
fsync of the directory. A torn, truncated or tampered file fails its length or checksum;
the loader then reports it and falls back to ``.prev`` (or to nothing), never crashing.
Only the dispatcher writes this file, and only positions every sink has acknowledged.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import msgspec

from logcap.durable import fsync_directory
from logcap.errors import CheckpointCorrupt

log = logging.getLogger(__name__)
MAGIC = b"LOGCAPCK1"
FILE_NAME = "checkpoints.json"


class FilePosition(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """How far one file has been delivered. A file is known by ``dev``/``ino`` checked
    against ``fingerprint`` (see capture/file/identity.py); ``path`` is where it was last
    seen, for people reading the file."""

    source: str
    path: str
    dev: int
    ino: int
    offset: int
    fingerprint: int = 0


class Positions(msgspec.Struct):
    """Everything in a checkpoint file."""

    version: int = 1
    files: list[FilePosition] = []


def _encode(positions: Positions) -> bytes:
    body = msgspec.json.encode(positions)
    return b"%s %08x %d\n%s" % (MAGIC, zlib.crc32(body), len(body), body)


def _decode(raw: bytes, where: Path) -> Positions:
    head, sep, body = raw.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 3 or parts[0] != MAGIC:
        raise CheckpointCorrupt(f"{where}: not a logcap checkpoint (bad header)")
    try:
        crc, length = int(parts[1], 16), int(parts[2])
    except ValueError as exc:
        raise CheckpointCorrupt(f"{where}: bad header {head!r}") from exc
    if len(body) != length:
        raise CheckpointCorrupt(f"{where}: truncated ({len(body)} of {length} bytes)")
    if zlib.crc32(body) != crc:
        raise CheckpointCorrupt(f"{where}: checksum mismatch")
    try:
        return msgspec.json.decode(body, type=Positions)
    except msgspec.DecodeError as exc:
        raise CheckpointCorrupt(f"{where}: {exc}") from exc


class CheckpointStore:
    """Reads and atomically replaces the checkpoint file under ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / FILE_NAME
        self.previous = self.dir / (FILE_NAME + ".prev")

    def load(self) -> Positions:
        """The newest readable checkpoint; corrupt copies are logged and skipped."""
        for candidate in (self.path, self.previous):
            try:
                raw = candidate.read_bytes()
            except FileNotFoundError:
                continue
            try:
                return _decode(raw, candidate)
            except CheckpointCorrupt as exc:
                log.warning("checkpoint unusable, trying the previous copy: %s", exc)
        return Positions()

    def save(self, positions: Positions) -> None:
        """Replace the checkpoint atomically (survives a crash at any instant)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / (FILE_NAME + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            data = memoryview(_encode(positions))
            while data:  # a short write (disk nearly full) must not pass for a whole one
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._intact(self.path):  # never let a damaged current replace a good .prev
            os.replace(self.path, self.previous)
        os.replace(tmp, self.path)
        fsync_directory(self.dir)

    @staticmethod
    def _intact(path: Path) -> bool:
        try:
            _decode(path.read_bytes(), path)
        except (FileNotFoundError, CheckpointCorrupt):
            return False
        return True

    def positions_for(self, source: str) -> dict[tuple[int, int], FilePosition]:
        """Checkpointed files of one source, by (dev, inode)."""
        return {(p.dev, p.ino): p for p in self.load().files if p.source == source}
