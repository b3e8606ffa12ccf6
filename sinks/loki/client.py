"""The loki sink's pushes: ``POST {url}/loki/api/v1/push`` with its headers on the shared
connection (sinks/_http.py says what each answer means; a 400 naming a per-entry
rejection, see REJECTIONS, is said so in the error)."""

from __future__ import annotations

from urllib.parse import urlsplit

from logcap.errors import DeliveryError, Permanent, RetryLater
from logcap.sinks._http import (
    Connection,
    auth_headers,
    retry_after,
    transport_error,
)
from logcap.sinks._http import (
    outcome as http_outcome,
)
from logcap.sinks.loki.config import LokiSinkConfig

__all__ = ["LokiClient", "RetryLater", "outcome", "retry_after", "transport_error"]
PUSH_PATH = "/loki/api/v1/push"
#: What Loki's 400 answers say when it refused entries (not the request's form).
REJECTIONS = (
    "out of order",
    "too old",
    "too new",
    "entry too far behind",
    "line too long",
    "entry too long",
    "greater than max",
    "max entry size",
)


def outcome(status: int, body: bytes, header: str | None) -> DeliveryError | None:
    """The error an answer means, or None if the push was delivered."""
    error = http_outcome(status, body, header, who="loki")
    if status == 400 and error is not None:
        lowered = body[:512].decode("utf-8", "replace").lower()
        if any(reason in lowered for reason in REJECTIONS):
            return Permanent(f"{error} (entries refused)", "rejected")
    return error


class LokiClient:
    """Pushes bodies to ``{url}/loki/api/v1/push`` with the configured headers."""

    def __init__(self, config: LokiSinkConfig) -> None:
        path = urlsplit(config.url).path.rstrip("/") + PUSH_PATH
        self.connection = Connection(config.url, path, config.timeout, config.tls)
        self.where = self.connection.where
        headers = {"User-Agent": "logcap", **config.headers}
        if config.tenant_id is not None:
            headers["X-Scope-OrgID"] = config.tenant_id
        headers.update(auth_headers(config.username, config.password, config.bearer_token))
        self.headers = headers

    @property
    def connections(self) -> int:
        """Connections opened so far (keep-alive keeps this low)."""
        return self.connection.connections

    def push(self, body: bytes, content_type: str, content_encoding: str | None) -> None:
        """Send one push; raise the :class:`DeliveryError` its outcome means."""
        headers = {**self.headers, "Content-Type": content_type}
        if content_encoding is not None:
            headers["Content-Encoding"] = content_encoding
        answer = self.connection.post(body, headers)
        error = outcome(answer.status, answer.body, answer.retry_after)
        if error is not None:
            raise error

    def close(self) -> None:
        """Drop the connection (the next push opens a new one)."""
        self.connection.close()
