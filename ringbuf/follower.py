"""A reader of a ring that holds no cursor: the producer never waits for it (``logcap
tap``, logcap/tap.py). It copies each newly published slot and checks afterwards that the
producer did not rewrite it meanwhile; what it could not copy intact is counted."""

from __future__ import annotations

from typing import NamedTuple

from logcap.ringbuf._ring import Ring


class Copied(NamedTuple):
    """One slot's bytes, copied whole and checked not to have changed meanwhile."""

    seq: int
    data: bytes


class RingFollower:
    """Follows a ring's ``published`` cursor and copies each new slot, seqlock-style,
    holding no cursor: the producer never waits for it; what it could not copy intact
    is counted in ``missed``.

    A slot ``seq`` is copied as: read its stamped sequence (ring layout: ``+8`` of the
    slot header), which must be ``seq``; copy ``length`` payload bytes; check again
    that the stamp is ``seq`` and that ``published - seq < slot_count - claim_ahead``.
    The stamp alone is not enough: the producer rewrites the payload of ``seq +
    slot_count`` *before* it stamps it, so a stamp still reading ``seq`` says nothing
    about a rewrite in progress. What bounds that is the producer's order: it claims at
    most ``claim_ahead`` sequences past ``published`` (the dispatcher claims one batch,
    writes it, publishes it), so before writing any byte of ``seq + slot_count`` it has
    published ``seq + slot_count - claim_ahead``. x86-64 (TSO) makes stores visible in
    the order they were made and does not reorder loads with older loads: if the copy
    saw a byte of the rewrite, the ``published`` read after it sees that publish, and
    the copy is dropped. The ring's own docstring (ringbuf/_ring.py) makes the same
    assumption; on ARM this would need fences.
    """

    def __init__(self, ring: Ring, claim_ahead: int = 1) -> None:
        if not 0 < claim_ahead < ring.slot_count:
            raise ValueError(f"claim_ahead must be 1..{ring.slot_count - 1}, got {claim_ahead}")
        self.ring = ring
        # the distance behind ``published`` at which a slot may be mid-rewrite
        self.window = ring.slot_count - claim_ahead
        self.next_sequence = ring.published + 1  # live: from the next batch on
        self.missed = 0

    def take(self) -> Copied | None:
        """The next intact batch's bytes, or None when nothing new is published."""
        ring = self.ring
        while True:
            published = ring.published
            seq = self.next_sequence
            if seq > published:
                return None
            if published - seq >= self.window:
                # behind by (nearly) the whole ring: what is unread may be rewritten
                # already, and a live view wants the newest, so jump to it
                self.missed += published - seq
                seq = published
            self.next_sequence = seq + 1
            data = self._copy(seq)
            if data is not None:
                return Copied(seq, data)
            self.missed += 1

    def skip(self) -> None:
        """Pass over every batch published so far, unread (counted in ``missed``)."""
        published = self.ring.published
        if published >= self.next_sequence:
            self.missed += published - self.next_sequence + 1
            self.next_sequence = published + 1

    def _copy(self, seq: int) -> bytes | None:
        ring = self.ring
        if ring.slot_sequence(seq) != seq:
            return None  # rewritten for a later lap already
        length = ring.slot_length(seq)
        data = bytes(ring.payload(seq)[: max(0, length)])
        if ring.slot_sequence(seq) != seq or ring.published - seq >= self.window:
            return None  # the producer came round during the copy
        return data
