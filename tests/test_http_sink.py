"""The http sink: NDJSON batches POSTed as they are, split on entry boundaries, gzip,
headers and auth, TLS (server and client certificates), keep-alive and reconnection,
what every answer means, config errors, and ``logcap run`` file → http end to end
(exactly once; 503s retried; a 400 dead-lettered).

The server is a real ThreadingHTTPServer on 127.0.0.1 whose answers the test scripts.
"""

from __future__ import annotations

import base64
import email.utils
import gzip
import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from logcap.dlq.record import read_segment
from logcap.dlq.writer import dlq_directory, segment_paths
from logcap.errors import ConfigError, DeliveryError, Permanent, Retryable
from logcap.metrics import NullBlock
from logcap.sinks.http.client import RetryLater, retry_after
from logcap.sinks.http.config import HttpSinkConfig
from logcap.sinks.http.sink import HttpSink, split_entries
from logcap.sinks.registry import build_sink
from tests._component_helpers import batch_view, build_batch, config_from_yaml
from tests.conftest import free_port, wait_for, write_config

TS = 1_704_067_200_000_000_000


@dataclass
class Request:
    """One request as the server saw it (the body decompressed if it was gzip)."""

    path: str
    headers: dict[str, str]
    raw: bytes
    body: bytes
    client_port: int


Answer = tuple[int, dict[str, str], bytes]  # status, headers, body


@dataclass
class Server:
    """A scripted HTTP server: ``answer`` decides each response (default 200)."""

    url: str
    requests: list[Request] = field(default_factory=list)
    answer: Callable[[Request], Answer] = lambda request: (200, {}, b"")
    close_after_answer: bool = False  # drop the connection without saying so
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def lines(self) -> list[bytes]:
        """Entry lines of every request answered 2xx, in arrival order."""
        with self.lock:
            return [line for r in self.requests for line in r.body.splitlines()]


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            gzipped = self.headers.get("Content-Encoding") == "gzip"
            request = Request(
                self.path,
                dict(self.headers.items()),
                raw,
                gzip.decompress(raw) if gzipped else raw,
                self.client_address[1],
            )
            status, headers, body = server.answer(request)
            if 200 <= status < 300:
                with server.lock:
                    server.requests.append(request)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting (timeout tests)
            if server.close_after_answer:
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """Start scripted servers (plain or TLS); all are shut down at teardown."""
    running: list[tuple[http.server.ThreadingHTTPServer, threading.Thread, Server]] = []

    def start(tls: ssl.SSLContext | None = None) -> Server:
        scheme = "https" if tls else "http"
        server = Server(url="")
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
        httpd.daemon_threads = True
        if tls is not None:
            httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        server.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}/ingest?stream=app"
        thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((httpd, thread, server))
        return server

    yield start
    for httpd, thread, server in running:
        server.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def http_config(base: Path, body: str) -> HttpSinkConfig:
    """The config of sink ``out`` from a YAML flow mapping, as ``logcap run`` parses it."""
    text = f"sources:\n  app: {{type: file, include: ['*.log']}}\nsinks:\n  out: {body}\n"
    config = config_from_yaml(text, base).sinks["out"]
    assert isinstance(config, HttpSinkConfig)
    return config


@pytest.fixture
def make_sink(tmp_path: Path) -> Iterator[Callable[[str], HttpSink]]:
    sinks: list[HttpSink] = []

    def make(body: str) -> HttpSink:
        sink = build_sink(http_config(tmp_path, body), NullBlock())
        assert isinstance(sink, HttpSink)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def batch(messages: list[str]) -> bytes:
    return build_batch([("app", TS, messages)])[0]


def payload(slot: bytes) -> bytes:
    return bytes(batch_view(slot).payload)


# -- what is sent -----------------------------------------------------------------------


def test_batch_payload_is_posted_unchanged_as_ndjson(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink]
) -> None:
    server = start_server()
    sink = make_sink(f"{{type: http, url: '{server.url}'}}")
    slots = [batch(["first", 'quote " \\ 日本語']), batch(["second"])]
    for slot in slots:
        sink.write(batch_view(slot))
    assert sink.flush() == []
    assert [r.body for r in server.requests] == [payload(s) for s in slots]
    request = server.requests[0]
    assert request.path == "/ingest?stream=app"
    assert request.headers["Content-Type"] == "application/x-ndjson"
    assert "Content-Encoding" not in request.headers
    assert "Authorization" not in request.headers


