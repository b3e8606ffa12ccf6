"""Checkpointed files the patterns no longer find: read their unread rest, forget the gone.

A collector that was down (or restarted) while ``app.log`` was renamed to ``app.log.1``
finds only what its patterns match; if the rotated name does not match, the unread rest of
that file would never be read. On start, every checkpoint entry of the source whose file
the scan did not open is looked for in the directory of its checkpointed path, under any
name (the rotated names ``app.log.1``, ``app.log-20240101``, ... included): a directory
entry with the same inode on the same device whose first bytes still match the entry's
fingerprint is that file. If it holds unread bytes, the collector reads it to its end and
retires it like a file rotated away while it ran.

An entry whose file is gone (its directory lists no such inode, or only a new file on a
reused inode) is *forgotten*: the collector publishes a record whose ``end`` is
``FORGET`` (-1) and which carries no data; once everything before it is delivered, the
dispatcher drops the entry from the checkpoint (dispatch/acks.py). A file read to its end
that still exists keeps its entry: were it renamed back into the patterns, it would
otherwise be read again. Nothing is forgotten when the directory cannot be listed or
neither it nor a file in it is on the entry's device (a file system not mounted yet),
nor for a path that is now a symbolic link (its target may live anywhere).

Limits: a file created *and* rotated away under a name the patterns miss while the
collector was down was never checkpointed, so nothing tells it exists; patterns that also
match rotated names (``app.log*``) read it. A file moved to another directory (logrotate's
``olddir``) is not searched for.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from logcap.capture._entries import FORGET
from logcap.capture._record import BlockHeader, write_header
from logcap.capture.file.identity import UNKNOWN, starts_as
from logcap.dispatch.checkpoint import FilePosition
from logcap.errors import BufferFull
from logcap.ringbuf import Producer

log = logging.getLogger(__name__)


@dataclass
class Found:
    """What the search made of the checkpoint entries the scan did not open."""

    unread: list[tuple[str, FilePosition]] = field(default_factory=list)  # (path now, entry)
    gone: list[FilePosition] = field(default_factory=list)


@dataclass
class _Listing:
    """One directory's entries by inode (symbolic links by their target's), and the
    devices seen there (the directory's and its files': on overlayfs they can differ)."""

    devices: set[int]
    by_inode: dict[int, list[str]]


def _list(directory: str) -> _Listing | None:
    try:
        listing = _Listing({os.stat(directory).st_dev}, {})
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    # stat, not the directory entry's inode number: on overlayfs the two
                    # differ; and a symbolic link is known by its target's inode
                    st = entry.stat()
                except OSError:
                    continue  # removed meanwhile, or a dangling link
                listing.devices.add(st.st_dev)
                listing.by_inode.setdefault(st.st_ino, []).append(entry.path)
    except OSError as exc:
        log.info("cannot look for rotated files in %s: %s", directory, exc)
        return None
    return listing


def _same_file(path: str, saved: FilePosition) -> tuple[bool, int]:
    """Whether ``path`` is the file ``saved`` describes, and its size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False, 0
    try:
        st = os.fstat(fd)
        same = (
            stat.S_ISREG(st.st_mode)
            and (st.st_dev, st.st_ino) == (saved.dev, saved.ino)
            and starts_as(fd, saved.fingerprint)
        )
        return same, st.st_size
    finally:
        os.close(fd)


def find_unfinished(
    entries: Iterable[FilePosition], wanted: Callable[[str], bool] = lambda _: True
) -> Found:
    """Look for the files of checkpoint ``entries`` (none of them open) in the directories
    of their checkpointed paths. Entries whose path ``wanted`` refuses (no longer in the
    source's patterns) are never read, only forgotten once gone."""
    found = Found()
    listings: dict[str, _Listing | None] = {}
    for saved in entries:
        directory = os.path.dirname(saved.path) or "."
        if directory not in listings:
            listings[directory] = _list(directory)
        listing = listings[directory]
        if listing is None or saved.dev not in listing.devices or os.path.islink(saved.path):
            continue  # cannot tell whether it is gone: keep the entry
        where = None
        for path in listing.by_inode.get(saved.ino, []):
            same, size = _same_file(path, saved)
            if same:
                where = path, size
                break
        if where is None:
            found.gone.append(saved)
        elif saved.fingerprint != UNKNOWN and where[1] != saved.offset and wanted(saved.path):
            # an empty file when checkpointed (no fingerprint) cannot be told from a new
            # file on its inode: not read
            found.unread.append((where[0], saved))
    return found


def publish_forget(producer: Producer, saved: FilePosition) -> bool:
    """Publish the record that drops ``saved`` from the checkpoint once delivered (see the
    module docstring); False if the ring stayed full."""
    path = os.fsencode(saved.path)[:4096]
    try:
        seq = producer.claim(1, timeout=0.2)
    except BufferFull:
        return False
    slot = producer.payload(seq)
    header = BlockHeader(
        time.time_ns(), 0, FORGET, saved.dev, saved.ino, saved.fingerprint, 0, len(path), 0
    )
    producer.commit(seq, write_header(slot, header, path))
    producer.publish(seq)
    return True
