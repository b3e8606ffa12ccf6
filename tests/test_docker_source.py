"""The docker source against a real Docker daemon started by the tests.

Containers from a locally imported busybox image print known lines; the agent delivers
them to a file sink, and the entries are checked line by line.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest

from logcap.dispatch.checkpoint import CheckpointStore
from tests._docker_helpers import (
    Dockerd,
    create_file,
    kill_tree,
    numbered_script,
    read_entries,
    wait_until_exited,
)
from tests._docker_helpers import agent_config as _config
from tests._waiting import wait_for


def _messages(tmp_path: Path, source: str = "d") -> list[dict[str, Any]]:
    return read_entries(tmp_path / "out" / f"{source}.ndjson")


def test_lines_arrive_with_labels_streams_and_their_own_time(
    tmp_path: Path, docker_daemon: Dockerd, start_agent
) -> None:
    daemon = docker_daemon
    sources = f"""  d:
    type: docker
    docker_host: "{daemon.host}"
    exclude_names: ["skip-*", "ignored"]
    exclude_labels: ["logs=off"]
    label_keys: ["com.example.team"]
    labels: {{env: prod}}
  s:
    type: docker
    docker_host: "{daemon.host}"
    include_names: ["skip-*"]
    long_lines: skip
    max_line_bytes: 64KiB
"""
    config, address = _config(tmp_path, daemon, sources)
    agent = start_agent(config, address)
    agent.wait_ready()
    hundred_kib = "x" * 102_400
    daemon.run(
        "web",
        "echo first; echo oops >&2; echo; printf 'bin\\001\\377ary\\n'; "
        "head -c 102400 /dev/zero | tr '\\0' x; echo; head -c 300000 /dev/zero | tr '\\0' y; "
        "echo; echo last",
        labels={
            "com.docker.compose.project": "shop",
            "com.docker.compose.service": "front",
            "com.example.team": "payments",
        },
    )
    daemon.run("tty-box", "echo 'on a tty'; head -c 40000 /dev/zero | tr '\\0' t; echo", tty=True)
    daemon.run("ignored", "echo never")
    daemon.run("quiet", "echo never either", labels={"logs": "off"})
    daemon.run("skip-long", "head -c 100000 /dev/zero | tr '\\0' s; echo; echo kept")
    wait_until_exited(daemon, ["web", "tty-box", "ignored", "quiet", "skip-long"])
    wait_for(lambda: len(_messages(tmp_path)) >= 9, 60, "web's and tty-box's lines")
    wait_for(lambda: len(_messages(tmp_path, "s")) >= 1, 60, "skip-long's short line")
    assert agent.stop() == 0

    entries = _messages(tmp_path)
    web = [e for e in entries if e["labels"]["container_name"] == "web"]
    # Docker orders the two streams only each on its own
    assert [e["message"] for e in web if e["labels"]["stream"] == "stderr"] == ["oops"]
    web = [e for e in web if e["labels"]["stream"] == "stdout"]
    assert [e["message"][:20] for e in web] == [
        "first",
        "",
        "bin\x01\ufffdary",
        "x" * 20,
        "y" * 20,
        "last",
    ]
    assert web[3]["message"] == hundred_kib  # a 100 KiB line arrives whole
    assert len(web[4]["message"]) == 128 * 1024  # 300 KB: cut to max_line_bytes, counted
    labels = web[0]["labels"]
    assert labels["image"] == "logcap-test-busybox:1" and len(labels["container_id"]) == 64
    assert labels["compose_project"] == "shop" and labels["compose_service"] == "front"
    assert labels["com_example_team"] == "payments"
    assert labels["env"] == "prod"  # the source's static labels
    # Docker's time of each line, not the time logcap read it
    stamps = [e["timestamp"] for e in web]
    assert stamps == sorted(stamps) and all(e["timestamp"] < e["ingested_at"] for e in web)
    tty = [e["message"] for e in entries if e["labels"]["container_name"] == "tty-box"]
    assert tty == ["on a tty", "t" * 40_000]  # no \r, 16 KiB pieces joined
    assert not [e for e in entries if e["labels"]["container_name"] in ("ignored", "quiet")]
    assert [e["message"] for e in _messages(tmp_path, "s")] == ["kept"]


def test_counters_for_cut_skipped_and_joined_lines(
    tmp_path: Path, docker_daemon: Dockerd, start_agent
) -> None:
    daemon = docker_daemon
    sources = f"""  d: {{type: docker, docker_host: "{daemon.host}", include_names: [cut]}}
  s: {{type: docker, docker_host: "{daemon.host}", include_names: [skip], long_lines: skip,
       max_line_bytes: 64KiB}}