def test_gzip_compression_sends_one_gzip_body_per_request(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink]
) -> None:
    server = start_server()
    sink = make_sink(f"{{type: http, url: '{server.url}', compression: gzip}}")
    slot = batch([f"entry {i} " + "g" * 200 for i in range(50)])
    sink.write(batch_view(slot))
    [request] = server.requests
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.body == payload(slot)
    assert len(request.raw) < len(payload(slot)) // 5


@pytest.mark.parametrize(
    ("keys", "authorization"),
    [
        (
            "username: alice, password: 's3cr:t'",
            "Basic " + base64.b64encode(b"alice:s3cr:t").decode(),
        ),
        ("bearer_token: tok-123", "Bearer tok-123"),
        ("headers: {Authorization: 'Custom xyz'}", "Custom xyz"),
    ],
    ids=["basic", "bearer", "header"],
)
def test_auth_and_custom_headers_are_sent_on_every_request(
    start_server: Callable[..., Server],
    make_sink: Callable[[str], HttpSink],
    keys: str,
    authorization: str,
) -> None:
    server = start_server()
    extra = "" if "headers" in keys else ", headers: {X-Tenant: acme, Content-Type: text/plain}"
    sink = make_sink(f"{{type: http, url: '{server.url}', {keys}{extra}}}")
    sink.write(batch_view(batch(["one"])))
    sink.write(batch_view(batch(["two"])))
    assert [r.headers["Authorization"] for r in server.requests] == [authorization] * 2
    if extra:
        assert server.requests[0].headers["X-Tenant"] == "acme"
        assert server.requests[0].headers["Content-Type"] == "text/plain"  # replaced


def test_large_batch_is_split_between_entries_within_max_request_bytes(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink]
) -> None:
    server = start_server()
    sink = make_sink(f"{{type: http, url: '{server.url}', max_request_bytes: 4KiB}}")
    slot = batch([f"entry {i} " + "s" * (i % 300) for i in range(200)])
    sink.write(batch_view(slot))
    bodies = [r.body for r in server.requests]
    assert len(bodies) > 10
    assert all(len(body) <= 4096 and body.endswith(b"\n") for body in bodies)
    assert b"".join(bodies) == payload(slot)
    for body in bodies:
        [json.loads(line) for line in body.splitlines()]  # whole entries only


def test_entry_larger_than_max_request_bytes_is_sent_alone(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink]
) -> None:
    server = start_server()
    sink = make_sink(f"{{type: http, url: '{server.url}', max_request_bytes: 1KiB}}")
    slot = batch(["small", "big " + "b" * 5000, "small again"])
    sink.write(batch_view(slot))
    assert [len(r.body.splitlines()) for r in server.requests] == [1, 1, 1]
    assert b"".join(r.body for r in server.requests) == payload(slot)


@pytest.mark.parametrize("limit", [1, 7, 64, 100, 1000, 70_000, 10**6])
def test_split_pieces_end_at_entry_ends_and_cover_the_payload(limit: int) -> None:
    lines = [b"%d:" % i + b"x" * (i * 37 % 90_000) + b"\n" for i in range(60)]
    data = memoryview(b"".join(lines))
    pieces = [bytes(piece) for piece in split_entries(data, limit)]
    assert b"".join(pieces) == bytes(data)
    assert all(piece.endswith(b"\n") for piece in pieces)
    # a piece is over the limit only when it is a single entry
    assert all(len(piece) <= limit or piece.count(b"\n") == 1 for piece in pieces)
    if limit >= max(map(len, lines)):
        assert len(pieces) < len(lines)  # entries that fit together share a piece


# -- connections ------------------------------------------------------------------------


def test_one_keep_alive_connection_serves_many_batches(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink]
) -> None:
    server = start_server()
    sink = make_sink(f"{{type: http, url: '{server.url}'}}")
    for i in range(20):
        sink.write(batch_view(batch([f"{i}"])))
    assert len(server.requests) == 20
    assert len({r.client_port for r in server.requests}) == 1
    assert sink.client.connections == 1


def test_connection_the_server_dropped_is_reopened_without_failing_a_batch(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink]
) -> None:
    server = start_server()
    server.close_after_answer = True  # like an idle timeout: closed without a word
    sink = make_sink(f"{{type: http, url: '{server.url}'}}")
    for i in range(5):
        sink.write(batch_view(batch([f"{i}"])))
    assert [r.body for r in server.requests] == [payload(batch([f"{i}"])) for i in range(5)]
    assert sink.client.connections == 5


