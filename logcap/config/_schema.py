"""The top-level config document."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from logcap.capture.config import SourceConfig
from logcap.capture.pipeline.config import PipelineConfig
from logcap.config._base import ComponentName, StrictStruct, doc
from logcap.config._units import (
    BatchBytes,
    DlqBytes,
    HeapBytes,
    PositiveDuration,
    SlotBytes,
)
from logcap.sinks._http import Token
from logcap.sinks.config import SinkConfig


class ApiConfig(StrictStruct, frozen=True):
    """The HTTP endpoint (logcap/api.py): GET /metrics, /health, /ready, /config, /positions,
    /dlq, /stats, /tap; POST /dlq/replay."""

    address: Annotated[
        str,
        doc(
            "host:port to listen on; keep it on 127.0.0.1 unless it must be remote (then "
            "api.token is required).",
            pattern=r"^[^:\s]+:\d{1,5}\Z",
        ),
    ] = "127.0.0.1:9598"
    enabled: Annotated[bool, doc("Serve the HTTP endpoint at all.")] = True
    token: Annotated[
        Token | None,
        doc(
            "Every POST must carry 'Authorization: Bearer <token>' (use ${VAR}); unset, every "
            "POST is refused. Required when address is not loopback (127.0.0.0/8, localhost)."
        ),
    ] = None

    def check(self) -> list[tuple[tuple[str, ...], str]]:
        """Cross-field rules (pure): a listener other hosts can reach needs a token."""
        if not self.enabled or self.token is not None or is_loopback(self.address):
            return []
        return [
            (
                ("address",),
                f"{self.address} is not a loopback address (127.0.0.0/8, localhost), so other "
                "hosts can reach the API: set api.token (use ${VAR}), or listen on 127.0.0.1",
            )
        ]


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` listens on this host only. A host name other than localhost
    counts as reachable: validation is pure and does not resolve it."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DispatcherConfig(StrictStruct, frozen=True):
    """How entries are grouped into batches (each batch is encoded once for all sinks)."""

    batch_max_events: Annotated[
        int, doc("A batch is closed when it holds this many entries.", gt=0, le=1_000_000)
    ] = 1000
    batch_max_bytes: Annotated[
        BatchBytes,
        doc(
            "A batch is closed before its slot bytes (entries and their index) would pass "
            "this; one entry larger than it is sent alone."
        ),
    ] = BatchBytes(1024 * 1024)
    batch_timeout: Annotated[
        PositiveDuration, doc("A batch that is not full is sent after waiting this long.")
    ] = PositiveDuration(0.2)
    checkpoint_interval: Annotated[
        PositiveDuration,
        doc(
            "How often the positions every sink has delivered are saved to data_dir: "
            "after a kill -9 of the whole agent, at most about this much is read again."
        ),
    ] = PositiveDuration(0.2)


class BufferConfig(StrictStruct, frozen=True):
    """Sizes of the shared-memory rings between the processes."""

    collector_slots: Annotated[
        int, doc("Slots in each collector's ring (a power of two).", ge=2, le=65536)
    ] = 16
    collector_slot_bytes: Annotated[
        SlotBytes,
        doc(
            "Bytes per collector ring slot: one read of whole lines; a file path and the "
            "longest line (max_line_bytes) must fit."
        ),
    ] = SlotBytes(256 * 1024)
    batch_slots: Annotated[
        int, doc("Slots in the batch ring read by every sink (a power of two).", ge=2, le=65536)
    ] = 16


class SupervisorConfig(StrictStruct, frozen=True):
    """How the supervisor runs and stops its child processes."""

    shutdown_timeout: Annotated[
        PositiveDuration,
        doc("On SIGTERM/SIGINT, how long draining may take before children are killed."),
    ] = PositiveDuration(8.0)
    restart_backoff: Annotated[
        PositiveDuration, doc("Delay before restarting a crashed child; doubles per crash.")
    ] = PositiveDuration(0.5)
    restart_backoff_max: Annotated[PositiveDuration, doc("Upper bound of the restart delay.")] = (
        PositiveDuration(30.0)
    )
    watch_config: Annotated[
        bool,
        doc(
            "Reload the config file when it changes (as SIGHUP and POST /config/reload do), "
            "once it has been still for a second; an invalid file is reported and the "
            "running config kept."
        ),
    ] = False


class RetryConfig(StrictStruct, frozen=True):
    """How failed batches are retried (one heap, one timer, in the retry process)."""

    initial_backoff: Annotated[
        PositiveDuration,
        doc(
            "Upper bound of the first retry delay; each further failure doubles it (the "
            "delay is drawn uniformly below the bound: full jitter)."
        ),
    ] = PositiveDuration(1.0)
    max_backoff: Annotated[PositiveDuration, doc("The delay bound never grows past this.")] = (
        PositiveDuration(60.0)
    )
    max_attempts: Annotated[
        int,
        doc(
            "Delivery attempts of a batch, the first included, before it goes to the "
            "dead letter queue.",
            ge=1,
            le=1_000_000,
        ),
    ] = 10
    max_retry_duration: Annotated[
        PositiveDuration,
        doc(
            "A batch still failing this long after its first failure goes to the dead letter queue."
        ),
    ] = PositiveDuration(3600.0)
    max_entries: Annotated[
        int,
        doc(
            "Entries of failed batches the retry process keeps copies of in memory; "
            "beyond it (or max_bytes) a batch waits in the disk spool only and is read "
            "back when due.",
            ge=1,
        ),
    ] = 1_000_000
    max_bytes: Annotated[
        HeapBytes,
        doc("Bytes of failed batches kept in memory (the memory bound); see max_entries."),
    ] = HeapBytes(64 * 1024 * 1024)
    spool_max_bytes: Annotated[
        HeapBytes,
        doc(
            "Bytes the disk spool under data_dir/spool may hold: every failed batch waits "
            "there (it survives the retry process and the agent); a batch that does not "
            "fit goes to the dead letter queue ('overflow')."
        ),
    ] = HeapBytes(1024**3)


class ReprocessConfig(StrictStruct, frozen=True):
    """Re-offering dead-lettered batches to their sink by themselves."""

    enabled: Annotated[
        bool,
        doc(
            "Move 'overflow' and 'exhausted' DLQ records back into the retry spool, to "
            "their own sink once its circuit is closed; 'permanent' ones wait for "
            "'logcap dlq replay'."
        ),
    ] = True
    interval: Annotated[
        PositiveDuration,
        doc("Time between two passes over the DLQ (the backoff between rounds)."),
    ] = PositiveDuration(300.0)


class DlqConfig(StrictStruct, frozen=True):
    """The dead letter queue: segment files under data_dir/dlq."""

    max_bytes: Annotated[
        DlqBytes, doc("Total size of all segments; what happens beyond it: when_full.")
    ] = DlqBytes(1024**3)
    max_age: Annotated[
        PositiveDuration, doc("Segments whose newest record is older than this are deleted.")
    ] = PositiveDuration(7 * 86400.0)
    segment_bytes: Annotated[
        DlqBytes, doc("A new segment file is started when the current one would pass this.")
    ] = DlqBytes(64 * 1024 * 1024)
    fsync: Annotated[
        Literal["always", "interval", "never"],
        doc(
            "When records are forced to disk: after every record, every fsync_interval, "
            "or never (the OS decides; a power loss may lose recent records)."
        ),
    ] = "always"
    fsync_interval: Annotated[PositiveDuration, doc("With fsync: interval, how often.")] = (
        PositiveDuration(1.0)
    )
    when_full: Annotated[
        Literal["block", "drop_oldest"],
        doc(
            "At max_bytes: 'block' stops the pipeline until space is freed (nothing is "
            "lost), 'drop_oldest' deletes the oldest segments and counts the records."
        ),
    ] = "block"
    reprocess: Annotated[
        ReprocessConfig, doc("Automatic redelivery of overflow and exhausted records.")
    ] = ReprocessConfig()


class Config(StrictStruct, frozen=True):
    """A whole logcap configuration."""

    data_dir: Annotated[
        str, doc("Directory for checkpoints and other state; created if missing.", min_length=1)
    ] = "./data"
    api: Annotated[ApiConfig, doc("The HTTP endpoint.")] = ApiConfig()
    sources: Annotated[
        dict[str, SourceConfig], doc("Named inputs; each runs in its own collector process.")
    ] = {}
    sinks: Annotated[
        dict[str, SinkConfig],
        doc("Named outputs; each runs in its own process and receives every entry."),
    ] = {}
    dispatcher: Annotated[DispatcherConfig, doc("Batching.")] = DispatcherConfig()
    buffer: Annotated[BufferConfig, doc("Ring sizes.")] = BufferConfig()
    supervisor: Annotated[SupervisorConfig, doc("Process management.")] = SupervisorConfig()
    retry: Annotated[RetryConfig, doc("Retrying failed batches.")] = RetryConfig()
    dlq: Annotated[DlqConfig, doc("The dead letter queue.")] = DlqConfig()
    pipelines: Annotated[
        dict[ComponentName, PipelineConfig],
        doc("Named processing pipelines; a source runs those it names (its `pipelines`)."),
    ] = {}
