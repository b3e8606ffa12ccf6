"""Loki push bodies: ``logproto.PushRequest`` as protobuf, and the JSON form.

The protobuf is written by hand (proto3 wire format: a field is ``tag = number << 3 |
wire type``, wire type 0 a varint, 2 a varint length then that many bytes)::

    PushRequest     0x0A len StreamAdapter     streams = 1, repeated
    StreamAdapter   0x0A len labels            labels = 1, '{a="b", c="d"}' (UTF-8)
                    0x12 len EntryAdapter      entries = 2, repeated
    EntryAdapter    0x0A len Timestamp         timestamp = 1 (google.protobuf.Timestamp)
                    0x12 len line              line = 2 (UTF-8)
    Timestamp       0x08 varint seconds        int64, left out when 0 (proto3 default)
                    0x10 varint nanos          int32, left out when 0

and the body is that message compressed as one raw snappy *block* (not the framed
format), with ``Content-Type: application/x-protobuf``. The JSON form is
``{"streams":[{"stream":{"a":"b"},"values":[["<unix ns>","line"], ...]}]}``.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

import cramjam
import msgspec

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# bytes an entry adds besides its line: field tags, lengths and a timestamp, at most
ENTRY_OVERHEAD = 24

_json_encode = msgspec.json.Encoder().encode


@dataclass
class Stream:
    """Entries that share a label set: ``key`` is the label set in Loki's syntax, ``pairs``
    the same sorted by name; ``entries`` are (unix ns, UTF-8 line) in time order."""

    key: str
    pairs: tuple[tuple[str, str], ...]
    entries: list[tuple[int, bytes]] = field(default_factory=list)


def label_set(pairs: tuple[tuple[str, str], ...]) -> str:
    """``{a="b", c="d"}``: values quoted with JSON's escapes, which Loki's parser (Go
    string literals) reads back unchanged."""
    return "{" + ", ".join(f"{name}={_json_encode(value).decode()}" for name, value in pairs) + "}"


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative numbers as their 64-bit two's complement."""
    # unrolled for the sizes of lines, lengths and nanoseconds: this runs twice per entry
    if 0 <= value < 0x80:
        return bytes((value,))
    if 0 < value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if 0 < value < 0x200000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    if 0 < value < 0x10000000:
        return bytes(
            (value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80, value >> 21)
        )
    value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, data: bytes) -> bytes:
    return bytes((tag,)) + varint(len(data)) + data


def encode_protobuf(streams: list[Stream]) -> bytes:
    """The PushRequest message for ``streams`` (uncompressed)."""
    parts: list[bytes] = []  # joined once at the end: each line is copied once
    last_seconds: int | None = None
    seconds_field = b""
    for stream in streams:
        labels = _field(0x0A, stream.key.encode())
        body = [labels]
        size = len(labels)
        for ns, line in stream.entries:
            seconds, nanos = divmod(ns, 1_000_000_000)
            if seconds != last_seconds:  # entries of a stream mostly share their second
                last_seconds = seconds
                seconds_field = b"\x08" + varint(seconds) if seconds else b""
            stamp = seconds_field + b"\x10" + varint(nanos) if nanos else seconds_field
            # EntryAdapter up to the line: timestamp field, then the line's tag and length
            head = b"\x0a%c%b\x12%b" % (len(stamp), stamp, varint(len(line)))
            head = b"\x12" + varint(len(head) + len(line)) + head
            body.append(head)
            body.append(line)
            size += len(head) + len(line)
        parts.append(b"\x0a" + varint(size))
        parts += body
    return b"".join(parts)


def encode_json(streams: list[Stream]) -> bytes:
    """The JSON push body for ``streams`` (uncompressed)."""
    return _json_encode(
        {
            "streams": [
                {
                    "stream": dict(stream.pairs),
                    "values": [[str(ns), line.decode()] for ns, line in stream.entries],
                }
                for stream in streams
            ]
        }
    )


def snappy(data: bytes) -> bytes:
    """One raw snappy block, as Loki's protobuf push expects."""
    return bytes(cramjam.snappy.compress_raw(data))


def gzipped(data: bytes) -> bytes:
    """gzip for ``Content-Encoding: gzip`` (level 1: the network is rarely the bottleneck
    of a log agent, the CPU of the host it runs on often is)."""
    return gzip.compress(data, compresslevel=1, mtime=0)


def split(streams: list[Stream], max_bytes: int, max_entries: int) -> list[list[Stream]]:
    """Cut ``streams`` into requests of at most ``max_entries`` entries and about
    ``max_bytes`` bytes; a stream may be cut between requests (in time order), an entry
    larger than ``max_bytes`` goes alone."""
    requests: list[list[Stream]] = []
    current: list[Stream] = []
    size = entries = 0
    for stream in streams:
        head = len(stream.key) + 8
        piece = Stream(stream.key, stream.pairs)
        for entry in stream.entries:
            cost = len(entry[1]) + ENTRY_OVERHEAD
            extra = cost + (0 if piece.entries else head)
            if (current or piece.entries) and (
                entries + 1 > max_entries or size + extra > max_bytes
            ):
                if piece.entries:
                    current.append(piece)
                requests.append(current)
                current, size, entries = [], 0, 0
                piece = Stream(stream.key, stream.pairs)
                extra = cost + head
            piece.entries.append(entry)
            size += extra
            entries += 1
        if piece.entries:
            current.append(piece)
    if current:
        requests.append(current)
    return requests
