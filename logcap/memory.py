"""glibc malloc tuning per process: keep freed buffers (speed) or give them back (RSS)."""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def set_malloc_thresholds(mmap_bytes: int, trim_bytes: int) -> None:
    """Allocations of ``mmap_bytes`` or more get their own mapping (returned to the
    system on free; a fixed value also stops glibc from raising it by itself), and free
    memory past ``trim_bytes`` at the top of the heap is returned. No-op without glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl): nothing to tune
        return
    mallopt(M_MMAP_THRESHOLD, mmap_bytes)
    mallopt(M_TRIM_THRESHOLD, trim_bytes)
