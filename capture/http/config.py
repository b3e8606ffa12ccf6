"""Config of the ``http`` source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from logcap.config._base import StrictStruct, doc
from logcap.config._units import BodyBytes, PositiveDuration


class HttpSourceConfig(StrictStruct, tag_field="type", tag="http", frozen=True):
    """Accept entries on ``POST /api/v1/logs`` (a JSON object, a JSON array, or NDJSON)."""

    address: Annotated[
        str,
        doc(
            "host:port to listen on; 127.0.0.1 unless clients on other hosts must reach it.",
            pattern=r"^[^:\s]+:\d{1,5}$",
        ),
    ] = "127.0.0.1:8686"
    bearer_token: Annotated[
        str | None,
        doc("If set, requests must carry 'Authorization: Bearer <token>' (use ${VAR})."),
    ] = None
    max_body_bytes: Annotated[
        BodyBytes, doc("Larger request bodies are refused with 413 before being read.")
    ] = BodyBytes(10 * 1024 * 1024)
    retry_after: Annotated[
        PositiveDuration,
        doc("While the pipeline is backpressured requests get 429 with this Retry-After."),
    ] = PositiveDuration(1.0)

    def with_base(self, base: Path) -> HttpSourceConfig:
        """No paths to resolve."""
        return self
