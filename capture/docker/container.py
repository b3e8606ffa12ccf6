"""What the docker source knows of one container across its readers and restarts."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from docker.types import CancellableStream

from logcap.capture._entries import Entry
from logcap.capture.docker.position import NOTHING_READ, ContainerPosition


def container_key(container_id: str) -> int:
    """The checkpoint key of a container: 60 bits of its id (ids are 64 hex digits)."""
    return int(container_id[:15], 16)


@dataclass
class ContainerState:
    """One container: its labels, how far it was read, and lines not yet published.

    ``latest`` is every line taken (per stream), ``safe`` the same but never inside a
    16 KiB partial line being joined, ``published`` the position in the last record.
    ``lock`` guards ``pending`` and the positions between its reader and the publisher.
    """

    id: str
    name: str
    image: str
    labels: dict[int, dict[str, str]]
    latest: ContainerPosition = NOTHING_READ
    safe: ContainerPosition = NOTHING_READ
    published: ContainerPosition = NOTHING_READ
    pending: list[Entry] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reader: threading.Thread | None = None
    stream: CancellableStream | None = None
    gone: bool = False  # destroyed: forget its checkpoint once its reader has ended