def test_nothing_listening_is_a_retryable_connection_error(
    make_sink: Callable[[str], HttpSink],
) -> None:
    sink = make_sink(f"{{type: http, url: 'http://127.0.0.1:{free_port()}/x'}}")
    with pytest.raises(Retryable) as caught:
        sink.write(batch_view(batch(["nobody hears this"])))
    assert caught.value.code == "connection"
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_server_slower_than_timeout_is_a_retryable_timeout(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink]
) -> None:
    server = start_server()

    def slow(request: Request) -> Answer:
        server.release.wait(10)  # set at teardown
        return 200, {}, b""

    server.answer = slow
    sink = make_sink(f"{{type: http, url: '{server.url}', timeout: 300ms}}")
    with pytest.raises(Retryable) as caught:
        sink.write(batch_view(batch(["slow"])))
    assert caught.value.code == "timeout"
    server.release.set()


# -- answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "kind", "code", "delay"),
    [
        (200, {}, None, "", None),
        (202, {}, None, "", None),
        (204, {}, None, "", None),
        (429, {"Retry-After": "7"}, RetryLater, "rate_limited", 7.0),
        (429, {}, RetryLater, "rate_limited", None),
        (503, {"Retry-After": "120"}, RetryLater, "server_error", 120.0),
        (500, {"Retry-After": "soon"}, RetryLater, "server_error", None),
        (502, {}, RetryLater, "server_error", None),
        (408, {}, Retryable, "timeout", None),
        (400, {}, Permanent, "rejected", None),
        (401, {}, Permanent, "rejected", None),
        (404, {}, Permanent, "rejected", None),
        (413, {}, Permanent, "rejected", None),
        (301, {"Location": "/elsewhere"}, Permanent, "rejected", None),
    ],
)
def test_answer_status_decides_the_outcome(
    start_server: Callable[..., Server],
    make_sink: Callable[[str], HttpSink],
    status: int,
    headers: dict[str, str],
    kind: type[DeliveryError] | None,
    code: str,
    delay: float | None,
) -> None:
    server = start_server()
    server.answer = lambda request: (
        status,
        headers,
        b"the server's reason" if status > 204 else b"",
    )
    sink = make_sink(f"{{type: http, url: '{server.url}'}}")
    if kind is None:
        sink.write(batch_view(batch(["accepted"])))
        assert len(server.requests) == 1
        return
    with pytest.raises(kind) as caught:
        sink.write(batch_view(batch(["refused"])))
    assert caught.value.code == code
    assert f"answered {status}: the server's reason" in str(caught.value)
    if kind is RetryLater:
        assert isinstance(caught.value, RetryLater)
        assert caught.value.retry_after == delay
    # the connection is still good for the next batch
    server.answer = lambda request: (200, {}, b"")
    sink.write(batch_view(batch(["next"])))
    assert sink.client.connections == 1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert retry_after("30", now) == 30.0
    assert retry_after(" 0 ", now) == 0.0
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert retry_after(date, now) == pytest.approx(90.0)
    past = email.utils.formatdate(now - 90, usegmt=True)
    assert retry_after(past, now) == 0.0
    for unreadable in (None, "", "-5", "1.5", "nan", "tomorrow"):
        assert retry_after(unreadable, now) is None


def test_a_failing_request_fails_the_whole_batch(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink]
) -> None:
    server = start_server()
    server.answer = lambda r: (503, {}, b"") if b"second half" in r.body else (200, {}, b"")
    sink = make_sink(f"{{type: http, url: '{server.url}', max_request_bytes: 1KiB}}")
    slot = batch(["first half " + "a" * 900, "second half " + "b" * 900])
    with pytest.raises(RetryLater):
        sink.write(batch_view(slot))
    assert len(server.requests) == 1  # the first request was delivered; the batch is retried


# -- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, via openssl."""
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=logcap test CA")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *ext)  # fmt: skip
    return d


def server_tls(certs: Path, require_client: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certs / "ca.pem")
    return context


def test_https_server_verified_with_ca_file(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink], certs: Path
) -> None:
    server = start_server(server_tls(certs))
    sink = make_sink(f"{{type: http, url: '{server.url}', tls: {{ca_file: '{certs}/ca.pem'}}}}")
    sink.write(batch_view(batch(["over tls"])))
    assert server.lines() == payload(batch(["over tls"])).splitlines()


