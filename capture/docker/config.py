"""Config of the ``docker`` source."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from logcap.capture.base import Problems, line_fits_slot
from logcap.capture.labels import LABELS_DOC, LabelName, check_static
from logcap.capture.ratelimit import RATE_LIMIT_DOC, RateLimitConfig
from logcap.config._base import StrictStruct, doc
from logcap.config._units import LineBytes, PositiveDuration

if TYPE_CHECKING:
    from logcap.capture.base import Collector, CollectorEnv


class DockerSourceConfig(StrictStruct, tag_field="type", tag="docker", frozen=True):
    """Read the stdout and stderr of Docker containers; positions survive restarts."""

    #: what every entry of a container is labelled with (static labels cannot replace
    #: them; a label_keys label of a static label's name gives way to the static one)
    BUILT_IN_LABELS: ClassVar[frozenset[str]] = frozenset(
        {"host", "container_id", "container_name", "image", "stream"}
        | {"compose_project", "compose_service"}
    )

    docker_host: Annotated[
        str,
        doc(
            "The Docker daemon's API address: unix:///path/to/docker.sock or tcp://host:port.",
            pattern=r"^(unix|tcp|http)://.+",
        ),
    ] = "unix:///var/run/docker.sock"
    include_names: Annotated[
        list[str],
        doc("Glob patterns of container names to read (without the leading '/'); empty: all."),
    ] = []
    exclude_names: Annotated[list[str], doc("Glob patterns of container names never to read.")] = []
    include_images: Annotated[
        list[str],
        doc("Glob patterns of image names (as the container was created from); empty: all."),
    ] = []
    exclude_images: Annotated[list[str], doc("Glob patterns of images never to read.")] = []
    include_labels: Annotated[
        list[str],
        doc(
            "Only containers with one of these labels, each 'key' (any value) or "
            "'key=value'; empty: all."
        ),
    ] = []
    exclude_labels: Annotated[
        list[str], doc("Containers with one of these labels ('key' or 'key=value') are skipped.")
    ] = []
    label_keys: Annotated[
        list[str],
        doc(
            "Container labels copied onto every entry, under the label's key with each "
            "character other than a letter, digit or '_' turned into '_'."
        ),
    ] = []
    read_from: Annotated[
        Literal["beginning", "end"],
        doc(
            "On the source's first run (no checkpoint yet), where to start in the "
            "containers already running: their first line, or the moment the agent "
            "started. Containers that start later (even ones that exit before the source "
            "has connected), or on a restart, are read from where they were left, or "
            "their start."
        ),
    ] = "beginning"
    max_line_bytes: Annotated[
        LineBytes,
        doc(
            "Longer lines (after Docker's 16 KiB pieces are joined) are truncated to this "
            "(and counted); must fit a collector ring slot."
        ),
    ] = LineBytes(128 * 1024)
    long_lines: Annotated[
        Literal["truncate", "skip"],
        doc("A line longer than max_line_bytes is cut to that length, or dropped; counted."),
    ] = "truncate"
    reconnect_max_delay: Annotated[
        PositiveDuration,
        doc(
            "After losing the daemon, reconnect attempts back off from 0.5 s, doubling up "
            "to this delay (each attempt is counted)."
        ),
    ] = PositiveDuration(30.0)

    labels: Annotated[dict[LabelName, str], doc(LABELS_DOC)] = {}
    pipelines: Annotated[
        list[str],
        doc("Names of pipelines (top-level `pipelines`) run on the containers' lines, in order."),
    ] = []
    rate_limit: Annotated[
        RateLimitConfig | None,
        doc(RATE_LIMIT_DOC),
    ] = None

    def with_base(self, base: Path) -> DockerSourceConfig:
        """No paths to resolve."""
        return self

    def check(self, collector_slot_bytes: int) -> Problems:
        """Cross-field rules (pure): the longest line fits a collector slot; labels."""
        problems = line_fits_slot(self.max_line_bytes, collector_slot_bytes)
        return problems + check_static(self.labels, self.BUILT_IN_LABELS)

    def build(self, env: CollectorEnv) -> Collector:
        """The collector that follows the daemon's containers."""
        # the docker SDK (requests, urllib3: ~70 ms, some MiB) loads only where it is used
        from logcap.capture.docker.collector import DockerCollector

        return DockerCollector(
            env.name,
            self,
            env.producer,
            env.counters,
            env.checkpoints(),
            should_stop=env.should_stop,
            started_marker=env.started_marker,
            processor=env.processor(),
        )

    def line_rules(self, collector_slot_bytes: int) -> dict[str, Any]:
        """Entries come cut and bounded from the collector."""
        return {"max_line_bytes": collector_slot_bytes, "static_labels": dict(self.labels)}

    def longest_entry_bytes(self, collector_slot_bytes: int) -> int:
        """Encoded bytes of the longest entry: each byte escaped to at most 6 (with
        pipelines, an entry is bounded by a collector slot instead)."""
        return 6 * int(collector_slot_bytes if self.pipelines else self.max_line_bytes)
