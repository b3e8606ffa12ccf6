"""Compressing a rotated file without ever losing it.

``<path>.<n>`` → ``<path>.<n>.gz.tmp`` (written, fsynced) → renamed ``<path>.<n>.gz``
(directory fsynced) → ``<path>.<n>`` deleted. At every instant one complete copy exists
under a final name: a crash leaves either a temporary beside its intact original (delete
the temporary, compress again) or both final names (delete the original).
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from typing import Protocol

from logcap.sinks.file.rotation import SUFFIXES

CHUNK = 1 << 20  # zlib and zstd release the GIL per call: delivery threads keep running


class Interrupted(Exception):
    """The sink is closing; the temporary was removed and the original kept."""


class _Codec(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


def _codec(kind: str) -> _Codec:
    if kind == "gzip":
        return zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    if kind == "zstd":
        import zstandard  # only needed, and only imported, when configured

        return zstandard.ZstdCompressor(level=3).compressobj()
    raise ValueError(f"unknown compression {kind!r}")


def fsync_directory(directory: str) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compress_file(
    source: str, kind: str, stop: threading.Event, lock: threading.Lock | None = None
) -> str:
    """Compress ``source`` to ``source + suffix`` as the module docstring says; return the
    new name. ``lock`` is held while names change (rotation numbering reads them)."""
    target = source + SUFFIXES[kind]
    temporary = target + ".tmp"
    codec = _codec(kind)
    try:
        with open(source, "rb") as reader, open(temporary, "wb") as writer:
            while chunk := reader.read(CHUNK):
                if stop.is_set():
                    raise Interrupted(source)
                writer.write(codec.compress(chunk))
            writer.write(codec.flush())
            writer.flush()
            os.fsync(writer.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with lock or contextlib.nullcontext():
        os.rename(temporary, target)
        fsync_directory(os.path.dirname(target))
        os.unlink(source)
    return target