def test_https_server_with_an_unknown_ca_is_refused_unless_verify_is_off(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink], certs: Path
) -> None:
    server = start_server(server_tls(certs))
    checked = make_sink(f"{{type: http, url: '{server.url}'}}")  # the system's CAs
    with pytest.raises(Retryable) as caught:
        checked.write(batch_view(batch(["refused"])))
    assert caught.value.code == "connection"
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    unchecked = make_sink(f"{{type: http, url: '{server.url}', tls: {{verify: false}}}}")
    unchecked.write(batch_view(batch(["accepted"])))
    assert len(server.requests) == 1


def test_mutual_tls_sends_the_client_certificate(
    start_server: Callable[..., Server], make_sink: Callable[[str], HttpSink], certs: Path
) -> None:
    server = start_server(server_tls(certs, require_client=True))
    tls = f"ca_file: {certs}/ca.pem, cert_file: {certs}/client.pem, key_file: {certs}/client.key"
    sink = make_sink(f"{{type: http, url: '{server.url}', tls: {{{tls}}}}}")
    sink.write(batch_view(batch(["with a client certificate"])))
    assert len(server.requests) == 1
    anonymous = make_sink(
        f"{{type: http, url: '{server.url}', tls: {{ca_file: '{certs}/ca.pem'}}}}"
    )
    with pytest.raises(Retryable) as caught:
        anonymous.write(batch_view(batch(["without"])))
    assert caught.value.code == "connection"
    assert len(server.requests) == 1


# -- config -----------------------------------------------------------------------------


