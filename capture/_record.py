"""The record a collector publishes into its ring: a block of whole lines from one file.

Layout inside a ring slot's payload (little-endian)::

    0    read_ns     int64   wall-clock time the block was read (ingestion time, ns)
    8    start       int64   file offset of the block's first byte
    16   end         int64   file offset just past everything this block consumed;
                             larger than start+data_len when an over-long line was cut
    24   dev         int64   st_dev of the file
    32   ino         int64   st_ino of the file
    40   fingerprint uint64  (n << 32) | crc32 of the file's first n bytes (n up to
                             fingerprint_bytes; 0 for an empty file)
    48   data_len    uint32  bytes of line data
    52   path_len    uint16  bytes of the UTF-8 path (surrogate-escaped)
    54   flags       uint16  bit 0: the block is one truncated line; bit 1: the data is
                             structured entries (HTTP ingest, Docker), see FLAG_ENTRIES
    56   path        path_len bytes
    56+path_len      data: whole lines, each ending in b"\\n"

A ``FLAG_ENTRIES`` record holds msgpack runs of entries instead of lines, and reuses
``end``/``ino``/``fingerprint`` for a resumable input's position (in the source's own
encoding, not a byte offset; Docker's: capture/docker/position.py); see
capture/_entries.py.

Packing uses ``struct.pack_into`` on purpose: these bytes are payload, published later
by the ring cursor, so a transient zero can never be observed.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = struct.Struct("<qqqqqQIHH")
HEADER_SIZE = HEADER.size
FLAG_TRUNCATED = 1
FLAG_ENTRIES = 2  # data is msgpack runs of entries (capture/_entries.py), no file behind it
MAX_PATH_BYTES = 4096


class BlockHeader(NamedTuple):
    """The fixed part of a block record."""

    read_ns: int
    start: int
    end: int
    dev: int
    ino: int
    fingerprint: int
    data_len: int
    path_len: int
    flags: int


def write_header(buf: memoryview, header: BlockHeader, path: bytes) -> int:
    """Write header and path into ``buf``; return the offset where data goes."""
    HEADER.pack_into(buf, 0, *header)
    buf[HEADER_SIZE : HEADER_SIZE + len(path)] = path
    return HEADER_SIZE + len(path)


def read_header(buf: memoryview) -> BlockHeader:
    """Parse the fixed part of a record."""
    return BlockHeader._make(HEADER.unpack_from(buf, 0))
