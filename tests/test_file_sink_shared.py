"""Two processes writing one output file at once lose nothing and tear nothing.

A ``logcap dlq replay`` runs the file sink in a second process beside the agent's, and two
file sinks can have templates naming the same file. Here a *steady* writer appends big
batches (~1.8 MB, one write(2) each) through one sink while a *reopening* writer, like a
replay, builds a new sink for every small batch, so every batch it writes begins by
checking the file's tail, the check that once cut another writer's in-progress batch off.
Both are real processes; afterwards every line of every file must be whole JSON and every
acknowledged line present exactly once. And a rotated file another process is compressing
is left to it: its temporary is neither deleted as a crash's leftover nor written twice.
"""

from __future__ import annotations

import collections
import fcntl
import gzip
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
import pytest

from logcap.sinks.file.compress import Busy, compress_file
from logcap.sinks.file.housekeeper import Housekeeper

STEADY_BATCHES = 24
STEADY_LINES = 16_384
REOPEN_LINES = 3
MAX_CYCLES = 1_000_000  # bounds the reopening writer if the steady one never finishes
PAD = "p" * 64
KEPT = b'{"message":"kept"}\n'


def _message(writer: str, batch: int, line: int) -> str:
    return f"{writer} {batch:06d} {line:05d} {PAD}"


def writer_main(path: str, mode: str, max_file_bytes: str, done: str) -> None:
    """One writer process (run by the test below): prints ``ready``, then the number of
    batches it wrote, every one acknowledged (written and flushed without failure)."""
    import os

    from logcap.metrics import NullBlock
    from logcap.sinks.file.config import FileSinkConfig
    from logcap.sinks.file.sink import FileSink
    from tests._component_helpers import batch_view, build_batch, config_from_yaml

    rotation = "" if max_file_bytes == "none" else f", max_file_bytes: {max_file_bytes}"
    yaml = (
        "sources: {app: {type: file, include: ['*.log']}}\n"
        f"sinks: {{out: {{type: file, path: '{path}'{rotation}}}}}\n"
    )
    config = config_from_yaml(yaml, Path(path).parent).sinks["out"]
    assert isinstance(config, FileSinkConfig)

    def deliver(sink: FileSink, writer: str, batch: int, lines: int) -> None:
        messages = [_message(writer, batch, n) for n in range(lines)]
        sink.write(batch_view(build_batch([("app", 1, messages)])[0]))
        assert sink.flush() == []

    if mode == "steady":
        batches = [
            build_batch([("app", 1, [_message("S", b, n) for n in range(STEADY_LINES)])])[0]
            for b in range(STEADY_BATCHES)
        ]
        print("ready", flush=True)
        sink = FileSink(config, NullBlock())
        for slot in batches:
            sink.write(batch_view(slot))
            assert sink.flush() == []
        sink.close()
        Path(done).touch()
        print(len(batches), flush=True)
        return
    cycles = 0
    while cycles < MAX_CYCLES and (cycles == 0 or not os.path.exists(done)):
        sink = FileSink(config, NullBlock())  # a new sink every time, as a replay starts
        deliver(sink, "R", cycles, REOPEN_LINES)
        sink.close()
        cycles += 1
        if cycles == 1:
            print("ready", flush=True)
    print(cycles, flush=True)


def _start(path: Path, mode: str, max_file_bytes: str, done: Path) -> subprocess.Popen[str]:
    code = (
        "import sys; from tests.test_file_sink_shared import writer_main; "
        "writer_main(*sys.argv[1:])"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path), mode, max_file_bytes, str(done)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n", f"the {mode} writer did not start"
    return child


def _finish(child: subprocess.Popen[str]) -> int:
    out, _ = child.communicate(timeout=300)
    assert child.returncode == 0, f"a writer failed: {out}"
    return int(out.split()[-1])


class _Entry(msgspec.Struct):
    message: str


@pytest.mark.parametrize("max_file_bytes", ["none", "8MiB"], ids=["one-file", "rotating"])
def test_two_processes_appending_to_one_file_lose_and_tear_no_acknowledged_line(
    tmp_path: Path, max_file_bytes: str
) -> None:
    path = tmp_path / "out" / "shared.ndjson"
    done = tmp_path / "steady.done"
    reopening = _start(path, "reopen", max_file_bytes, done)
    steady = _start(path, "steady", max_file_bytes, done)
    steady_batches, reopen_batches = _finish(steady), _finish(reopening)
    assert reopen_batches > 1, "the writers never overlapped"

    decode = msgspec.json.Decoder(_Entry).decode
    found: collections.Counter[str] = collections.Counter()
    torn = []
    files = sorted(path.parent.iterdir())
    for each in files:
        for raw in each.read_bytes().splitlines():
            try:
                found[decode(raw).message] += 1
            except msgspec.DecodeError:
                torn.append(raw[:120])
    assert not torn, f"{len(torn)} torn lines, e.g. {torn[:3]}"
    expected = [_message("S", b, n) for b in range(STEADY_BATCHES) for n in range(STEADY_LINES)]
    expected += [_message("R", b, n) for b in range(reopen_batches) for n in range(REOPEN_LINES)]
    assert steady_batches == STEADY_BATCHES
    lost = [m for m in expected if m not in found]
    assert not lost, f"{len(lost)} acknowledged lines lost, e.g. {lost[:3]}"
    doubled = {m: n for m, n in found.items() if n > 1}
    assert not doubled, f"{len(doubled)} lines written more than once"
    assert sum(found.values()) == len(expected), f"strangers in {[f.name for f in files]}"
    if max_file_bytes != "none":
        assert len(files) > 2, "the files were never rotated"


# -- compressing rotated files that two processes tidy ------------------------------------


def test_a_temporary_another_process_is_writing_is_not_taken_for_a_crash_leftover(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.ndjson"
    rotated = tmp_path / "out.ndjson.1"
    rotated.write_bytes(KEPT)
    temporary = tmp_path / "out.ndjson.1.gz.tmp"
    temporary.write_bytes(b"half a gzip stream")
    housekeeper = Housekeeper("gzip", None, threading.Lock())
    with open(rotated, "rb") as other:  # another process, compressing it right now
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        housekeeper.tidy(str(path))
        assert temporary.read_bytes() == b"half a gzip stream", "its work was deleted"
        assert rotated.exists() and not (tmp_path / "out.ndjson.1.gz").exists()
        with pytest.raises(Busy):  # nor is its temporary written by a second compression
            compress_file(str(rotated), "gzip", threading.Event())
        assert temporary.read_bytes() == b"half a gzip stream"
    housekeeper.tidy(str(path))  # that one died: now it is a crash's leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ndjson.1.gz"]
    assert gzip.decompress((tmp_path / "out.ndjson.1.gz").read_bytes()) == KEPT