def test_every_http_sink_key_reaches_the_config(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):  # validation checks that TLS files exist
        (tmp_path / name).write_text("placeholder\n")
    config = http_config(
        tmp_path,
        "{type: http, url: 'https://h:8443/p?q=1', compression: gzip, headers: {X-A: b}, "
        "username: u, password: p, tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem, "
        "verify: false}, timeout: 2s, max_request_bytes: 64KiB}",
    )
    assert config.tls is not None
    assert msgspec.structs.asdict(config.tls) == {
        "ca_file": str(tmp_path / "ca.pem"),  # relative to the config file
        "cert_file": str(tmp_path / "c.pem"),
        "key_file": str(tmp_path / "k.pem"),
        "verify": False,
    }
    assert (config.url, config.compression, config.headers) == (
        "https://h:8443/p?q=1",
        "gzip",
        {"X-A": "b"},
    )
    assert (config.username, config.password, config.timeout) == ("u", "p", 2.0)
    assert config.max_request_bytes == 65536
    bearer = http_config(tmp_path, "{type: http, url: 'http://h/', bearer_token: t}")
    assert bearer.bearer_token == "t"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{type: http, url: 'http://h/', retries: 3}", "unknown key 'retries'"),
        ("{type: http}", "missing required field `url`"),
        ("{type: http, url: 'ftp://h/x'}", "Expected `str` matching"),
        ("{type: http, url: 'h:80/x'}", "Expected `str` matching"),
        ("{type: http, url: 'http://h/', compression: zstd}", "'zstd' is not one of none, gzip"),
        ("{type: http, url: 'http://h/', tls: {verify: false}}", "url is not https://"),
        ("{type: http, url: 'https://h/', tls: {key_file: k.pem}}", "key_file needs tls.cert_file"),
        ("{type: http, url: 'https://h/', tls: {ca: x}}", "unknown key 'ca'"),
        ("{type: http, url: 'http://h/', username: u}", "username and password go together"),
        (
            "{type: http, url: 'http://h/', username: u, password: p, bearer_token: t}",
            "either username/password or bearer_token",
        ),
        ("{type: http, url: 'http://h/', bearer_token: ''}", "length >= 1"),
        (
            "{type: http, url: 'http://h/', headers: {Content-Length: '5'}}",
            "cannot set content-length",
        ),
        (
            "{type: http, url: 'http://h/', bearer_token: t, headers: {authorization: x}}",
            "cannot set authorization",
        ),
        ("{type: http, url: 'http://h/', headers: {'bad name': x}}", "Expected `str` matching"),
        ("{type: http, url: 'http://h/', headers: {X-A: \"a\\nb\"}}", "Expected `str` matching"),
        ("{type: http, url: 'http://h/', timeout: 0s}", "greater than 0"),
        ("{type: http, url: 'http://h/', max_request_bytes: 100}", "at least 1024"),
    ],
)
def test_http_sink_config_errors(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        http_config(tmp_path, body)
    assert problem in str(caught.value)
    assert "sinks.out" in str(caught.value)


# -- logcap run: file source → http sink ------------------------------------------------


def agent_config(
    tmp_path: Path, url: str, address: str, dispatcher: str = "batch_timeout: 50ms"
) -> Path:
    (tmp_path / "logs").mkdir()
    return write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"]}}
sinks:
  web: {{type: http, url: "{url}", compression: gzip}}
dispatcher: {{{dispatcher}, checkpoint_interval: 200ms}}
retry: {{initial_backoff: 50ms, max_backoff: 200ms}}
""",
        address,
    )


def messages(server: Server) -> list[str]:
    return [json.loads(line)["message"] for line in server.lines()]


def test_logcap_run_delivers_every_line_to_the_http_sink_exactly_once(
    tmp_path: Path, start_server: Callable[..., Server], start_agent: Callable[..., object]
) -> None:
    server = start_server()
    address = f"127.0.0.1:{free_port()}"
    agent = start_agent(agent_config(tmp_path, server.url, address), address)
    agent.wait_ready()  # type: ignore[attr-defined]
    expected = [f"line {i:05d} " + "p" * 100 for i in range(10_000)]
    with open(tmp_path / "logs" / "app.log", "w") as log:
        for start in range(0, len(expected), 1000):
            log.write("".join(f"{m}\n" for m in expected[start : start + 1000]))
            log.flush()
    wait_for(lambda: len(server.lines()) >= len(expected), 60, "10,000 entries at the server")
    assert agent.stop() == 0  # type: ignore[attr-defined]
    assert messages(server) == expected  # each once, in order


def test_logcap_run_retries_503_answers_until_everything_arrives(
    tmp_path: Path, start_server: Callable[..., Server], start_agent: Callable[..., object]
) -> None:
    server = start_server()
    # the first three requests are refused (fewer than open the circuit breaker)
    refusals = iter(range(3))

    def flaky(request: Request) -> Answer:
        if next(refusals, None) is not None:
            return 503, {"Retry-After": "0"}, b"warming up"
        return 200, {}, b""

    server.answer = flaky
    address = f"127.0.0.1:{free_port()}"
    agent = start_agent(agent_config(tmp_path, server.url, address), address)
    agent.wait_ready()  # type: ignore[attr-defined]
    expected = [f"retried {i:04d}" for i in range(2000)]
    with open(tmp_path / "logs" / "app.log", "w") as log:
        for start in range(0, len(expected), 100):
            log.write("".join(f"{m}\n" for m in expected[start : start + 100]))
            log.flush()
    wait_for(lambda: len(set(messages(server))) >= len(expected), 60, "every entry at the server")
    assert agent.stop() == 0  # type: ignore[attr-defined]
    assert sorted(messages(server)) == expected  # refused requests delivered nothing
    assert next(refusals, None) is None


def test_logcap_run_dead_letters_a_batch_the_server_rejects_with_400(
    tmp_path: Path, start_server: Callable[..., Server], start_agent: Callable[..., object]
) -> None:
    server = start_server()
    server.answer = lambda r: (400, {}, b"bad entry") if b"poison" in r.body else (200, {}, b"")
    address = f"127.0.0.1:{free_port()}"
    # small batches: the rejected one holds the poison line and a few others
    config = agent_config(tmp_path, server.url, address, "batch_max_events: 10")
    agent = start_agent(config, address)
    agent.wait_ready()  # type: ignore[attr-defined]
    lines = [f"ok {i:03d}" for i in range(300)]
    lines[150] = "poison 150"
    (tmp_path / "logs" / "app.log").write_text("".join(f"{m}\n" for m in lines))

    def dead_lettered() -> int:
        return int(agent.metric("logcap_dlq_records_total", component="web"))  # type: ignore[attr-defined]

    wait_for(lambda: dead_lettered() >= 1, 60, "the rejected batch in the DLQ")
    wait_for(
        lambda: len(server.lines()) + dead_entries(tmp_path) >= len(lines),
        60,
        "every other entry at the server",
    )
    assert agent.stop() == 0  # type: ignore[attr-defined]
    [record] = [
        r for path in segment_paths(dlq_directory(tmp_path / "data")) for _, r in read_segment(path)
    ]
    assert (record.sink, record.kind) == ("web", "permanent")
    assert "answered 400: bad entry" in record.reason
    rejected = [
        json.loads(line)["message"] for line in bytes(batch_view(record.batch).payload).splitlines()
    ]
    assert "poison 150" in rejected
    assert len(rejected) <= 10
    delivered = messages(server)
    assert sorted(delivered + rejected) == sorted(lines)  # each in exactly one place


def dead_entries(tmp_path: Path) -> int:
    directory = dlq_directory(tmp_path / "data")
    if not directory.exists():
        return 0
    return sum(r.entries for path in segment_paths(directory) for _, r in read_segment(path))
