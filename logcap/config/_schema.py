"""The top-level config document."""

from __future__ import annotations

from typing import Annotated

from logcap.capture.config import SourceConfig
from logcap.config._base import StrictStruct, doc
from logcap.config._units import BatchBytes, Duration, PositiveDuration, SlotBytes
from logcap.sinks.config import SinkConfig


class ApiConfig(StrictStruct, frozen=True):
    """The HTTP endpoint serving /metrics, /health and /ready."""

    address: Annotated[
        str,
        doc(
            "host:port to listen on; keep it on 127.0.0.1 unless it must be remote.",
            pattern=r"^[^:\s]+:\d{1,5}$",
        ),
    ] = "127.0.0.1:9598"
    enabled: Annotated[bool, doc("Serve the HTTP endpoint at all.")] = True


class DispatcherConfig(StrictStruct, frozen=True):
    """How entries are grouped into batches (each batch is encoded once for all sinks)."""

    batch_max_events: Annotated[
        int, doc("A batch is closed when it holds this many entries.", gt=0, le=1_000_000)
    ] = 1000
    batch_max_bytes: Annotated[
        BatchBytes,
        doc("A batch is closed when its lines add up to this many bytes."),
    ] = BatchBytes(1024 * 1024)
    batch_timeout: Annotated[
        PositiveDuration, doc("A batch that is not full is sent after waiting this long.")
    ] = PositiveDuration(0.2)
    checkpoint_interval: Annotated[
        PositiveDuration,
        doc("How often the positions every sink has delivered are saved to data_dir."),
    ] = PositiveDuration(1.0)


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
        Duration, doc("Delay before restarting a crashed child; doubles per crash.")
    ] = Duration(0.5)
    restart_backoff_max: Annotated[PositiveDuration, doc("Upper bound of the restart delay.")] = (
        PositiveDuration(30.0)
    )


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
