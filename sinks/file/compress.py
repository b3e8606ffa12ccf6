"""Compressing a rotated file without ever losing it.

``<path>.<n>`` → ``<path>.<n>.gz.tmp`` (written, fsynced) → renamed ``<path>.<n>.gz``
(directory fsynced) → ``<path>.<n>`` deleted. At every instant one complete copy exists
under a final name: a crash leaves either a temporary beside its intact original (delete
the temporary, compress again) or both final names (delete the original).

Another process may tidy the same rotated files (a ``logcap dlq replay``, a second sink
writing the same path): the compressor holds an exclusive ``flock`` of the original from
before it writes the temporary until the original is deleted, and whoever finds the
lock taken leaves the file to its holder, so two compressions never write one temporary
and a temporary is never deleted as a crash's leftover while it is being written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import zlib
from typing import Protocol

from logcap.durable import fsync_directory
from logcap.sinks.file.rotation import SUFFIXES

CHUNK = 1 << 20  # zlib and zstd release the GIL per call: delivery threads keep running


class Interrupted(Exception):
    """The sink is closing; the temporary was removed and the original kept."""


class Busy(Exception):
    """Another process is compressing this file; it is left to that one."""


def compressing(source: str) -> bool:
    """Whether another process holds ``source``'s lock (is compressing it now)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # drops the lock if it was taken
    return False


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


def compress_file(
    source: str, kind: str, stop: threading.Event, lock: threading.Lock | None = None
) -> str:
    """Compress ``source`` to ``source + suffix`` as the module docstring says; return the
    new name. ``lock`` is held while names change (rotation numbering reads them).
    Raises :class:`Busy` if another process is compressing it, FileNotFoundError if it
    is gone (compressed by another process meanwhile)."""
    target = source + SUFFIXES[kind]
    temporary = target + ".tmp"
    codec = _codec(kind)
    with open(source, "rb") as reader:
        try:
            fcntl.flock(reader.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(source) from None
        if os.fstat(reader.fileno()).st_nlink == 0:  # the other one finished before
            raise FileNotFoundError(source)
        try:
            with open(temporary, "wb") as writer:
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
            with contextlib.suppress(FileNotFoundError):  # another's crash clean-up
                os.unlink(source)
    return target
