"""Config of the ``http`` sink."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from logcap.config._base import doc
from logcap.config._units import BodyBytes, PositiveDuration
from logcap.sinks._http import (
    HeaderValue,
    TlsConfig,
    Token,
    client_problems,
    tls_problems,
)
from logcap.sinks.breaker import SinkConfigBase

if TYPE_CHECKING:
    from logcap.metrics import CounterBlock
    from logcap.sinks.base import Sink

HeaderName = Annotated[
    str,
    msgspec.Meta(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z", description="An HTTP header name"),
]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

# headers the sink sets itself: a request must say truthfully what its body is
_RESERVED_HEADERS = {"content-encoding", "content-length", "transfer-encoding", "host"}


class HttpSinkConfig(SinkConfigBase, tag_field="type", tag="http", frozen=True):
    """POST each batch's entries as NDJSON (one JSON object per line) to a URL."""

    url: Annotated[
        str,
        doc(
            "Where to POST, e.g. 'https://collector:8080/ingest' (query string allowed).",
            pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?(\?[^\s#]*)?\Z",
        ),
    ]
    compression: Annotated[
        Literal["none", "gzip"], doc("Content-Encoding of the request bodies.")
    ] = "none"
    headers: Annotated[
        dict[HeaderName, HeaderValue],
        doc(
            "Extra HTTP headers on every request (Content-Type defaults to "
            "'application/x-ndjson'); they cannot set Content-Encoding, Content-Length, "
            "Transfer-Encoding or Host, nor Authorization when username or bearer_token is set."
        ),
    ] = {}
    username: Annotated[NonEmpty | None, doc("Basic auth user (with password).")] = None
    password: Annotated[str | None, doc("Basic auth password (use ${VAR}).")] = None
    bearer_token: Annotated[
        Token | None, doc("Sent as 'Authorization: Bearer <token>' (use ${VAR}).")
    ] = None
    tls: Annotated[TlsConfig | None, doc("TLS settings for an https URL.")] = None
    timeout: Annotated[
        PositiveDuration,
        doc("Connect timeout, and longest wait for each read of the answer, per request."),
    ] = PositiveDuration(30.0)
    max_request_bytes: Annotated[
        BodyBytes,
        doc(
            "A batch is sent in requests of at most this many uncompressed bytes, split "
            "between entries (an entry larger than this is sent alone)."
        ),
    ] = BodyBytes(10 * 1024 * 1024)

    def check(self) -> list[tuple[tuple[str, ...], str]]:
        """Cross-field rules: every problem, each at its key (TLS files must exist)."""
        problems = client_problems(
            self.url, self.username, self.password, self.bearer_token, self.tls
        )
        problems += tls_problems(self.tls)
        names = {name.lower() for name in self.headers}
        reserved = sorted(names & _RESERVED_HEADERS)
        if reserved:
            problems.append((("headers",), f"cannot set {', '.join(reserved)}: the sink sets them"))
        authenticating = self.username is not None or self.bearer_token is not None
        if authenticating and "authorization" in names:
            problems.append(
                (("headers",), "cannot set authorization with username or bearer_token")
            )
        return problems

    def with_base(self, base: Path) -> HttpSinkConfig:
        """Resolve relative TLS file names against ``base``."""
        if self.tls is None:
            return self
        return msgspec.structs.replace(self, tls=self.tls.with_base(base))

    def build(self, counters: CounterBlock) -> Sink:
        """The sink this config describes. One keep-alive connection."""
        from logcap.sinks.http.sink import HttpSink  # http.client, ssl: loaded only where used

        return HttpSink(self)
