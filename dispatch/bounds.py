"""How large a batch can be: the bound the dispatcher enforces and validation checks.

A batch of two or more entries never passes ``dispatcher.batch_max_bytes`` (its slot
bytes: prefix, meta and entries; see dispatch/assemble.py). Only a batch of one entry may
be larger, and then no larger than :func:`largest_batch_bytes`: the longest entry a
source can produce plus :data:`ENTRY_OVERHEAD`. An entry that would need more is refused
by the dispatcher (logged, counted, its record released), never written.

The longest entry a source can produce:

* a line source (file, docker): ``max_line_bytes`` of text, each byte escaped to at most
  6 (``\\u00XX``);
* an http source: ``buffer.collector_slot_bytes``, because the source refuses (413) an
  entry whose escaped message and labels do not fit a collector slot.

Config validation (logcap/config/_load.py) requires the retry heap and the DLQ to hold
one batch of :func:`largest_batch_bytes`, so a failed batch can always wait or be
dead-lettered; the batch-ring slot (logcap/plan.py) is larger still.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from logcap.config import Config

# an entry's timestamps, source, labels (a file path of up to 4 KiB escaped, Docker's
# labels, HTTP labels of up to 16 KiB) and its group and position in the batch meta
ENTRY_OVERHEAD = 64 * 1024
# a DLQ record around its batch (dlq/record.py): record header, sink, kind, a reason of
# up to 4 KiB (retry/messages.py) with its prefix, counts and times; and the file header
DLQ_RECORD_OVERHEAD = 8 * 1024


def largest_batch_bytes(config: Config) -> int:
    """Slot bytes of the largest batch the dispatcher can write under ``config``."""
    longest = max(
        (
            s.longest_entry_bytes(config.buffer.collector_slot_bytes)
            for s in config.sources.values()
        ),
        default=0,
    )
    return max(int(config.dispatcher.batch_max_bytes), longest + ENTRY_OVERHEAD)
