"""Tests of ``logcap.ringbuf`` segment handling (``_shm``): owner-only creation, attaching
without the stdlib resource tracker, unlinking, and sweeping the segments of dead runs.

All segments are real POSIX shared memory in ``/dev/shm``; the processes that attach or
die are real subprocesses.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logcap.ringbuf import attach, create, run_prefix, sweep_stale, unlink

SHM = Path("/dev/shm")
MakeSegment = Callable[..., str]


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped (so it no longer exists)."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    pid = int(child.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # guards against the (unlikely) reuse of the pid meanwhile
    return pid


@pytest.fixture
def make_segment() -> Iterator[MakeSegment]:
    """Creates segments ``logcap-<pid>-test-<uuid>-<role>``; unlinks them afterwards."""
    names: list[str] = []

    def make(size: int = 4096, pid: int | None = None, role: str = "seg") -> str:
        name = f"{run_prefix(pid or os.getpid(), 'test' + uuid.uuid4().hex[:8])}{role}"
        names.append(name)
        create(name, size).close()
        return name

    yield make
    for name in names:
        unlink(name)


def _run_python(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=60)


def test_created_segment_is_owner_only_even_with_a_permissive_umask(
    make_segment: MakeSegment,
) -> None:
    previous = os.umask(0)
    try:
        name = make_segment()
    finally:
        os.umask(previous)
    info = (SHM / name).stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()


def test_created_segment_is_zero_filled_and_of_the_requested_size(
    make_segment: MakeSegment,
) -> None:
    name = make_segment(size=8192)
    segment = attach(name)
    try:
        assert segment.size == 8192
        assert bytes(segment.buf) == bytes(8192)
    finally:
        segment.close()


def test_create_refuses_a_name_that_already_exists(make_segment: MakeSegment) -> None:
    # Two runs must never share (and so corrupt) one ring by accident.
    name = make_segment()
    with pytest.raises(FileExistsError):
        create(name, 4096)


def test_writes_through_one_attachment_are_seen_by_another(make_segment: MakeSegment) -> None:
    name = make_segment()
    first, second = attach(name), attach(name)
    try:
        first.buf[:5] = b"hello"
        assert bytes(second.buf[:5]) == b"hello"
    finally:
        first.close()
        second.close()


def test_segment_outlives_a_process_that_attached_to_it_and_exited(
    make_segment: MakeSegment,
) -> None:
    # Python 3.11's resource_tracker would unlink the segment when this child exits.
    name = make_segment()
    _run_python(
        "import sys\n"
        "from logcap.ringbuf import attach\n"
        "segment = attach(sys.argv[1])\n"
        "segment.buf[:6] = b'child!'\n"
        "segment.close()\n",
        name,
    )
    assert (SHM / name).exists()
    segment = attach(name)
    try:
        assert bytes(segment.buf[:6]) == b"child!"
    finally:
        segment.close()


def test_segment_outlives_the_process_that_created_it(make_segment: MakeSegment) -> None:
    # The supervisor owns every segment's lifetime; a creating process exiting (or being
    # restarted) must not take the segment with it.
    name = f"{run_prefix(os.getpid(), 'test' + uuid.uuid4().hex[:8])}created-by-child"
    try:
        _run_python(
            "import sys\nfrom logcap.ringbuf import create\ncreate(sys.argv[1], 4096)\n", name
        )
        assert (SHM / name).exists()
    finally:
        unlink(name)


def test_stdlib_attach_does_unlink_on_exit_which_is_why_attach_bypasses_it(
    make_segment: MakeSegment,
) -> None:
    # The control for the test above: it shows the pitfall is real on this Python, so a
    # passing logcap test means logcap avoided it rather than the pitfall being absent.
    name = make_segment()
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from multiprocessing import shared_memory\n"
            "shared_memory.SharedMemory(name=sys.argv[1]).close()\n",
            name,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    if (SHM / name).exists():
        pytest.skip("this Python's resource tracker does not unlink attached segments")
    assert not (SHM / name).exists()
    assert "leaked shared_memory" in completed.stderr


def test_sweep_removes_segments_of_dead_runs_and_keeps_those_of_live_ones(
    make_segment: MakeSegment,
) -> None:
    dead = _dead_pid()
    stale = [make_segment(pid=dead, role="collector-app"), make_segment(pid=dead, role="batch")]
    live = make_segment(pid=os.getpid(), role="collector-app")
    # sweep_stale scans the real /dev/shm, as a supervisor does at every start; other
    # runs' segments may go too, so only assert about ours.
    removed = sweep_stale()
    assert set(stale) <= set(removed)
    assert live not in removed
    assert not any((SHM / name).exists() for name in stale)
    assert (SHM / live).exists()


def test_sweep_leaves_names_without_a_numeric_pid_alone() -> None:
    names = [f"logcap-notapid-{uuid.uuid4().hex[:8]}", f"logcapx-{uuid.uuid4().hex[:8]}"]
    try:
        for name in names:
            create(name, 4096).close()
        removed = sweep_stale()
        assert not set(names) & set(removed)
        assert all((SHM / name).exists() for name in names)
    finally:
        for name in names:
            unlink(name)


def test_sweep_of_a_directory_with_nothing_stale_removes_nothing(tmp_path: Path) -> None:
    (tmp_path / f"logcap-{os.getpid()}-tok-ring").write_bytes(b"")
    (tmp_path / "unrelated").write_bytes(b"")
    assert sweep_stale(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"logcap-{os.getpid()}-tok-ring", "unrelated"]
    )


def test_unlink_removes_a_segment_and_tolerates_a_missing_one(make_segment: MakeSegment) -> None:
    name = make_segment()
    unlink(name)
    assert not (SHM / name).exists()
    unlink(name)  # already gone: not an error
    unlink(f"logcap-{os.getpid()}-never-created-{uuid.uuid4().hex}")


def test_unlink_accepts_the_leading_slash_of_posix_shm_names(make_segment: MakeSegment) -> None:
    # SharedMemory.name may carry the leading "/" of the POSIX name.
    name = make_segment()
    unlink("/" + name)
    assert not (SHM / name).exists()


def test_attach_to_a_missing_segment_raises_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        attach(f"logcap-{os.getpid()}-missing-{uuid.uuid4().hex}")


def test_run_prefix_names_the_creating_pid_first() -> None:
    assert run_prefix(1234, "abcd") == "logcap-1234-abcd-"
