"""Records exchanged between a sink and the retry process, one per ring slot.

Failure ring (sink → retry), one per sink::

    0   kind              uint8   1 retryable failure, 2 permanent failure, 3 delivered
    1   code              uint8   index in logcap.errors.REASON_CODES
    2   reserved          2 bytes
    4   retry_after_ms    uint32  the delay the destination asked for (0: none)
    8   batch_seq         int64   the batch's sequence in the batch ring (its identity)
    16  attempts          int64   attempts made so far, this one included
    24  first_failure_ns  int64   wall clock of the first failure
    32  entries           int64
    40  reason_len        int64
    48  reason            UTF-8, reason_len bytes
        batch             the batch slot's bytes (absent for "delivered")

Redelivery ring (retry → sink): the same layout with kind 4 ("try again").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from logcap.ringbuf import Producer

HEADER = struct.Struct("<BBxxIqqqqq")
MAX_RETRY_AFTER_MS = 2**32 - 1
RETRYABLE, PERMANENT, DELIVERED, REDELIVER = 1, 2, 3, 4


@dataclass
class Message:
    """A parsed record; ``batch`` is a view into the ring slot (copy it to keep it)."""

    kind: int
    code: int
    batch_seq: int
    attempts: int
    first_failure_ns: int
    entries: int
    reason: str
    batch: memoryview
    retry_after_ms: int = 0


def send(
    producer: Producer,
    seq: int,
    kind: int,
    batch_seq: int,
    attempts: int,
    first_failure_ns: int,
    entries: int,
    reason: str,
    batch: bytes | memoryview = b"",
    code: int = 0,
    retry_after_ms: int = 0,
) -> int:
    """Lay a record out in the claimed slot ``seq`` and publish it; return ``seq``."""
    slot = producer.payload(seq)
    encoded = reason.encode("utf-8", "replace")[:4096]
    HEADER.pack_into(
        slot,
        0,
        kind,
        code,
        min(max(retry_after_ms, 0), MAX_RETRY_AFTER_MS),
        batch_seq,
        attempts,
        first_failure_ns,
        entries,
        len(encoded),
    )
    at = HEADER.size
    slot[at : at + len(encoded)] = encoded
    at += len(encoded)
    slot[at : at + len(batch)] = batch
    producer.commit(seq, at + len(batch))
    producer.publish(seq)
    return seq


def read_message(view: memoryview) -> Message:
    """Parse a record published in a ring slot."""
    kind, code, after_ms, batch_seq, attempts, first_ns, entries, reason_len = HEADER.unpack_from(
        view
    )
    at = HEADER.size
    reason = bytes(view[at : at + reason_len]).decode("utf-8", "replace")
    return Message(
        kind,
        code,
        batch_seq,
        attempts,
        first_ns,
        entries,
        reason,
        view[at + reason_len :],
        after_ms,
    )
