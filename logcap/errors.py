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
    ├── EntryTooLarge            one entry alone does not fit a collector ring slot
    ├── BadRequest (ValueError)  an HTTP ingest body that cannot become entries: 400
    │   └── TooLarge             ... or that is too large to: 413
    └── DeliveryError            a sink could not deliver a batch
        ├── Retryable            worth trying again later (timeouts, 5xx, disk full)
        │   └── RetryLater       the destination said when (429/5xx with Retry-After)
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


class EntryTooLarge(LogcapError, ValueError):
    """One entry alone does not fit a collector ring slot."""


class BadRequest(LogcapError, ValueError):
    """An HTTP ingest body cannot be turned into entries; the reason goes back to the
    client with ``status``."""

    status = 400


class TooLarge(BadRequest):
    """An HTTP ingest entry (or its labels) is larger than the pipeline can carry."""

    status = 413


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


class RetryLater(Retryable):
    """The destination refused for now (429, 5xx); ``retry_after`` is the delay it asked
    for, in seconds, or None (the sink runner passes it on to the retry process)."""

    def __init__(self, message: str, code: str, retry_after: float | None) -> None:
        super().__init__(message, code, retry_after)


class Permanent(DeliveryError):
    """The failure will repeat; the batch belongs in the dead letter queue."""


__all__ = [
    "REASON_CODES",
    "BadRequest",
    "BufferFull",
    "CheckpointCorrupt",
    "ConfigError",
    "DataDirLocked",
    "DeliveryError",
    "DlqFull",
    "EntryTooLarge",
    "LogcapError",
    "Permanent",
    "RetryLater",
    "Retryable",
    "RingCorrupt",
    "RingError",
    "TooLarge",
]
