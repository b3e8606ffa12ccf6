"""The http sink's requests: its headers on the shared connection (sinks/_http.py says
what each answer means)."""

from __future__ import annotations

from urllib.parse import urlsplit

from logcap.errors import DeliveryError, RetryLater
from logcap.sinks._http import Connection, auth_headers, outcome, retry_after
from logcap.sinks.http.config import HttpSinkConfig

__all__ = ["HttpClient", "RetryLater", "retry_after"]


class HttpClient:
    """POSTs bodies to the configured URL with the configured headers."""

    def __init__(self, config: HttpSinkConfig) -> None:
        parts = urlsplit(config.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.connection = Connection(config.url, target, config.timeout, config.tls)
        headers = {"Content-Type": "application/x-ndjson", "User-Agent": "logcap"}
        headers.update(config.headers)
        headers.update(auth_headers(config.username, config.password, config.bearer_token))
        if config.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        self.headers = headers

    @property
    def connections(self) -> int:
        """Connections opened so far (keep-alive keeps this low)."""
        return self.connection.connections

    def post(self, body: bytes | memoryview) -> None:
        """Send one request; raise the :class:`DeliveryError` its outcome means."""
        answer = self.connection.post(body, self.headers)
        error: DeliveryError | None = outcome(answer.status, answer.body, answer.retry_after)
        if error is not None:
            raise error

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        self.connection.close()