"""
    config, address = _config(tmp_path, daemon, sources)
    agent = start_agent(config, address)
    agent.wait_ready()
    long_line = "head -c 300000 /dev/zero | tr '\\0' y; echo; echo after"
    daemon.run("cut", long_line)
    daemon.run("skip", long_line)
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="out") >= 3,
        60,
        "three entries",
    )
    assert agent.metric("logcap_source_lines_truncated_total", component="d") == 1
    assert agent.metric("logcap_source_lines_skipped_total", component="s") == 1
    assert agent.metric("logcap_source_lines_joined_total", component="d") == 1
    assert agent.metric("logcap_source_lines_joined_total", component="s") == 1
    wait_for(
        lambda: agent.metric("logcap_source_files_watched", component="d") == 0,
        30,
        "the exited container to be let go",
    )
    assert agent.stop() == 0


@pytest.mark.parametrize("how", ["graceful", "kill -9"])
def test_twenty_containers_with_the_agent_restarted_halfway(
    tmp_path: Path, docker_daemon: Dockerd, start_agent, how: str
) -> None:
    """20 containers x 10,000 numbered lines on stdout and stderr; the agent is stopped
    (or killed with SIGKILL, with all its processes) halfway and started again. Every
    line arrives; a graceful restart adds no duplicate, a kill reports its duplicates."""
    daemon = docker_daemon
    config, address = _config(tmp_path, daemon)
    agent = start_agent(config, address)
    agent.wait_ready()
    names = [f"c{n:02d}" for n in range(20)]
    for name in names:
        daemon.run(name, numbered_script(name, 10_000, burst=250, pause="0.1"))
    wait_for(lambda: len(_messages(tmp_path)) >= 100_000, 120, "half of the lines")
    if how == "graceful":
        assert agent.stop() == 0
    else:
        kill_tree(agent)
    halfway = len(_messages(tmp_path))
    printed_at_stop = _printed(daemon, names)
    wait_for(  # containers keep printing while the agent is down
        lambda: _printed(daemon, names) >= printed_at_stop + 2000 or _exited(daemon, names),
        60,
        "lines printed while the agent is down",
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_until_exited(daemon, names, timeout=180)
    wait_for(
        lambda: (
            len({(e["labels"]["container_name"], e["message"]) for e in _messages(tmp_path)})
            >= 200_000
        ),
        180,
        "every line",
    )
    assert agent.stop() == 0

    entries = _messages(tmp_path)
    seen = collections.Counter((e["labels"]["container_name"], e["message"]) for e in entries)
    expected = {
        (name, f"{name} {'out' if i % 2 == 0 else 'err'} {i}")
        for name in names
        for i in range(10_000)
    }
    assert set(seen) == expected  # every line, on the stream it was written to
    for e in entries[:1000]:
        assert e["labels"]["stream"] == e["message"].split()[1].replace("out", "stdout").replace(
            "err", "stderr"
        )
    duplicates = sum(seen.values()) - len(seen)
    print(f"\n{how}: {len(seen)} lines, {duplicates} duplicates, restarted at {halfway}")
    if how == "graceful":
        assert duplicates == 0


def _printed(daemon: Dockerd, names: list[str]) -> int:
    """Lines the daemon holds for the named containers."""
    return sum(daemon.client.containers.get(n).logs().count(b"\n") for n in names)


def _exited(daemon: Dockerd, names: list[str]) -> bool:
    return all(daemon.client.containers.get(n).status == "exited" for n in names)


def _checkpointed(tmp_path: Path) -> set[str]:
    """Ids of the containers in the checkpoint file (read as the agent reads it: while
    a save replaces it, the previous copy)."""
    files = CheckpointStore(tmp_path / "data").load().files
    return {p.path.removeprefix("docker://") for p in files}


def test_containers_are_resumed_started_while_down_and_restarted(
    tmp_path: Path, docker_daemon: Dockerd, start_agent
) -> None:
    daemon = docker_daemon
    config, address = _config(tmp_path, daemon)
    agent = start_agent(config, address)
    agent.wait_ready()
    box = daemon.run("box", "echo run-$(cat /n 2>/dev/null || echo 0); echo 1 > /n")
    wait_for(lambda: len(_messages(tmp_path)) == 1, 60, "the first run's line")
    assert agent.stop() == 0
    # while the agent is down: a new container runs and exits, the old one runs again
    daemon.run("while-down", "echo hello; echo bye >&2")
    box.start()
    wait_until_exited(daemon, ["while-down", "box"])
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(lambda: len(_messages(tmp_path)) >= 4, 60, "the lines printed while down")
    box.start()  # a restart while the agent runs: read again from where it was left
    wait_for(lambda: len(_messages(tmp_path)) >= 5, 60, "the third run's line")
    daemon.client.containers.get("while-down").remove()  # its checkpoint entry goes
    wait_for(lambda: _checkpointed(tmp_path) == {box.id}, 30, "while-down forgotten")
    assert agent.stop() == 0
    assert _checkpointed(tmp_path) == {box.id}
    box.remove()  # destroyed while the agent is down: forgotten at the next start
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(lambda: _checkpointed(tmp_path) == set(), 30, "the destroyed container forgotten")
    assert agent.stop() == 0
    got = [(e["labels"]["container_name"], e["message"]) for e in _messages(tmp_path)]
    assert sorted(got) == sorted(
        [
            ("box", "run-0"),
            ("box", "run-1"),
            ("box", "run-1"),
            ("while-down", "hello"),
            ("while-down", "bye"),
        ]
    )


# a container waits for the test's go (a file /go) instead of sleeping a guessed time
_WAIT_FOR_GO = "while [ ! -f /go ]; do sleep 0.05; done"


def test_read_from_end_skips_what_running_containers_printed_before_the_first_start(
    tmp_path: Path, docker_daemon: Dockerd, start_agent
) -> None:
    daemon = docker_daemon
    sources = f'  d: {{type: docker, docker_host: "{daemon.host}", read_from: end}}\n'
    config, address = _config(tmp_path, daemon, sources)
    old = daemon.run("old", f"echo before; {_WAIT_FOR_GO}; echo after; sleep 60")
    wait_for(lambda: b"before" in old.logs(), 30, "the line printed before the first start")
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(
        lambda: agent.metric("logcap_source_files_watched", component="d") == 1,
        30,
        "the source to read the running container",
    )
    create_file(old, "/go")
    wait_for(lambda: len(_messages(tmp_path)) >= 1, 60, "the line printed after the start")
    daemon.run("new", "echo from-a-new-container")
    wait_for(lambda: len(_messages(tmp_path)) >= 2, 60, "the new container's line")
    assert agent.stop() == 0
    assert sorted(e["message"] for e in _messages(tmp_path)) == ["after", "from-a-new-container"]


def test_a_rename_relabels_and_the_daemon_restart_is_survived(
    tmp_path: Path, docker_daemon: Dockerd, start_agent
) -> None:
    daemon = docker_daemon
    config, address = _config(tmp_path, daemon)
    agent = start_agent(config, address)
    agent.wait_ready()
    box = daemon.run("before", f"echo one; {_WAIT_FOR_GO}; echo two; sleep 60")
    wait_for(lambda: len(_messages(tmp_path)) >= 1, 60, "the first line")
    box.rename("after")
    create_file(box, "/go")
    wait_for(lambda: len(_messages(tmp_path)) >= 2, 60, "the line printed after the rename")
    assert [e["labels"]["container_name"] for e in _messages(tmp_path)] == ["before", "after"]

    daemon.stop()  # the daemon goes away (its containers stop with it)
    wait_for(
        lambda: agent.metric("logcap_source_docker_reconnects_total", component="d") >= 2,
        60,
        "reconnection attempts to be counted",
    )
    assert agent.get("/health")[0] == 200
    daemon.start()
    daemon.run("later", "echo after-the-daemon-restart")
    wait_for(
        lambda: any(e["message"] == "after-the-daemon-restart" for e in _messages(tmp_path)),
        90,
        "a line of a container started after the daemon came back",
    )
    assert agent.stop() == 0
    messages = [e["message"] for e in _messages(tmp_path)]
    assert messages.count("one") == 1 and messages.count("two") == 1
