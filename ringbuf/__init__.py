"""Shared-memory ring buffers joining the pipeline's processes (Disruptor vocabulary)."""

from logcap.ringbuf._ring import INACTIVE, SLOT_HEADER, Consumer, Producer, Ring
from logcap.ringbuf._shm import attach, create, run_prefix, sweep_stale, unlink
from logcap.ringbuf._wait import Doorbell, SleepWait, WaitStrategy
from logcap.ringbuf.follower import Copied, RingFollower

__all__ = [
    "INACTIVE",
    "SLOT_HEADER",
    "Consumer",
    "Copied",
    "Doorbell",
    "Producer",
    "Ring",
    "RingFollower",
    "SleepWait",
    "WaitStrategy",
    "attach",
    "create",
    "run_prefix",
    "sweep_stale",
    "unlink",
]
