"""Config of the ``loki`` sink."""

from __future__ import annotations

import re
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
from logcap.sinks.template import template_fields, template_problems, uses_level

if TYPE_CHECKING:
    from logcap.metrics import CounterBlock
    from logcap.sinks.base import Sink

#: A Loki (Prometheus) label name; names starting with '__' are reserved for Loki itself.
LABEL_NAME = r"^(?!__)[a-zA-Z_][a-zA-Z0-9_]*$"
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
HeaderName = Annotated[
    str,
    msgspec.Meta(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z", description="An HTTP header name"),
]

#: Where templates may take values from: '{source}', '{labels.NAME}' and '{level}'.

#: Label names never sent as Loki labels when they come from the entries themselves: values
#: that differ per line, per request or per process make a stream per value, which is what
#: makes Loki slow (shell patterns, matched case-insensitively against the sanitised name).
DEFAULT_DROP_LABELS = [
    "_temp_*",
    "temp_*",
    "timestamp",
    "time",
    "ts",
    "trace_id",
    "traceid",
    "span_id",
    "spanid",
    "request_id",
    "requestid",
    "req_id",
    "transaction_id",
    "correlation_id",
    "session_id",
    "user_id",
    "userid",
    "uid",
    "ip",
    "*_ip",
    "ip_address",
    "remote_addr",
    "container_id",
    "file_path",
    "filepath",
    "path",
    "pid",
    "thread_id",
    "line_number",
    "offset",
    "position",
    "instance",
    "instance_name",
    "image",
    "msg",
    "message",
]

DEFAULT_LABELS = {"source": "{source}", "host": "{labels.host}"}

# headers logcap sets itself on every push
_RESERVED_HEADERS = {"content-type", "content-encoding", "content-length", "host"}


class LokiSinkConfig(SinkConfigBase, tag_field="type", tag="loki", frozen=True):
    """Push entries to Grafana Loki (``POST {url}/loki/api/v1/push``), one stream per label
    set, entries in time order within each stream."""

    url: Annotated[
        str,
        doc(
            "Loki's base URL, e.g. 'http://loki:3100' (the push path is appended).",
            pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?\Z",
        ),
    ]
    tenant_id: Annotated[Token | None, doc("Sent as X-Scope-OrgID (multi-tenant Loki).")] = None
    username: Annotated[NonEmpty | None, doc("Basic auth user (with password).")] = None
    password: Annotated[str | None, doc("Basic auth password (use ${VAR}).")] = None
    bearer_token: Annotated[
        Token | None, doc("Sent as 'Authorization: Bearer <token>' (use ${VAR}).")
    ] = None
    headers: Annotated[
        dict[HeaderName, HeaderValue],
        doc(
            "Extra HTTP headers on every push; they cannot replace Content-Type, "
            "Content-Encoding, Content-Length, Host, or the tenant and auth headers."
        ),
    ] = {}
    tls: Annotated[TlsConfig | None, doc("TLS settings for an https URL.")] = None
    timeout: Annotated[
        PositiveDuration, doc("Connect and response timeout of one push request.")
    ] = PositiveDuration(10.0)
    encoding: Annotated[
        Literal["protobuf", "json"],
        doc("Body format: snappy-compressed protobuf (Loki's native) or JSON."),
    ] = "protobuf"
    compression: Annotated[
        Literal["gzip", "none"],
        doc(
            "Content-Encoding of JSON bodies. Protobuf bodies are always snappy "
            "compressed, as Loki requires, so this applies to encoding: json only."
        ),
    ] = "gzip"
    line_format: Annotated[
        Literal["message", "json"],
        doc("The log line sent: the entry's message, or the whole entry as a JSON object."),
    ] = "message"
    labels: Annotated[
        dict[str, str],
        doc(
            "Loki label name -> template: '{source}' is the source name, "
            "'{labels.NAME}' an entry label, '{level}' the level a pipeline gave the "
            "entries (else their level label), '{fields.NAME[.SUB]}' a field a pipeline "
            "set (each value a stream: only low-cardinality fields), e.g. "
            "{level: '{level}'}. A member an entry lacks is empty; labels whose value "
            "is empty are left out.",
        ),
    ] = msgspec.field(default_factory=lambda: dict(DEFAULT_LABELS))
    entry_labels: Annotated[
        bool,
        doc(
            "Also send the entries' own labels (names sanitised to Loki's syntax), "
            "except those matching drop_labels; 'labels' wins on a name clash."
        ),
    ] = True
    drop_labels: Annotated[
        list[str],
        doc(
            "Entry labels never sent as Loki labels (shell patterns, case-insensitive): "
            "by default ids, times, paths and addresses, whose many values would make "
            "a stream each. Map one in 'labels' to send it anyway."
        ),
    ] = msgspec.field(default_factory=lambda: list(DEFAULT_DROP_LABELS))
    max_label_values: Annotated[
        int,
        doc(
            "A label name seen with more distinct values than this is no longer sent "
            "(a warning is logged once): a guard against unbounded stream counts.",
            ge=1,
            le=1_000_000,
        ),
    ] = 200
    max_request_bytes: Annotated[
        BodyBytes,
        doc(
            "A batch is pushed in requests of at most about this many uncompressed "
            "bytes of lines and labels (an entry larger than this goes alone)."
        ),
    ] = BodyBytes(1024 * 1024)
    max_request_entries: Annotated[
        int, doc("A push request holds at most this many entries.", ge=1, le=1_000_000)
    ] = 10_000

    def check(self) -> list[tuple[tuple[str, ...], str]]:
        """Cross-field rules: every problem, each at its key (TLS files must exist)."""
        problems = client_problems(
            self.url, self.username, self.password, self.bearer_token, self.tls
        )
        problems += tls_problems(self.tls)
        for name, template in self.labels.items():
            if not re.match(LABEL_NAME, name):
                problems.append(
                    (
                        ("labels", name),
                        f"{name!r} is not a Loki label name ([a-zA-Z_][a-zA-Z0-9_]*, "
                        "not starting with '__')",
                    )
                )
            problems += [(("labels", name), problem) for problem in template_problems(template)]
        reserved = set(_RESERVED_HEADERS)
        if self.tenant_id is not None:
            reserved.add("x-scope-orgid")
        if self.username is not None or self.bearer_token is not None:
            reserved.add("authorization")
        for header in self.headers:
            if header.lower() in reserved:
                problems.append((("headers", header), f"{header} is set by the sink itself"))
        return problems

    def routed_fields(self) -> set[str]:
        """The fields the label templates name."""
        return set().union(*(template_fields(t) for t in self.labels.values()))

    def routes_by_level(self) -> bool:
        """'{level}' in a label template."""
        return any(map(uses_level, self.labels.values()))

    def inapplicable(self) -> dict[str, str]:
        """Keys that cannot apply with these settings (an error if the config sets them)."""
        if self.encoding == "protobuf":
            return {
                "compression": "only applies with encoding: json (protobuf bodies are "
                "always snappy compressed)"
            }
        return {}

    def with_base(self, base: Path) -> LokiSinkConfig:
        """Resolve the TLS files against ``base``."""
        if self.tls is None:
            return self
        return msgspec.structs.replace(self, tls=self.tls.with_base(base))

    def build(self, counters: CounterBlock) -> Sink:
        """The sink this config describes. The push API client."""
        from logcap.sinks.loki.sink import LokiSink  # http.client, ssl: loaded only where used

        return LokiSink(self, counters=counters)
