"""Helpers of tests/test_faults.py: numbered input lines, an incremental tally of a sink's
output, the dead letter queue's lines, the agent's resident memory, and a tmpfs mount."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec

from logcap.dispatch.batch import Batch
from logcap.dlq.record import DlqRecord, Problem, read_segment
from logcap.dlq.writer import segment_paths


def line(file_index: int, number: int, pad: bytes) -> bytes:
    """Input line ``number`` of file ``file_index``: both are readable back from it."""
    return b"f%d %08d %s\n" % (file_index, number, pad)


def append_lines(path: Path, file_index: int, numbers: range, pad: bytes) -> None:
    """Append numbered lines to ``path`` in one write."""
    with open(path, "ab") as out:
        out.write(b"".join(line(file_index, n, pad) for n in numbers))


class _Entry(msgspec.Struct):
    message: str


_decode_lines = msgspec.json.Decoder(_Entry).decode_lines
_decode = msgspec.json.Decoder(_Entry).decode


class Tally:
    """How often each numbered line appears in NDJSON entries, fed incrementally.

    A line is identified by its message (``f<file> <number> <pad>``); anything else in
    the output, and any entry that is not valid JSON (a torn write), is counted apart.
    """

    def __init__(self, files: int, per_file: int, pad: bytes, keep_order: bool = False) -> None:
        self.counts = [bytearray(per_file) for _ in range(files)]
        self.suffix = " " + pad.decode()
        self.entries = 0
        self.torn: list[bytes] = []
        self.strangers = 0
        self.order: list[list[int]] | None = [[] for _ in range(files)] if keep_order else None

    def feed(self, data: bytes | memoryview) -> None:
        """Count the entries of ``data``: whole NDJSON lines."""
        try:
            entries = _decode_lines(data)
        except msgspec.DecodeError:
            entries = []
            for raw in bytes(data).split(b"\n"):
                if not raw:
                    continue
                try:
                    entries.append(_decode(raw))
                except msgspec.DecodeError:
                    # a torn entry swallows the one written after it: count that one
                    self.torn.append(raw[:200])
                    with contextlib.suppress(msgspec.DecodeError):
                        entries.append(_decode(raw[raw.rfind(b'{"timestamp":') :]))
        counts, suffix, order = self.counts, self.suffix, self.order
        for entry in entries:
            message = entry.message
            head, _, number = message[: -len(suffix)].partition(" ")
            try:
                index, seq = int(head[1:]), int(number)
                bucket = counts[index]
                ok = message.endswith(suffix) and head[0] == "f" and 0 <= seq < len(bucket)
            except (ValueError, IndexError):
                ok = False
            if not ok:
                self.strangers += 1
                continue
            if bucket[seq] < 255:
                bucket[seq] += 1
            if order is not None:
                order[index].append(seq)
        self.entries += len(entries)

    def missing(self, limit: int | None = None) -> int:
        """Lines not seen yet (among the first ``limit`` of each file)."""
        return sum(bucket[:limit].count(0) for bucket in self.counts)

    def distinct(self) -> int:
        """Lines seen at least once."""
        return sum(len(bucket) - bucket.count(0) for bucket in self.counts)

    def seen(self, file_index: int, number: int) -> bool:
        return self.counts[file_index][number] > 0

    @property
    def duplicates(self) -> int:
        """Entries beyond the first of their line."""
        return self.entries - self.strangers - self.distinct()


class OutputFollower:
    """Feeds a growing NDJSON file into a :class:`Tally`, whole lines at a time."""

    def __init__(self, path: Path, tally: Tally) -> None:
        self.path = path
        self.tally = tally
        self.offset = 0

    def poll(self) -> Tally:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 (closed right below)
        except FileNotFoundError:
            return self.tally
        with f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        if end:
            self.tally.feed(memoryview(data)[:end])
            self.offset += end
        return self.tally


def dlq_records(dlq_dir: Path, problems: list[Problem] | None = None) -> list[DlqRecord]:
    """Every intact record of every segment, oldest first."""
    return [record for path in segment_paths(dlq_dir) for _, record in read_segment(path, problems)]


def dlq_payload(record: DlqRecord) -> memoryview:
    """The NDJSON entries of the batch a DLQ record holds."""
    return Batch.from_slot(memoryview(record.batch)).payload


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its children (VmRSS), 0 for any gone meanwhile."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    total = 0
    for each in [str(pid), *children]:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        for row in status.splitlines():
            if row.startswith("VmRSS:"):
                total += int(row.split()[1]) * 1024
    return total


def process_gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat.rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory``, unmounted afterwards.

    The disk-full tests need it, so it is a prerequisite like dockerd or Tansu: where it
    cannot be mounted (no root or CAP_SYS_ADMIN) the test fails instead of skipping, so
    a run without those tests never passes for a complete one.
    """
    import pytest

    directory.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.fail("the disk-full tests mount a tmpfs: no `mount` command here")
    if mounted.returncode != 0:
        pytest.fail(
            "the disk-full tests mount a tmpfs and need root (or CAP_SYS_ADMIN): "
            f"`mount -t tmpfs` failed: {mounted.stderr.decode().strip()}"
        )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(path: Path) -> int:
    """Write zeros to ``path`` until its file system is full; return the bytes written."""
    chunk = b"\0" * (1 << 20)
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                n = os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written
            written += n
    finally:
        os.close(fd)
