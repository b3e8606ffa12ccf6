"""A real Docker daemon for the docker source's tests, and containers that print known lines.

The daemon runs as the tests' own process, on a private socket and private data/exec
roots, without networking or iptables (``--bridge=none``, containers get
``network_mode=none``) and with the ``vfs`` storage driver, so it works inside a sandbox.
Its one image is imported from a tarball holding Debian's static busybox: no registry.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests._waiting import wait_for

IMAGE = "logcap-test-busybox:1"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: no shared libraries needed


def _rootfs_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in ("sh", "echo", "seq", "sleep", "cat", "printf", "head", "tr", "yes"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buffer.getvalue()


class Dockerd:
    """One ``dockerd`` process with its own socket and directories."""

    def __init__(self) -> None:
        if shutil.which("dockerd") is None or not BUSYBOX.exists():
            pytest.fail("dockerd or /bin/busybox missing: run `bash scripts/setup.sh --test`")
        # a unix socket path must stay under 108 bytes: keep the root short
        self.root = Path(tempfile.mkdtemp(prefix="lcd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.log = self.root / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()
        self.client = docker.DockerClient(base_url=self.host, version="auto", timeout=60)
        self.client.api.import_image_from_data(
            _rootfs_tar(), repository=IMAGE.split(":")[0], tag="1"
        )

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    "dockerd",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--bridge=none",
                    "--storage-driver=vfs",
                    f"--data-root={self.root / 'data'}",
                    f"--exec-root={self.root / 'exec'}",
                    f"--pidfile={self.root / 'docker.pid'}",
                    "-H",
                    self.host,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._answers, 60, f"dockerd to answer (log: {self.log})")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"dockerd exited:\n{self.log.read_text()[-3000:]}")
        try:  # a bare socket: a refused connection leaks nothing
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(2)
                probe.connect(str(self.socket))
                probe.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return probe.recv(64).startswith(b"HTTP/1.0 200")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def run(
        self,
        name: str,
        script: str,
        tty: bool = False,
        labels: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Start a container running ``sh -c script``."""
        return self.client.containers.run(
            IMAGE,
            ["sh", "-c", script],
            name=name,
            detach=True,
            tty=tty,
            labels=labels or {},
            network_mode="none",
            **kwargs,
        )

    def remove_all(self) -> None:
        for container in self.client.containers.list(all=True):
            container.remove(force=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a daemon already gone has none left
            self.remove_all()
        self.client.close()
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """The session's Docker daemon (containers are removed after each test)."""
    if os.geteuid() != 0:
        pytest.fail("the docker tests start dockerd and need root")
    daemon = Dockerd()
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def docker_daemon(dockerd: Dockerd) -> Iterator[Dockerd]:
    """The session's daemon, running, with no container left over from another test."""
    if dockerd.process is None or dockerd.process.poll() is not None:
        dockerd.start()
    dockerd.remove_all()
    yield dockerd
    dockerd.remove_all()


def numbered_script(tag: str, lines: int, burst: int = 0, pause: str = "0.05") -> str:
    """Shell printing ``<tag> out <n>`` on stdout and ``<tag> err <n>`` on stderr for
    n < lines (alternating streams), pausing every ``burst`` lines."""
    pause_step = f"if [ $((i % {burst})) -eq 0 ]; then sleep {pause}; fi; " if burst else ""
    return (
        "i=0; "
        f"while [ $i -lt {lines} ]; do "
        f'if [ $((i % 2)) -eq 0 ]; then echo "{tag} out $i"; else echo "{tag} err $i" >&2; fi; '
        f"{pause_step}"
        "i=$((i+1)); done"
    )


def two_stream_script(tag: str, burst: int = 200, pause: str = "0.02") -> str:
    """Shell writing ``<tag> out <n>`` on stdout and ``<tag> err <n>`` on stderr from two
    processes at once, ``burst`` lines then a pause each, until the file /stop exists
    (see :func:`create_file`): Docker's two copier threads then stamp lines side by side."""

    def writer(stream: str, redirect: str) -> str:
        return (
            f"(i=0; while [ ! -f /stop ]; do j=0; while [ $j -lt {burst} ]; do "
            f'echo "{tag} {stream} $i"{redirect}; i=$((i+1)); j=$((j+1)); done; '
            f"sleep {pause}; done)"
        )

    return f"{writer('out', '')} & {writer('err', ' >&2')} & wait"


def create_file(container: Any, path: str) -> None:
    """Create ``path`` in a running container: the go a script waits for (``/go``), or
    the end of a :func:`two_stream_script` (``/stop``; its writers finish their burst)."""
    result = container.exec_run(["sh", "-c", f"echo > {path}"])
    assert result.exit_code == 0, result.output


def docker_log(container: Any) -> list[tuple[str, str]]:
    """(stream, line) of everything the daemon holds for ``container``, per stream in
    order: the truth a source's output is compared with."""
    lines = []
    for stream, kwargs in (("stdout", {"stderr": False}), ("stderr", {"stdout": False})):
        text = container.logs(**kwargs).decode()
        lines += [(stream, line) for line in text.splitlines()]
    return lines


def agent_config(tmp_path: Path, daemon: Dockerd, sources: str = "") -> tuple[Path, str]:
    """An agent config with the given docker sources (default: one, ``d``, reading every
    container) into a file sink writing ``out/<source>.ndjson``; and its API address."""
    from tests.conftest import free_port, write_config  # conftest imports this module

    address = f"127.0.0.1:{free_port()}"
    sources = sources or f'  d: {{type: docker, docker_host: "{daemon.host}"}}\n'
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
{sources}
sinks:
  out: {{type: file, path: "./out/{{source}}.ndjson"}}
dispatcher: {{batch_timeout: 50ms}}
""",
        address,
    )
    return config, address


def kill_tree(agent: Any) -> None:
    """SIGKILL the agent's supervisor and every child at once: nothing gets to drain."""
    for pid in [*agent.children().values(), agent.process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    agent.kill()


class EntryTail:
    """The file sink's entries read as they come: each poll parses only new whole lines
    (a file of 100,000s of entries is not parsed again every 50 ms)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.entries: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        """Every entry written so far (a torn last line waits for its end)."""
        if not self.path.exists():
            return self.entries
        with open(self.path, "rb") as file:
            file.seek(self.offset)
            data = file.read()
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        self.entries += [json.loads(line) for line in whole.splitlines()]
        return self.entries


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every entry the file sink wrote (a torn last line is left for the next read)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_bytes().split(b"\n"):
        if line:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


def wait_until_exited(daemon: Dockerd, names: list[str], timeout: float = 120) -> None:
    """Every named container has stopped."""

    def done() -> bool:
        return all(daemon.client.containers.get(name).status == "exited" for name in names)

    wait_for(done, timeout, f"containers {names[:3]}... to exit")
