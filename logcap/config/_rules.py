"""Rules across a whole (converted) config that no single component can check alone:
keys that cannot apply, listening addresses, shared-memory size. Pure: no IO."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from logcap.capture.http.config import HttpSourceConfig
from logcap.config._schema import Config

Report = Callable[[tuple[str | int, ...], str], None]
#: All rings together (collector rings and the batch ring) may take at most this much
#: shared memory: a typo in a slot count must not ask /dev/shm for TiBs.
MAX_RING_BYTES = 8 * 2**30
_WILDCARDS = {"0.0.0.0", "::", "[::]", "*"}


def check_inapplicable(report: Report, config: Config, data: dict[str, Any]) -> None:
    """A key set in the config that is ignored with the other settings (a component's
    own such keys are checked with the component: config/_load.py)."""
    dlq = data.get("dlq")
    if isinstance(dlq, dict) and "fsync_interval" in dlq and config.dlq.fsync != "interval":
        report(
            ("dlq", "fsync_interval"),
            f"only applies with fsync: interval (fsync is {config.dlq.fsync})",
        )


def listeners(config: Config) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """(key path, component description, host:port) of every address the agent listens on."""
    if config.api.enabled:
        yield ("api", "address"), "the API", config.api.address
    for name, source in config.sources.items():
        if isinstance(source, HttpSourceConfig):
            yield ("sources", name, "address"), f"http source {name}", source.address


def check_listeners(report: Report, config: Config) -> None:
    """Ports in range, and no two listeners on one address."""
    seen: list[tuple[str, int, str]] = []
    for path, who, address in listeners(config):
        host, port_text = address.rsplit(":", 1)
        port = int(port_text)
        if not 1 <= port <= 65535:
            report(path, f"port {port} is not between 1 and 65535")
            continue
        for other_host, other_port, other in seen:
            overlap = host == other_host or {host, other_host} & _WILDCARDS
            if port == other_port and overlap:
                report(path, f"{address} is also where {other} listens")
                break
        seen.append((host, port, who))


def check_http_bodies(report: Report, config: Config) -> None:
    """A body at an http source's max_body_bytes must fit its collector ring, or it would
    get 429 for ever on an idle agent."""
    ring = config.buffer.collector_slots * config.buffer.collector_slot_bytes
    for name, source in config.sources.items():
        if isinstance(source, HttpSourceConfig) and source.max_body_bytes > ring // 2:
            report(
                ("sources", name, "max_body_bytes"),
                f"{source.max_body_bytes} bytes can never fit the collector ring of {ring} "
                "bytes (buffer.collector_slots x collector_slot_bytes) with room for the "
                f"labels its entries gain: at most {ring // 2} (half the ring), or enlarge "
                "the ring",
            )


def check_rings(report: Report, config: Config) -> None:
    """The rings must fit in a sane amount of shared memory."""
    from logcap.plan import batch_slot_bytes

    buffer = config.buffer
    collector = buffer.collector_slots * buffer.collector_slot_bytes
    batch = buffer.batch_slots * batch_slot_bytes(config)
    total = collector * len(config.sources) + batch
    if total > MAX_RING_BYTES:
        report(
            ("buffer",),
            f"the rings would take {total} bytes of shared memory (collector_slots x "
            f"collector_slot_bytes = {collector} per source, batch_slots x batch slot = "
            f"{batch}); at most {MAX_RING_BYTES} (8 GiB)",
        )


def check_pipelines(report: Report, config: Config) -> None:
    """Every pipeline a source names exists, and each pipeline's own rules (patterns,
    formats, zones, one test per condition) hold."""
    from logcap.capture.pipeline.config import check_pipeline

    for name, source in config.sources.items():
        for i, wanted in enumerate(source.pipelines):
            if wanted not in config.pipelines:
                known = ", ".join(sorted(config.pipelines)) or "none are defined"
                report(
                    ("sources", name, "pipelines", i),
                    f"no pipeline named '{wanted}' (pipelines: {known})",
                )
    for name, pipeline in config.pipelines.items():
        for path, problem in check_pipeline(pipeline):
            report(("pipelines", name, *path), problem)
