"""Small I/O helpers shared by the sinks that write to file descriptors.

Which OS errors are worth retrying. A batch is permanent only if no change outside
logcap's config can ever make it succeed: a retryable error keeps every batch (the
circuit opens, ``/ready`` answers 503, the log names the path and the error) and the
sink delivers by itself once the condition is gone, while a permanent one sends every
batch to the dead letter queue, to be replayed by hand. So besides conditions that pass
on their own (a full disk freed, an I/O error, a descriptor limit), an output the sink
cannot write for a reason a person can fix is retryable too: a read-only mount (EROFS),
permissions or owner (EACCES, EPERM: also ``chattr +i``), a file where a directory of
the path should be (ENOTDIR; EEXIST from creating that directory), a directory where
the file should be (EISDIR: removing it is all it takes), a dangling or looping
symlink (ELOOP), a directory removed meanwhile (ENOENT). What stays permanent is what
the path or the data itself makes impossible: a name too long for the file system
(ENAMETOOLONG, e.g. from a long ``{source}``), a name it refuses (EINVAL), a file past
its size limit (EFBIG), a closed pipe (EPIPE: the console's reader is gone).
"""

from __future__ import annotations

import errno
import os

from logcap.errors import DeliveryError, Permanent, Retryable

# Conditions that go away on their own or by an operator freeing space.
_TRANSIENT = {
    errno.EIO,
    errno.EAGAIN,
    errno.EINTR,
    errno.EMFILE,
    errno.ENFILE,
    errno.ENOMEM,
}
# An output that cannot be written until a person fixes the file system (see above).
_FIXABLE = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EISDIR,
    errno.ELOOP,
    errno.ENOENT,
}


def classify(exc: OSError, what: str) -> DeliveryError:
    """Turn an OS error into a retryable or permanent delivery error (one place); the
    message names the file the error is about when that is not ``what`` itself."""
    message = f"{what}: {exc.strerror or exc}"
    named = exc.filename
    if isinstance(named, (str, bytes)) and os.fsdecode(named) not in what:
        message += f": {os.fsdecode(named)}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Retryable(message, "disk_full")
    if exc.errno in _TRANSIENT:
        return Retryable(message, "io")
    if exc.errno in _FIXABLE:
        return Retryable(f"{message} (delivery resumes by itself once that is fixed)", "io")
    return Permanent(message, "rejected")


def write_all(fd: int, data: memoryview | bytes) -> None:
    """``os.write`` until every byte is written (short writes happen on pipes and ttys)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
