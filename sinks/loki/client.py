"""One keep-alive HTTP(S) connection to Loki's push endpoint, and what its answers mean.

Outcomes, in one place::

    2xx                                   delivered
    429, 5xx                              RetryLater (rate_limited / server_error), with
                                          the Retry-After the server gave, in seconds
    408                                   Retryable (timeout)
    400 naming a per-entry rejection      Permanent (rejected): out of order, too old,
    (see REJECTIONS), other 4xx           too far behind, line too long, ...
    connection refused/reset, TLS, bad    Retryable (connection); the connection is
    response                              dropped and opened again by the next push
    timeout                               Retryable (timeout)

A push that fails on a *reused* connection before any answer (the server closed an idle
keep-alive connection) is sent once more on a new one before it counts as failed.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import socket
import ssl
import time
from urllib.parse import urlsplit

from logcap.errors import DeliveryError, Permanent, Retryable
from logcap.sinks.loki.config import LokiSinkConfig

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
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class RetryLater(Retryable):
    """Loki refused for now (429, 5xx); ``retry_after`` is the delay it asked for, in
    seconds, or None (the sink runner passes it on to the retry process)."""

    def __init__(self, message: str, code: str, retry_after: float | None) -> None:
        super().__init__(message, code, retry_after)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def outcome(status: int, body: bytes, header: str | None) -> DeliveryError | None:
    """The error an answer means, or None if the push was delivered."""
    if 200 <= status < 300:
        return None
    text = body[:512].decode("utf-8", "replace").strip()
    message = f"loki answered {status}: {text}" if text else f"loki answered {status}"
    if status == 429:
        return RetryLater(message, "rate_limited", retry_after(header))
    if status >= 500:
        return RetryLater(message, "server_error", retry_after(header))
    if status == 408:
        return Retryable(message, "timeout")
    lowered = text.lower()
    if status == 400 and any(reason in lowered for reason in REJECTIONS):
        return Permanent(f"{message} (entries refused)", "rejected")
    return Permanent(message, "rejected")


def transport_error(exc: BaseException, where: str) -> DeliveryError:
    """A failure to talk to Loki at all: always worth another try."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return Retryable(f"{where}: timed out", "timeout")
    return Retryable(f"{where}: {type(exc).__name__}: {exc}", "connection")


class LokiClient:
    """Pushes bodies to ``{url}/loki/api/v1/push`` with the configured headers."""

    def __init__(self, config: LokiSinkConfig) -> None:
        parts = urlsplit(config.url)
        self.config = config
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.path = parts.path.rstrip("/") + PUSH_PATH
        self.where = f"{parts.scheme}://{parts.netloc}{self.path}"
        headers = {"User-Agent": "logcap", **config.headers}
        if config.tenant_id is not None:
            headers["X-Scope-OrgID"] = config.tenant_id
        if config.username is not None and config.password is not None:
            token = base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        elif config.bearer_token is not None:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        self.headers = headers
        self._context: ssl.SSLContext | None = None
        self._conn: http.client.HTTPConnection | None = None
        self.connections = 0  # opened so far (keep-alive keeps this low)

    def push(self, body: bytes, content_type: str, content_encoding: str | None) -> None:
        """Send one push; raise the :class:`DeliveryError` its outcome means."""
        headers = {**self.headers, "Content-Type": content_type}
        if content_encoding is not None:
            headers["Content-Encoding"] = content_encoding
        for fresh_retry in (False, True):
            reused = self._conn is not None
            try:
                conn = self._conn or self._connect()
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
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
        """Drop the connection (the next push opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
