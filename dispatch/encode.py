"""Lines → NDJSON entries, the one place entries are serialised.

For a block of lines that share source, labels and timestamp, everything but the message
is the same, so it is encoded once as a *prefix*; the messages are escaped in one msgspec
call (``encode_lines``: one JSON string per line) and joined with ``}\\n<prefix>``.
This runs at ~150 ns per 200-byte line, against ~300 ns for one Struct per line.
"""

from __future__ import annotations

import time

import msgspec

_json = msgspec.json.Encoder()
_encode_lines = _json.encode_lines


def rfc3339(ns: int) -> str:
    """UTC timestamp with nanoseconds, e.g. ``2026-11-22T08:02:06.123456789Z``."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def entry_prefix(
    source: str, labels: dict[str, str], timestamp_ns: int, ingested_ns: int | None = None
) -> bytes:
    """The bytes every entry of a group starts with, up to the message value; the event
    time is the ingestion time unless the entry brought its own."""
    stamp = _json.encode(rfc3339(timestamp_ns))
    ingested = stamp if ingested_ns is None else _json.encode(rfc3339(ingested_ns))
    return (
        b'{"timestamp":'
        + stamp
        + b',"ingested_at":'
        + ingested
        + b',"source":'
        + _json.encode(source)
        + b',"labels":'
        + _json.encode(dict(sorted(labels.items())))
        + b',"message":'
    )


def encode_entries(prefix: bytes, messages: list[str]) -> list[bytes | memoryview]:
    """NDJSON for ``messages`` (one ``prefix + "message"}`` line each), as pieces.

    The pieces are meant to be written one after the other into the batch slot: joining
    them first would copy every entry again, and at ~370 bytes an entry the copies, not
    the escaping, are what this stage spends its time on.
    """
    if not messages:
        return []
    # b'"m1"\n"m2"\n': a raw \n only ever ends a string, so each one becomes the end of
    # an entry plus the next entry's prefix; the view drops the surplus final prefix.
    joined = _encode_lines(messages).replace(b"\n", b"}\n" + prefix)
    return [prefix, memoryview(joined)[: len(joined) - len(prefix)]]


def truncate_encoded(text: str, max_bytes: int, encoding: str = "utf-8") -> str:
    """``text`` cut to at most ``max_bytes`` bytes in ``encoding``, never inside a character."""
    return text.encode(encoding, "surrogatepass" if encoding == "utf-8" else "replace")[
        :max_bytes
    ].decode(encoding, "ignore")
