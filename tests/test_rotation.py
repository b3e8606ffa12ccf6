"""Log rotation end to end (issue 4): files are known by identity, so no rotation loses or
duplicates a line.

Every scenario runs the real agent (``logcap run``) with a file sink and numbered lines,
so each delivered entry names the line it came from; lost and duplicated lines are
counted and written to /tmp/logcap-test-reports/rotation.json. Covered: rename rotation
(logrotate's default, with rotated names matching the include glob and not), copytruncate
(lines written before the copy must survive; duplicates and losses are reported),
truncation in place, delete and recreate, a file reappearing at a path (a new file on the
freed inode, and the same file moved out of the pattern and back), a symlinked path
re-pointed to new files, a reused inode across a restart, rotation while the agent is
down, 100 rotations at 50,000+ lines/s, the source keys ``long_lines``, ``ignore_older``
and ``fingerprint_bytes``, and ``read_from: end`` applying to the first run only.

Three more pin fixed bugs: a file truncated and refilled past the read position unseen,
lines a program writes to its log after logrotate renamed it away and before it reopens,
and a restart after a first run with ``read_from: end`` that read nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logcap.capture.file.identity import covered
from logcap.dispatch.checkpoint import CheckpointStore
from tests._rotation_helpers import (
    PAD,
    NumberedLog,
    Outcome,
    Report,
    Scenario,
    at_a_second_start,
    copy_truncate,
    create_on_freed_inode,
    entry_id,
    held_inodes,
    line,
    line_id,
    outcome,
    shift_rotate,
)
from tests.conftest import Agent, wait_for

REPORT = Report()
StartAgent = Callable[..., Agent]
GLOBS = pytest.mark.parametrize(
    "include",
    [["./logs/app.log*"], ["./logs/*.log"]],
    ids=["rotated-names-match", "rotated-names-do-not-match"],
)
LINE_BYTES = len(line("app", 0))


@pytest.fixture(scope="module", autouse=True)
def _write_report() -> Iterator[None]:
    began = time.monotonic()
    yield
    REPORT.write(began)


def _glob_variant(include: list[str]) -> str:
    return "matching" if include[0].endswith("*") else "not_matching"


def _assert_exact(result: Outcome) -> None:
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0), result


@GLOBS
def test_rename_rotation_loses_and_duplicates_no_line(
    tmp_path: Path, start_agent: StartAgent, include: list[str]
) -> None:
    s = Scenario(tmp_path, start_agent, include)
    matching = include[0].endswith("*")
    app = NumberedLog(s.logs / "app.log", "app")
    app.write(500)
    s.start()
    first_of_file = 0
    for _ in range(5):
        app.write(2000)
        if not matching:
            # a file renamed to a name the pattern misses can only be finished if the agent
            # opened it first: rotations hours apart allow that, back-to-back ones may not
            s.wait_delivered([app.ids[first_of_file]])
        # with rotated names matching, every file must stay until read: the agent may not
        # have opened one yet; with names not matching, it has them open, so old ones go
        shift_rotate(app.path, keep=None if matching else 2)
        if matching:
            app.write(100)  # the program writes on into app.log.1 until it reopens
        app.reopen()
        first_of_file = len(app.ids)
    app.write(1000)
    s.wait_delivered(app.ids)
    result = s.finish(app.ids)
    REPORT.add(f"rename_rotation_{_glob_variant(include)}", result, rotations=5)
    _assert_exact(result)


@GLOBS
def test_copytruncate_keeps_every_line_written_before_the_copy(
    tmp_path: Path, start_agent: StartAgent, include: list[str]
) -> None:
    s = Scenario(tmp_path, start_agent, include)
    app = NumberedLog(s.logs / "app.log", "app")
    s.start()
    before_copy: list[str] = []
    between: list[str] = []
    for _ in range(3):
        app.write(1000)
        # the agent keeps up: lines still unread when the file is cut are gone with it
        # (unless the copy matches the pattern)
        s.wait_delivered([i for i in app.ids if i not in between])
        before_copy = [i for i in app.ids if i not in between]
        copy_truncate(app.path, between=lambda: between.extend(app.write(20)))
        # the program writes on, a little at first: the agent finds the file shorter than
        # its position (a file that regrew past it unseen: see the truncation tests)
        s.wait_delivered(app.write(10))
    app.write(500)
    s.wait_delivered([i for i in app.ids if i not in between])
    resets = s.metric("logcap_source_file_resets_total")
    result = s.finish(app.ids)
    counts = s.tally.counts
    lost_before_copy = [i for i in before_copy if not counts[i]]
    REPORT.add(
        f"copytruncate_{_glob_variant(include)}",
        result,
        rotations=3,
        written_between_copy_and_truncate=len(between),
        lost_between_copy_and_truncate=sum(1 for i in between if not counts[i]),
        lost_written_before_copy=len(lost_before_copy),
        copies_read_again=include[0].endswith("*"),
        file_resets=resets,
    )
    assert lost_before_copy == []
    assert resets == 3, "each truncation is seen and counted once"
    assert result.unexpected == 0, "no line is read from its middle"


def test_copytruncate_with_copies_matching_keeps_lines_the_agent_had_not_read_yet(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    """The test above waits for delivery before each copy, so its no-loss assertion
    cannot fail. Here nothing is awaited: each round is copied and cut right after it is
    written, so some of it is unread at the cut, and must be read from the copy (which
    the pattern matches)."""
    s = Scenario(tmp_path, start_agent, ["./logs/app.log*"])
    app = NumberedLog(s.logs / "app.log", "app")
    s.start()
    between: list[str] = []
    for _ in range(3):
        app.write(5000)
        copy_truncate(app.path, between=lambda: between.extend(app.write(20)))
        app.write(10)
    app.write(500)
    before_cut = [i for i in app.ids if i not in between]
    s.wait_delivered(before_cut)
    result = s.finish(app.ids)
    lost = [i for i in before_cut if not s.tally.counts[i]]
    REPORT.add(
        "copytruncate_unread_at_the_cut", result, rotations=3, lost_written_before_copy=len(lost)
    )
    assert lost == []
    assert result.unexpected == 0, "no line is read from its middle"


def test_truncation_in_place_reads_the_new_lines_from_the_start(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    app = NumberedLog(s.logs / "app.log", "app")
    app.write(1000)
    s.start()
    for _ in range(3):
        # what `> app.log` discards is lost to any reader: here the agent has kept up
        s.wait_delivered(app.ids)
        os.truncate(app.path, 0)  # what `> app.log` does; the program appends on
        s.wait_delivered(app.write(5))
        app.write(995)
    s.wait_delivered(app.ids)
    resets = s.metric("logcap_source_file_resets_total")
    result = s.finish(app.ids)
    REPORT.add("truncate_in_place", result, truncations=3, file_resets=resets)
    _assert_exact(result)
    assert resets == 3


def test_lines_written_to_a_rotated_away_file_before_the_program_reopens_are_read(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    app = NumberedLog(s.logs / "app.log", "app")
    probe = NumberedLog(s.logs / "probe.log", "probe")
    app.write(1000)
    agent = s.start()
    s.wait_delivered(app.ids)
    collector = agent.children()["collector:app"]
    late: list[str] = []
    for _ in range(3):
        shift_rotate(app.path)
        fresh = app.path.stat().st_ino

        def seen(fresh: int = fresh) -> bool:
            return fresh in held_inodes(collector)

        wait_for(seen, 30, "the rotation to be seen")
        # logrotate's postrotate signal reaches the program later: only once the collector
        # has passed the renamed file at its end (it reads every file in turn, so a line of
        # another file delivered after the rename was seen proves that) do the late lines
        # come, when a collector closing drained rotated files at once has closed it
        s.wait_delivered(probe.write(1))
        late += app.write(100)  # into app.log.1, which no pattern matches
        app.reopen()
        app.write(500)
        s.wait_delivered(app.ids[-500:])
    result = s.finish(app.ids + probe.ids)
    REPORT.add(
        "rename_rotation_not_matching_late_writes",
        result,
        rotations=3,
        written_after_rename=len(late),
        lost_written_after_rename=sum(1 for i in late if not s.tally.counts[i]),
        bug="rotation-2.diff",
    )
    _assert_exact(result)


def test_file_truncated_and_regrown_past_its_position_unseen_is_read_from_the_start(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    app = NumberedLog(s.logs / "app.log", "app")
    app.write(100)
    agent = s.start()
    s.wait_delivered(app.ids)
    # a busy (or starved) collector: it does not look while the file is cut and refilled
    collector = agent.children()["collector:app"]
    os.kill(collector, signal.SIGSTOP)
    try:
        os.truncate(app.path, 0)
        app.write(150)  # more than there was: the file is no shorter than the position
    finally:
        os.kill(collector, signal.SIGCONT)
    s.wait_delivered(app.ids[-1:])
    result = s.finish(app.ids)
    REPORT.add("truncate_and_regrow_while_collector_stalled", result, bug="rotation-1.diff")
    _assert_exact(result)


def test_deleted_and_recreated_file_is_read_whole_and_the_old_one_to_its_end(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    path = s.logs / "app.log"
    app = NumberedLog(path, "gen0")
    app.write(500)
    written: list[str] = []
    s.start()
    for generation in range(1, 4):
        app.write(1500)
        # once the agent has the file open, deleting it takes nothing away from it
        s.wait_delivered(app.ids[:1])
        app.close()
        path.unlink()
        written += app.ids
        app = NumberedLog(path, f"gen{generation}")
        app.write(500)
    written += app.ids
    s.wait_delivered(written)
    result = s.finish(written)
    REPORT.add("delete_and_recreate", result, recreations=3)
    _assert_exact(result)


def test_new_file_appearing_on_a_freed_inode_at_the_old_path_is_read_whole(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    path = s.logs / "app.log"
    old = NumberedLog(path, "old")
    old.write(1000)
    agent = s.start()
    s.wait_delivered(old.ids)
    old_ino = path.stat().st_ino
    collector = agent.children()["collector:app"]
    old.close()
    at_a_second_start()  # the agent sees the deletion and frees the inode within the second
    path.unlink()
    # the drained file is closed once the deletion is seen, which frees its inode; the new
    # file must be created at once (see at_a_second_start), so this polls closely
    deadline = time.monotonic() + 30
    while old_ino in held_inodes(collector):
        assert time.monotonic() < deadline, "the deleted file was never closed"
        time.sleep(0.002)
    # the new file is written under a name the pattern misses and renamed into place whole,
    # so the agent meets it with content: only its fingerprint tells it from the old file
    staging = s.logs / "app.log.new"
    if not create_on_freed_inode(staging, old_ino):
        pytest.skip("the file system did not hand the freed inode to the new file")
    new = NumberedLog(staging, "new")
    new.write(1500)  # longer than the old file, so the old file's offset would fit
    os.rename(staging, path)
    new.write(100)
    s.wait_delivered(new.ids)
    result = s.finish(old.ids + new.ids)
    REPORT.add("reappearing_new_file_on_freed_inode", result, inode_reused=True)
    _assert_exact(result)


def test_file_moved_out_of_the_pattern_and_back_continues_where_it_was(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    path = s.logs / "app.log"
    app = NumberedLog(path, "app")
    app.write(1000)
    agent = s.start()
    s.wait_delivered(app.ids)
    away = s.logs / "app.log.away"
    os.rename(path, away)
    wait_for(lambda: s.metric("logcap_source_files_watched") == 0, 30, "the move to be seen")
    ino = away.stat().st_ino
    collector = agent.children()["collector:app"]
    # drained and closed (after the retirement grace): only its remembered end can stop a
    # re-read now
    wait_for(lambda: ino not in held_inodes(collector), 30, "the moved file to be closed")
    app.write(300)  # written while away
    os.rename(away, path)
    app.write(200)
    s.wait_delivered(app.ids)
    result = s.finish(app.ids)
    REPORT.add("reappearing_same_file", result)
    _assert_exact(result)


@pytest.mark.parametrize("target_matches", [False, True], ids=["link-only", "link-and-target"])
def test_symlinked_path_is_followed_when_repointed_to_new_files(
    tmp_path: Path, start_agent: StartAgent, target_matches: bool
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    targets = s.logs if target_matches else tmp_path / "real"
    targets.mkdir(exist_ok=True)
    link = s.logs / "app.log"
    app = NumberedLog(targets / "app-0.log", "t0")
    app.write(500)
    link.symlink_to(app.path)
    written: list[str] = []
    s.start()
    for k in range(1, 4):
        app.write(1000)
        s.wait_delivered(app.ids[:1])  # the agent has the file open through the link
        following = NumberedLog(targets / f"app-{k}.log", f"t{k}")
        staged = s.logs / "app.log.next"
        staged.symlink_to(following.path)
        os.rename(staged, link)  # re-pointed atomically, as deploy tools do
        if target_matches:
            app.write(50)  # the program has not switched yet
        app.close()
        written += app.ids
        app = following
        app.write(500)
    written += app.ids
    s.wait_delivered(written)
    result = s.finish(written)
    REPORT.add(f"symlink_{'link_and_target' if target_matches else 'link_only'}", result)
    _assert_exact(result)


def test_new_file_on_a_reused_inode_is_read_from_zero_after_a_restart(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"])
    path = s.logs / "app.log"
    old = NumberedLog(path, "A")
    old.write(1000)
    s.start()
    s.wait_delivered(old.ids)
    s.stop()
    st = path.stat()
    saved = CheckpointStore(tmp_path / "data").positions_for("app")
    assert saved[(st.st_dev, st.st_ino)].offset == st.st_size
    old.close()
    at_a_second_start()
    path.unlink()
    if not create_on_freed_inode(path, st.st_ino):
        pytest.skip("the file system did not hand the freed inode to the new file")
    new = NumberedLog(path, "B")
    new.write(3000)  # longer: the old checkpoint's offset lies inside it
    s.start()
    s.wait_delivered(new.ids)
    result = s.finish(old.ids + new.ids)
    REPORT.add("inode_reuse_across_restart", result, inode_reused=True)
    _assert_exact(result)


@GLOBS
def test_rotation_while_the_agent_is_down_loses_and_duplicates_nothing(
    tmp_path: Path, start_agent: StartAgent, include: list[str]
) -> None:
    s = Scenario(tmp_path, start_agent, include, {"fingerprint_bytes": 128})
    path = s.logs / "app.log"
    app = NumberedLog(path, "app")
    s.start()
    app.write(500)
    s.wait_delivered(app.ids)
    shift_rotate(path)
    app.reopen()
    app.write(1)  # the new file is young: shorter than fingerprint_bytes when the agent stops
    s.wait_delivered(app.ids)
    s.stop()
    st = path.stat()
    young = CheckpointStore(tmp_path / "data").positions_for("app")[(st.st_dev, st.st_ino)]
    assert (young.offset, covered(young.fingerprint)) == (LINE_BYTES, LINE_BYTES)
    # written while down, then rotated away: found as app.log.1 by the glob or (a name
    # the patterns miss) by its checkpointed inode
    app.write(500)
    shift_rotate(path)
    app.reopen()
    app.write(500)
    s.start()
    s.wait_delivered(app.ids)
    result = s.finish(app.ids)
    REPORT.add(f"rotation_across_restart_{_glob_variant(include)}", result, fingerprint_bytes=128)
    _assert_exact(result)


def test_hundred_rename_rotations_under_load_lose_and_duplicate_nothing(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    rotations, per_file, chunk, target_rate = 100, 3000, 500, 60_000
    s = Scenario(tmp_path, start_agent, ["./logs/app.log*"])
    app = NumberedLog(s.logs / "app.log", "load", pad=PAD[:40])
    s.start()
    began = time.monotonic()
    behind = 0  # rotations that found lines of the renamed file not yet delivered
    for rotation in range(rotations + 1):
        for _ in range(per_file // chunk - 1):
            app.write(chunk)
            ahead = len(app.ids) / target_rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)  # paced: a steady load, not one burst
        if rotation < rotations:
            behind += not s.tally.has_all(app.ids[-chunk:])
            shift_rotate(app.path)
        app.write(chunk)  # the program writes on into app.log.1 until it reopens
        app.reopen()
    writing = time.monotonic() - began
    s.wait_delivered(app.ids, timeout=150)
    delivered = time.monotonic() - began
    result = s.finish(app.ids)
    write_rate = len(app.ids) / writing
    REPORT.add(
        "rename_rotation_under_load",
        result,
        rotations=rotations,
        files=len(list(s.logs.iterdir())),
        write_seconds=round(writing, 2),
        write_lines_per_s=round(write_rate),
        all_delivered_after_s=round(delivered, 2),
        delivered_lines_per_s=round(len(app.ids) / delivered),
        rotations_with_lines_undelivered=behind,
    )
    # under load means renames meet lines still in flight; how many do depends on how
    # busy the machine is (10 to 97 of 100 measured), the writer's speed too, so neither
    # is a bound: both are reported, and one such rename shows the scenario took place
    assert behind >= 1, "every rename found all lines of its file delivered: no load"
    _assert_exact(result)


@pytest.mark.parametrize("mode", ["truncate", "skip"])
def test_over_long_lines_are_cut_or_dropped_and_counted(
    tmp_path: Path, start_agent: StartAgent, mode: str
) -> None:
    s = Scenario(
        tmp_path, start_agent, ["./logs/*.log"], {"max_line_bytes": "1KiB", "long_lines": mode}
    )
    # one over-long line fits a ring slot (cut by the dispatcher), one is longer than a
    # slot (256 KiB: cut by the collector while it looks for the end)
    longs = [line("long", 1, b"x" * 5000), line("long", 2, b"y" * 300_000)]
    app = NumberedLog(s.logs / "app.log", "app")
    app.write(100)
    os.write(app.fd, longs[0])
    app.write(100)
    os.write(app.fd, longs[1])
    app.write(100)
    s.start()
    s.wait_delivered(app.ids)
    s.settle()
    truncated = s.metric("logcap_source_lines_truncated_total")
    skipped = s.metric("logcap_source_lines_skipped_total")
    s.stop()
    counts = s.tally.refresh()
    long_ids = [line_id("long", 1), line_id("long", 2)]
    result = outcome(app.ids + (long_ids if mode == "truncate" else []), counts)
    REPORT.add(f"long_lines_{mode}", result, lines_truncated=truncated, lines_skipped=skipped)
    _assert_exact(result)
    if mode == "truncate":
        assert (truncated, skipped) == (2, 0)
        for key, raw in zip(long_ids, longs, strict=True):
            assert s.tally.messages[key] == raw[:1024].decode()
    else:
        assert (truncated, skipped) == (0, 2)


def test_ignore_older_skips_a_stale_file_until_it_is_written_again(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"], {"ignore_older": "1h"})
    stale = NumberedLog(s.logs / "stale.log", "stale")
    stale.write(100)
    two_hours_ago = time.time() - 7200
    os.utime(stale.path, (two_hours_ago, two_hours_ago))
    fresh = NumberedLog(s.logs / "fresh.log", "fresh")
    fresh.write(100)
    s.start()
    s.wait_delivered(fresh.ids)
    # five scans after the first, each given the chance to (wrongly) open the stale file:
    # a new file is found by a scan, so each one delivered proves one more scan ran
    probes = [NumberedLog(s.logs / f"probe-{k}.log", f"probe{k}") for k in range(5)]
    for probe in probes:
        s.wait_delivered(probe.write(1))
    assert s.metric("logcap_source_files_watched") == 1 + len(probes)
    assert not any(s.tally.refresh()[i] for i in stale.ids), "a stale file was read"
    stale.write(50)  # written again: its modification time is now
    s.wait_delivered(stale.ids)
    result = s.finish(stale.ids + fresh.ids + [i for probe in probes for i in probe.ids])
    REPORT.add("ignore_older", result)
    _assert_exact(result)


@pytest.mark.parametrize(
    ("fingerprint_bytes", "read_whole"),
    [(128, True), (64, False)],
    ids=["covers-past-the-header", "covers-the-header-only"],
)
def test_fingerprint_bytes_decides_if_a_reused_inode_with_the_same_header_is_a_new_file(
    tmp_path: Path, start_agent: StartAgent, fingerprint_bytes: int, read_whole: bool
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"], {"fingerprint_bytes": fingerprint_bytes})
    header = b"#header service=app format=v2 " + b"=" * 69 + b"\n"  # 100 bytes, in both files
    header_id = entry_id(header.decode())
    path = s.logs / "app.log"
    path.write_bytes(header)
    old = NumberedLog(path, "A")
    old.write(300)
    s.start()
    s.wait_delivered(old.ids)
    s.stop()
    old_ino = path.stat().st_ino
    old.close()
    at_a_second_start()
    path.unlink()
    if not create_on_freed_inode(path, old_ino):
        pytest.skip("the file system did not hand the freed inode to the new file")
    path.write_bytes(header)
    new = NumberedLog(path, "B")
    new.write(1000)
    s.start()
    # with a fingerprint that covers only the shared header, the new file is taken for
    # the old one and resumed at its offset: the start of line 300 (same line lengths)
    expected = new.ids if read_whole else new.ids[300:]
    s.wait_delivered(expected)
    s.settle()
    s.stop()
    counts = s.tally.refresh().copy()
    headers = counts.pop(header_id)
    result = outcome(old.ids + expected, counts)
    REPORT.add(
        f"fingerprint_bytes_{fingerprint_bytes}_shared_100_byte_header",
        result,
        new_file_read_whole=all(counts[i] for i in new.ids),
    )
    _assert_exact(result)
    assert headers == (2 if read_whole else 1)


def test_read_from_end_skips_old_lines_on_the_first_run_only(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    s = Scenario(tmp_path, start_agent, ["./logs/*.log"], {"read_from": "end"})
    app = NumberedLog(s.logs / "app.log", "app")
    old = app.write(500)
    s.start()
    # a first run in which nothing new is written: only its end position is checkpointed
    size = app.path.stat().st_size

    def end_checkpointed() -> bool:
        saved = CheckpointStore(tmp_path / "data").positions_for("app")
        st = app.path.stat()
        return (st.st_dev, st.st_ino) in saved and saved[(st.st_dev, st.st_ino)].offset == size

    wait_for(end_checkpointed, 30, "the file's end to be checkpointed")
    s.stop()
    down = app.write(300)  # written while the agent is down
    other = NumberedLog(s.logs / "other.log", "other")
    after = other.write(200)  # a file the agent never saw: read from its first line
    s.start()
    s.wait_delivered(after)
    result = s.finish(down + after)
    counts = s.tally.counts
    REPORT.add(
        "read_from_end_restart",
        result,
        old_lines_delivered=sum(1 for i in old if counts[i]),
        bug="rotation-3.diff",
    )
    assert not any(counts[i] for i in old), "the lines skipped on the first run were read"
    _assert_exact(result)
