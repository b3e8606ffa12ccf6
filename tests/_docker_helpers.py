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
