"""``logcap tap``: print the entries passing through a running agent, live, like ``tail -f``.

It reads the agent's ``GET /tap`` stream (logcap/tap.py): entries go to stdout as the
sinks receive them, one NDJSON line each; notes go to stderr, so the output can be piped
into ``jq`` as it is. The agent never waits for a tap, so under load a tap misses
batches, and says how many. Exit status: 0 after ``--limit`` entries, on Ctrl-C or when
the agent stops; 1 when the agent cannot be reached, refuses the request (an unknown
sink, a bad ``--when``) or the stream breaks.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from typing import BinaryIO
from urllib.parse import urlencode, urlsplit

import click

CONNECT_TIMEOUT = 10.0  # seconds to connect and get the answer's headers
NOTE = "logcap tap: a tap may miss entries under load; misses are reported"


class TapFailed(Exception):
    """The tap cannot go on; the message says why (exit status 1)."""


@click.command()
@click.option(
    "--api",
    "api_url",
    default="http://127.0.0.1:9598",
    show_default=True,
    help="The agent's API (api.address of its config).",
)
@click.option(
    "--token",
    default=lambda: os.environ.get("LOGCAP_API_TOKEN"),
    help="The agent's api.token, if it has one (default: $LOGCAP_API_TOKEN).",
)
@click.option("--source", "sources", multiple=True, help="Only entries of SOURCE (repeatable).")
@click.option("--sink", default=None, help="Only what this sink receives (its inputs and when).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after N entries.")
@click.option(
    "--rate",
    type=click.IntRange(min=0),
    default=None,
    help="Look at most at N entries a second (default 2000; 0: no cap). Batches over it "
    "are skipped and reported as missed: a tap never costs the pipeline more than that.",
)
@click.option(
    "--when",
    "conditions",
    multiple=True,
    help="FIELD=VALUE or FIELD~REGEX on message, level, source, labels.x, fields.x "
    "(repeatable: all must match).",
)
def tap(
    api_url: str,
    token: str | None,
    sources: tuple[str, ...],
    sink: str | None,
    limit: int | None,
    rate: int | None,
    conditions: tuple[str, ...],
) -> None:
    """Print live entries as they pass through a running agent (it never waits for us)."""
    query: list[tuple[str, str]] = [("source", name) for name in sources]
    query += [("when", text) for text in conditions]
    if sink is not None:
        query.append(("sink", sink))
    if limit is not None:
        query.append(("limit", str(limit)))
    if rate is not None:
        query.append(("rate", str(rate)))
    out = click.get_binary_stream("stdout")
    try:
        response = _open(api_url, query, token)
        click.echo(NOTE, err=True)
        _follow(response, out, limit)
    except KeyboardInterrupt:
        pass
    except TapFailed as exc:
        click.echo(f"logcap tap: {exc}", err=True)
        sys.exit(1)
    except BrokenPipeError:  # stdout closed early (| head): done, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def _open(
    api_url: str, query: list[tuple[str, str]], token: str | None = None
) -> http.client.HTTPResponse:
    """The answer to ``GET /tap``, its headers read; TapFailed unless it is 200."""
    url = urlsplit(api_url if "://" in api_url else f"http://{api_url}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise TapFailed(f"--api {api_url!r}: give http://HOST:PORT")
    connection_type = (
        http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_type(url.hostname, url.port, timeout=CONNECT_TIMEOUT)
    target = url.path.rstrip("/") + "/tap" + (f"?{urlencode(query)}" if query else "")
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        raise TapFailed(f"cannot reach the agent at {api_url}: {_reason(exc)}") from exc
    if response.status != 200:
        raise TapFailed(f"the agent refused the tap ({response.status}): {_error(response)}")
    if connection.sock is not None:
        connection.sock.settimeout(None)  # a quiet pipeline is not a dead agent
    return response


def _follow(response: http.client.HTTPResponse, out: BinaryIO, limit: int | None) -> None:
    """Copy entries to ``out`` and report control lines until the stream ends."""
    printed = 0
    try:
        for line in response:
            if not line.startswith(b'{"tap"'):
                out.write(line)
                out.flush()
                printed += 1
                if limit is not None and printed >= limit:
                    return
                continue
            control = json.loads(line)
            if control["tap"] == "missed":
                click.echo(
                    f"logcap tap: missed {control['batches']} batch(es): the tap fell behind, "
                    "the pipeline did not wait",
                    err=True,
                )
            elif control["tap"] == "end":
                if control.get("reason") == "stopping":
                    click.echo("logcap tap: the agent is stopping", err=True)
                return
    except BrokenPipeError:
        raise  # stdout, not the stream (a socket read fails with a reset): see tap()
    except (OSError, http.client.HTTPException) as exc:
        raise TapFailed(f"the stream broke: {_reason(exc)}") from exc
    raise TapFailed("the agent closed the stream")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _error(response: http.client.HTTPResponse) -> str:
    """The message of an error answer (``{"error": ...}``), or its text."""
    body = response.read(64 * 1024)
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip() or (response.reason or "")
