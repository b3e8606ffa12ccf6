"""Config of the ``http`` source."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec

from logcap.capture.base import Problems
from logcap.capture.labels import LABELS_DOC, LabelName, check_static
from logcap.capture.ratelimit import RATE_LIMIT_DOC, RateLimitConfig
from logcap.config._base import StrictStruct, doc
from logcap.config._units import BodyBytes, PositiveDuration

if TYPE_CHECKING:
    from logcap.capture.base import Collector, CollectorEnv


class HttpSourceConfig(StrictStruct, tag_field="type", tag="http", frozen=True):
    """Accept entries on ``POST /api/v1/logs`` (a JSON object, a JSON array, or NDJSON)."""

    #: labels logcap or the entry's own members set (static labels cannot replace them;
    #: a client's own label of a static label's name gives way to the static one)
    BUILT_IN_LABELS: ClassVar[frozenset[str]] = frozenset(
        {"host", "ingested_via", "client_ip", "level", "source_type", "source_id"}
    )

    address: Annotated[
        str,
        doc(
            "host:port to listen on; 127.0.0.1 unless clients on other hosts must reach it.",
            pattern=r"^[^:\s]+:\d{1,5}\Z",
        ),
    ] = "127.0.0.1:8686"
    bearer_token: Annotated[
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                pattern=r"^[!-~]+\Z",
                description="A token: printable ASCII, no spaces or line breaks",
            ),
        ]
        | None,
        doc(
            "If set, requests must carry 'Authorization: Bearer <token>' (use ${VAR}); "
            "printable ASCII without spaces, not empty."
        ),
    ] = None
    max_body_bytes: Annotated[
        BodyBytes,
        doc(
            "Larger request bodies are refused with 413 before being read; at most half "
            "the collector ring (buffer.collector_slots x collector_slot_bytes), so a body "
            "at the limit fits the ring with room for the labels its entries gain."
        ),
    ] = BodyBytes(2 * 1024 * 1024)
    retry_after: Annotated[
        PositiveDuration,
        doc("While the pipeline is backpressured requests get 429 with this Retry-After."),
    ] = PositiveDuration(1.0)
    labels: Annotated[dict[LabelName, str], doc(LABELS_DOC)] = {}
    pipelines: Annotated[
        list[str],
        doc("Names of pipelines (top-level `pipelines`) run on each request's entries, in order."),
    ] = []
    rate_limit: Annotated[
        RateLimitConfig | None,
        doc(RATE_LIMIT_DOC),
    ] = None

    def with_base(self, base: Path) -> HttpSourceConfig:
        """No paths to resolve."""
        return self

    def check(self, collector_slot_bytes: int) -> Problems:
        """Cross-field rules (pure): the static labels (the body limit against the whole
        ring is checked with the buffer section: config/_rules.py)."""
        return check_static(self.labels, self.BUILT_IN_LABELS)

    def build(self, env: CollectorEnv) -> Collector:
        """The HTTP server that takes requests into the ring."""
        from logcap.capture.http.collector import HttpCollector

        collector = HttpCollector(env.name, self, env.producer, env.counters, env.processor())
        return _Serving(collector, env.should_stop)

    def line_rules(self, collector_slot_bytes: int) -> dict[str, Any]:
        """Entries come whole from the collector."""
        return {"max_line_bytes": collector_slot_bytes, "static_labels": dict(self.labels)}

    def longest_entry_bytes(self, collector_slot_bytes: int) -> int:
        """The source refuses (413) an entry whose escaped message and labels do not fit
        a collector slot; after pipelines an entry still fits a slot as msgpack, and its
        JSON escapes each byte to at most 6."""
        return 6 * collector_slot_bytes if self.pipelines else collector_slot_bytes


class _Serving:
    """An HTTP collector bound to its stop condition (its ``run`` takes it)."""

    def __init__(self, collector: Any, should_stop: Any) -> None:
        self.collector, self.should_stop = collector, should_stop

    def run(self) -> None:
        """Serve until ``should_stop``."""
        self.collector.run(self.should_stop)
