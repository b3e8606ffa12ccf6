"""The one error hierarchy of logcap.

::

    LogcapError
    ├── ConfigError              the configuration is invalid (path, line, reason)
    ├── RingError
    │   ├── BufferFull           try_claim found no free slot (back-pressure, not a fault)
    │   └── RingCorrupt          a shared-memory layout check failed
    ├── CheckpointCorrupt        a checkpoint file failed its checksum or parse
    ├── DlqFull                  the dead letter queue is at max_bytes (when_full: block)
    ├── DataDirLocked            another agent is running on the same data_dir
    └── DeliveryError            a sink could not deliver a batch
        ├── Retryable            worth trying again later (timeouts, 5xx, disk full)
        └── Permanent            will never succeed as is (4xx, oversize, encoding)

Client-library exceptions are translated into these at the component boundary with
``raise ... from exc`` so callers only ever branch on this tree.
"""

from __future__ import annotations


class LogcapError(Exception):
    """Base of every error logcap raises on purpose."""


class ConfigError(LogcapError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class RingError(LogcapError):
    """A ring buffer operation failed."""


class BufferFull(RingError):
    """``try_claim`` found no free slot: the slowest consumer is a full lap behind."""


class RingCorrupt(RingError):
    """A shared-memory segment does not hold the layout it should."""


class CheckpointCorrupt(LogcapError):
    """A checkpoint file is truncated, unparsable or fails its checksum."""


class DlqFull(LogcapError):
    """The dead letter queue reached ``dlq.max_bytes`` and ``when_full`` is ``block``."""


class DataDirLocked(LogcapError):
    """Another agent holds the lock of the ``data_dir`` (its pid is in the message)."""


#: Why a delivery failed, as a metric label: a fixed set, so label cardinality stays bounded.
REASON_CODES = (
    "other",
    "disk_full",
    "io",
    "timeout",
    "connection",
    "rate_limited",
    "server_error",
    "rejected",
)


class DeliveryError(LogcapError):
    """A sink failed to deliver a batch; ``code`` is one of :data:`REASON_CODES`."""

    def __init__(self, message: str, code: str = "other") -> None:
        super().__init__(message)
        self.code = code if code in REASON_CODES else "other"


class Retryable(DeliveryError):
    """The failure is transient; the same batch may succeed later. ``retry_after``: the
    seconds the destination asked to wait (HTTP Retry-After), or None."""

    def __init__(self, message: str, code: str = "other", retry_after: float | None = None) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


class Permanent(DeliveryError):
    """The failure will repeat; the batch belongs in the dead letter queue."""


__all__ = [
    "REASON_CODES",
    "BufferFull",
    "CheckpointCorrupt",
    "ConfigError",
    "DataDirLocked",
    "DeliveryError",
    "DlqFull",
    "LogcapError",
    "Permanent",
    "Retryable",
    "RingCorrupt",
    "RingError",
]
