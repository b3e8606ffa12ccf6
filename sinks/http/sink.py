"""The ``http`` sink: each batch's NDJSON payload POSTed as it is (no re-encoding).

A payload larger than ``max_request_bytes`` is sent in several requests, cut between
entries (every b"\\n" ends one, see dispatch/batch.py), in order. A batch narrowed to
the sink's ``inputs`` may be several pieces of the payload: pieces sharing a request are
joined (a copy of those entries only). A batch counts as
delivered once every one of its requests got a 2xx; if one fails, the whole batch is
retried, so the requests that had succeeded are delivered again (at least once).
Requests are synchronous: ``write`` returns or raises once the server answered.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from logcap.dispatch.batch import Batch
from logcap.sinks.base import Failures
from logcap.sinks.http.client import HttpClient
from logcap.sinks.http.config import HttpSinkConfig

_SEARCH = 64 * 1024  # bytes copied at a time while looking back for an entry's end


def split_entries(payload: memoryview, limit: int) -> Iterator[memoryview]:
    """Views of ``payload`` of at most ``limit`` bytes, each ending at the end of an entry;
    an entry longer than ``limit`` is a view of its own."""
    start, total = 0, len(payload)
    while total - start > limit:
        end = _last_newline(payload, start, start + limit)
        if end < 0:  # one entry longer than the limit: it goes alone
            end = _next_newline(payload, start + limit, total)
        yield payload[start : end + 1]
        start = end + 1
    if start < total:
        yield payload[start:]


def _last_newline(payload: memoryview, start: int, stop: int) -> int:
    """Index of the last b"\\n" in payload[start:stop], or -1 (copies small windows only)."""
    while stop > start:
        low = max(start, stop - _SEARCH)
        found = bytes(payload[low:stop]).rfind(b"\n")
        if found >= 0:
            return low + found
        stop = low
    return -1


def _next_newline(payload: memoryview, start: int, total: int) -> int:
    """Index of the first b"\\n" at or after ``start`` (the payload ends with one)."""
    while start < total:
        high = min(total, start + _SEARCH)
        found = bytes(payload[start:high]).find(b"\n")
        if found >= 0:
            return start + found
        start = high
    return total - 1


def requests(chunks: list[memoryview], limit: int) -> Iterator[list[memoryview]]:
    """The pieces of each request for a batch's ``chunks``: at most ``limit`` bytes
    together, cut between entries; an entry longer than ``limit`` goes alone."""
    pieces: list[memoryview] = []
    size = 0
    for chunk in chunks:
        for part in split_entries(chunk, limit):
            if pieces and size + len(part) > limit:
                yield pieces
                pieces, size = [], 0
            pieces.append(part)
            size += len(part)
    if pieces:
        yield pieces


def gzip_body(pieces: list[memoryview]) -> bytes:
    """One gzip member holding ``pieces`` (level 6, zlib's default balance)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return b"".join([compressor.compress(piece) for piece in pieces]) + compressor.flush()


class HttpSink:
    """Sends every batch to ``config.url``, split to ``max_request_bytes``."""

    def __init__(self, config: HttpSinkConfig) -> None:
        self.config = config
        self.client = HttpClient(config)
        self._gzip = config.compression == "gzip"

    def write(self, batch: Batch) -> None:
        for pieces in requests(batch.chunks(), self.config.max_request_bytes):
            if self._gzip:
                self.client.post(gzip_body(pieces))
            else:
                self.client.post(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def flush(self) -> Failures:
        """Every request was answered before ``write`` returned."""
        return []

    def close(self) -> None:
        """Close the connection."""
        self.client.close()
