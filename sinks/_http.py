"""Talking HTTP(S) to a destination, for the sinks that POST (``http``, ``loki``): the TLS
settings, one keep-alive connection, and what the answers mean.

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
Only the standard library is used: one dependency less in every sink process.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from logcap.config._base import StrictStruct, doc, resolve_path
from logcap.errors import DeliveryError, Permanent, Retryable, RetryLater

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
MAX_ANSWER_BYTES = 64 * 1024  # read this much of an answer; longer ones end the connection


Token = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        pattern=r"^[!-~]+\Z",
        description="A token: printable ASCII, no spaces or line breaks",
    ),
]
HeaderValue = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[\t -~\x80-\xff]*\Z",
        description="An HTTP header value: one line of Latin-1 text",
    ),
]


class TlsConfig(StrictStruct, frozen=True):
    """TLS to the destination (an 'https://' url)."""

    ca_file: Annotated[
        str | None, doc("CA certificates (PEM) to verify the server with; default: the system's.")
    ] = None
    cert_file: Annotated[str | None, doc("Client certificate (PEM) for mutual TLS.")] = None
    key_file: Annotated[
        str | None, doc("Private key (PEM) of cert_file, if cert_file does not hold it.")
    ] = None
    verify: Annotated[
        bool, doc("Verify the server's certificate and host name; false only for testing.")
    ] = True

    def __post_init__(self) -> None:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("tls.key_file needs tls.cert_file")

    def with_base(self, base: Path) -> TlsConfig:
        """Resolve relative file names against ``base``."""
        return msgspec.structs.replace(
            self,
            ca_file=self.ca_file and resolve_path(base, self.ca_file),
            cert_file=self.cert_file and resolve_path(base, self.cert_file),
            key_file=self.key_file and resolve_path(base, self.key_file),
        )


def client_problems(
    url: str,
    username: str | None,
    password: str | None,
    bearer_token: str | None,
    tls: TlsConfig | None,
) -> list[tuple[tuple[str, ...], str]]:
    """Auth settings that contradict each other, each at its key (a config error)."""
    problems: list[tuple[tuple[str, ...], str]] = []
    if username is not None and password is None:
        problems.append((("password",), "username and password go together (basic auth)"))
    if password is not None and username is None:
        problems.append((("username",), "username and password go together (basic auth)"))
    if username is not None and bearer_token is not None:
        problems.append(
            (("bearer_token",), "set either username/password or bearer_token, not both")
        )
    if tls is not None and not url.startswith("https://"):
        problems.append((("tls",), "tls is set but the url is not https://"))
    return problems


def tls_problems(tls: TlsConfig | None) -> list[tuple[tuple[str, ...], str]]:
    """TLS files that cannot be read (paths already resolved against the config's
    directory); the only check of a config that looks at the file system."""
    problems: list[tuple[tuple[str, ...], str]] = []
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key, None)
        if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            problems.append((("tls", key), f"no readable file {path}"))
    return problems


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():  # delay-seconds is 1*DIGIT (RFC 9110): no sign, no fraction
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def outcome(
    status: int, body: bytes, header: str | None, who: str = "server"
) -> DeliveryError | None:
    """The error an answer means, or None if the request was delivered."""
    if 200 <= status < 300:
        return None
    text = body[:512].decode("utf-8", "replace").strip()
    message = f"{who} answered {status}: {text}" if text else f"{who} answered {status}"
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


def auth_headers(
    username: str | None, password: str | None, bearer_token: str | None
) -> dict[str, str]:
    """The Authorization header for basic or bearer auth, if any."""
    if username is not None and password is not None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if bearer_token is not None:
        return {"Authorization": f"Bearer {bearer_token}"}
    return {}


class Answer:
    """What came back: status, the first bytes of the body, the Retry-After header."""

    __slots__ = ("body", "retry_after", "status")

    def __init__(self, status: int, body: bytes, retry_after: str | None) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after


class Connection:
    """One keep-alive connection to ``url`` (reopened as needed), POSTing to ``path``."""

    def __init__(self, url: str, path: str, timeout: float, tls: TlsConfig | None) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.path = path
        self.where = f"{parts.scheme}://{parts.netloc}{path.split('?', 1)[0]}"
        self.timeout = timeout
        self.tls = tls
        self._context: ssl.SSLContext | None = None
        self._conn: http.client.HTTPConnection | None = None
        self.connections = 0  # opened so far (keep-alive keeps this low)
        self.requests = 0

    def post(self, body: bytes | memoryview, headers: dict[str, str]) -> Answer:
        """Send one request and read its answer; transport failures raise Retryable."""
        for fresh_retry in (False, True):
            reused = self._conn is not None
            try:
                conn = self._conn or self._connect()
                self.requests += 1
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read(MAX_ANSWER_BYTES)
                if not response.isclosed():  # an answer too long to drain: start afresh
                    self.close()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and not fresh_retry and isinstance(exc, _STALE):
                    continue  # an idle keep-alive connection the server had closed
                raise transport_error(exc, self.where) from exc
            return Answer(response.status, data, response.getheader("Retry-After"))
        raise AssertionError("unreachable: the second try returns or raises")

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._tls()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._conn = conn
        self.connections += 1
        return conn

    def _tls(self) -> ssl.SSLContext:
        # built on first use, so a missing certificate file is a retryable delivery
        # error (fixed by the operator, nothing lost), not a sink that cannot start
        if self._context is None:
            tls = self.tls
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
