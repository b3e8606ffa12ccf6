"""One keep-alive HTTP(S) connection to the sink's URL, and what its answers mean.

Outcomes, in one place::

    2xx                          delivered
    429                          RetryLater (rate_limited)  } with the Retry-After the
    5xx                          RetryLater (server_error)  } server gave, in seconds
    408                          Retryable (timeout)
    other 1xx-4xx (3xx too)      Permanent (rejected): the same request would get the
                                 same answer; the batch goes to the dead letter queue
    refused, reset, TLS failure, Retryable (connection); the connection is dropped and
    malformed answer             opened again by the next request
    socket timeout               Retryable (timeout)

A request that fails on a *reused* connection before any answer (the server closed an
idle keep-alive connection) is sent once more on a new one before it counts as failed.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import socket
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from logcap.errors import DeliveryError, Permanent, Retryable
from logcap.sinks.http.config import HttpSinkConfig

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
MAX_ANSWER_BYTES = 64 * 1024  # read this much of an answer; longer ones end the connection


class RetryLater(Retryable):
    """The server refused for now (429, 5xx); ``retry_after`` is the delay it asked for,
    in seconds, or None."""

    def __init__(self, message: str, code: str, retry_after: float | None) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


def retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now())


def outcome(status: int, body: bytes, header: str | None) -> DeliveryError | None:
    """The error an answer means, or None if the request was delivered."""
    if 200 <= status < 300:
        return None
    text = body[:512].decode("utf-8", "replace").strip()
    message = f"server answered {status}: {text}" if text else f"server answered {status}"
    if status == 429:
        return RetryLater(message, "rate_limited", retry_after(header))
    if status >= 500:
        return RetryLater(message, "server_error", retry_after(header))
    if status == 408:
        return Retryable(message, "timeout")
    return Permanent(message, "rejected")


def transport_error(exc: BaseException, where: str) -> DeliveryError:
    """A failure to talk to the server at all: always worth another try."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return Retryable(f"{where}: timed out", "timeout")
    return Retryable(f"{where}: {type(exc).__name__}: {exc}", "connection")


class HttpClient:
    """POSTs bodies to the configured URL with the configured headers."""

    def __init__(self, config: HttpSinkConfig) -> None:
        parts = urlsplit(config.url)
        self.config = config
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.where = f"{parts.scheme}://{parts.netloc}{parts.path}"
        headers = {"Content-Type": "application/x-ndjson", "User-Agent": "logcap"}
        headers.update(config.headers)
        if config.username is not None and config.password is not None:
            token = base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        elif config.bearer_token is not None:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        if config.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        self.headers = headers
        self._context: ssl.SSLContext | None = None
        self._conn: http.client.HTTPConnection | None = None
        self.connections = 0  # opened so far (keep-alive keeps this low)
        self.requests = 0

    def post(self, body: bytes | memoryview) -> None:
        """Send one request; raise the :class:`DeliveryError` its outcome means."""
        for fresh_retry in (False, True):
            reused = self._conn is not None
            try:
                conn = self._conn or self._connect()
                self.requests += 1
                conn.request("POST", self.target, body=body, headers=self.headers)
                response = conn.getresponse()
                data = response.read(MAX_ANSWER_BYTES)
                if not response.isclosed():  # an answer too long to drain: start afresh
                    self.close()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and not fresh_retry and isinstance(exc, _STALE):
                    continue  # an idle keep-alive connection the server had closed
                raise transport_error(exc, self.where) from exc
            break
        error = outcome(response.status, data, response.getheader("Retry-After"))
        if error is not None:
            raise error

    def _connect(self) -> http.client.HTTPConnection:
        timeout = self.config.timeout
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self._tls()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self._conn = conn
        self.connections += 1
        return conn

    def _tls(self) -> ssl.SSLContext:
        # built on first use, so a missing certificate file is a retryable delivery
        # error (fixed by the operator, nothing lost), not a sink that cannot start
        if self._context is None:
            tls = self.config.tls
            context = ssl.create_default_context(cafile=tls.ca_file if tls else None)
            if tls is not None and tls.cert_file is not None:
                context.load_cert_chain(tls.cert_file, tls.key_file)
            if tls is not None and not tls.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._context = context
        return self._context

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
