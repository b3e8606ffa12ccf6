"""Small I/O helpers shared by the sinks that write to file descriptors."""

from __future__ import annotations

import errno
import os

from logcap.errors import DeliveryError, Permanent, Retryable

# Conditions that go away on their own or by an operator freeing space.
_RETRYABLE = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EIO,
    errno.EAGAIN,
    errno.EINTR,
    errno.EMFILE,
    errno.ENFILE,
    errno.ENOMEM,
}


def classify(exc: OSError, what: str) -> DeliveryError:
    """Turn an OS error into a retryable or permanent delivery error (one place)."""
    message = f"{what}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Retryable(message, "disk_full")
    if exc.errno in _RETRYABLE:
        return Retryable(message, "io")
    return Permanent(message, "rejected")


def write_all(fd: int, data: memoryview | bytes) -> None:
    """``os.write`` until every byte is written (short writes happen on pipes and ttys)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
