"""An output the file sink cannot write, for a reason a person can fix, is retried.

A read-only mount, an immutable directory (chattr +i: what stops root), a directory
without write permission (root without CAP_DAC_OVERRIDE), a file where a
directory of the path should be, a directory where the file should be: every batch
fails with a retryable error, so the circuit opens, ``/ready`` answers 503, the log
names the path and the error, nothing goes to the dead letter queue, and once the
operator fixes it the sink delivers every line by itself, exactly once. Errors that the
path or the data make impossible stay permanent. The tests run as root, so every
breakage is one that stops root too.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from logcap.errors import Permanent, Retryable
from logcap.metrics import NullBlock
from logcap.sinks._io import classify
from logcap.sinks.file.sink import FileSink
from tests._component_helpers import batch_view, build_batch, config_from_yaml
from tests._fault_helpers import dlq_records
from tests.conftest import Agent, free_port, wait_for, write_config

LINES = 1000


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@dataclass
class Breakage:
    """Makes ``directory`` (the output's directory, under ``root``) unwritable, and fixes it."""

    text: str  # what the log must say (strerror)
    breaks: Callable[[Path, Path], None]
    fixes: Callable[[Path, Path], None]


def _parent_is_a_file(root: Path, directory: Path) -> None:
    directory.parent.write_text("a file where a directory should be\n")


def _read_only(root: Path, directory: Path) -> None:
    directory.mkdir(parents=True)
    _run("mount", "--bind", str(directory), str(directory))
    _run("mount", "-o", "remount,ro,bind", str(directory))


def _immutable(root: Path, directory: Path) -> None:
    directory.mkdir(parents=True)
    _run("chattr", "+i", str(directory))


def _directory_at_the_file(root: Path, directory: Path) -> None:
    (directory / "target.ndjson").mkdir(parents=True)


BREAKAGES = {
    "parent-is-a-file": Breakage(
        "Not a directory", _parent_is_a_file, lambda root, d: d.parent.unlink()
    ),
    "read-only-mount": Breakage(
        "Read-only file system", _read_only, lambda root, d: _run("umount", str(d))
    ),
    "immutable-directory": Breakage(
        "Operation not permitted", _immutable, lambda root, d: _run("chattr", "-i", str(d))
    ),
    "directory-at-the-file": Breakage(
        "Is a directory", _directory_at_the_file, lambda root, d: (d / "target.ndjson").rmdir()
    ),
}


@dataclass
class Broken:
    """An output directory made unwritable; ``fix()`` repairs it (once)."""

    breakage: Breakage
    directory: Path
    root: Path
    fixed: bool = False

    def fix(self) -> None:
        if not self.fixed:
            self.fixed = True
            self.breakage.fixes(self.root, self.directory)


@pytest.fixture(params=list(BREAKAGES))
def broken(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broken]:
    """An unwritable output directory ``tmp_path/out/sub``, repaired at teardown at the
    latest (a mount or +i left behind would outlive the test)."""
    state = Broken(BREAKAGES[request.param], tmp_path / "out" / "sub", tmp_path)
    state.breakage.breaks(tmp_path, state.directory)
    try:
        yield state
    finally:
        state.fix()


def _sink(directory: Path) -> FileSink:
    yaml = (
        "sources: {app: {type: file, include: ['*.log']}}\n"
        f"sinks: {{out: {{type: file, path: '{directory}/target.ndjson'}}}}\n"
    )
    config = config_from_yaml(yaml, directory)
    return FileSink(config.sinks["out"], NullBlock())  # type: ignore[arg-type]


def test_an_unwritable_output_is_retryable_names_the_problem_and_heals(broken: Broken) -> None:
    breakage, directory = broken.breakage, broken.directory
    sink = _sink(directory)
    slot = build_batch([("app", 1, ["one", "two"])])[0]
    try:
        with pytest.raises(Retryable) as failure:
            sink.write(batch_view(slot))
        assert breakage.text in str(failure.value)
        assert str(directory) in str(failure.value)
        broken.fix()  # the operator's repair
        sink.write(batch_view(slot))  # the same batch again, as the retry does
        assert sink.flush() == []
    finally:
        sink.close()
    lines = (directory / "target.ndjson").read_text().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["one", "two"]


def permission_main(directory: str) -> None:
    """Run by the test below without CAP_DAC_OVERRIDE (root that obeys permissions): a
    write, the operator's fix (a line on stdin), the same write again."""
    from logcap.errors import DeliveryError

    sink = _sink(Path(directory))
    slot = build_batch([("app", 1, ["one"])])[0]
    try:
        sink.write(batch_view(slot))
    except DeliveryError as exc:
        print(type(exc).__name__, exc, flush=True)
    sys.stdin.readline()
    sink.write(batch_view(slot))
    assert sink.flush() == []
    sink.close()
    print("delivered", flush=True)


def test_a_directory_the_agent_may_not_write_is_retryable_and_heals(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    directory.mkdir(mode=0o555)  # as if owned by someone else: no write permission
    directory.chmod(0o555)
    drop = "-dac_override,-dac_read_search"
    child = subprocess.Popen(
        [
            "setpriv",
            f"--inh-caps={drop}",
            f"--bounding-set={drop}",
            sys.executable,
            "-c",
            "import sys; from tests.test_file_sink_unwritable import permission_main; "
            "permission_main(sys.argv[1])",
            str(directory),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert child.stdout is not None and child.stdin is not None
    failure = child.stdout.readline()
    assert failure.startswith("Retryable ") and "Permission denied" in failure, failure
    assert str(directory) in failure
    directory.chmod(0o755)  # the operator's repair
    out, _ = child.communicate("fixed\n", timeout=60)
    assert child.returncode == 0 and out == "delivered\n"
    assert json.loads((directory / "target.ndjson").read_text())["message"] == "one"


@pytest.mark.parametrize(
    ("name", "retryable"),
    [
        ("EACCES", True),  # permissions or owner: chmod/chown fixes it
        ("EPERM", True),
        ("EROFS", True),
        ("ENOTDIR", True),
        ("EEXIST", True),
        ("EISDIR", True),
        ("ELOOP", True),
        ("ENOENT", True),
        ("ENOSPC", True),
        ("EIO", True),
        ("ENAMETOOLONG", False),  # the template makes a name no file system takes
        ("EINVAL", False),
        ("EFBIG", False),
        ("EPIPE", False),
    ],
)
def test_os_errors_a_person_can_fix_are_retryable_and_impossible_ones_permanent(
    name: str, retryable: bool
) -> None:
    code = getattr(errno, name)
    error = classify(OSError(code, os.strerror(code), "/srv/out/x.ndjson"), "writing /srv/out")
    assert isinstance(error, Retryable if retryable else Permanent)
    assert os.strerror(code) in str(error) and "/srv/out/x.ndjson" in str(error)


def test_a_name_too_long_for_the_file_system_stays_permanent(tmp_path: Path) -> None:
    sink = _sink(tmp_path / ("x" * 300))
    try:
        with pytest.raises(Permanent, match="File name too long"):
            sink.write(batch_view(build_batch([("app", 1, ["one"])])[0]))
    finally:
        sink.close()


# -- through `logcap run` ----------------------------------------------------------------


def _target_lines(directory: Path) -> list[str]:
    path = directory / "target.ndjson"
    if not path.is_file():
        return []
    return [json.loads(line)["message"] for line in path.read_text().splitlines()]


def test_an_unwritable_output_opens_the_circuit_and_delivers_every_line_once_when_fixed(
    broken: Broken, tmp_path: Path, start_agent: Callable[..., Agent]
) -> None:
    breakage, directory = broken.breakage, broken.directory
    (tmp_path / "logs").mkdir()
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        """
data_dir: ./data
sources:
  app: {type: file, include: ["./logs/*.log"]}
sinks:
  target: {type: file, path: "./out/sub/target.ndjson",
           circuit_breaker: {failure_threshold: 2, open_duration: 1s}}
  witness: {type: file, path: "./witness/witness.ndjson"}
dispatcher: {batch_max_events: 100, batch_timeout: 50ms}
# attempts are counted per probe while the circuit is open: none may run out here
retry: {initial_backoff: 200ms, max_backoff: 1s, max_attempts: 100000}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    expected = [f"line {n}" for n in range(LINES)]
    with open(tmp_path / "logs" / "app.log", "w") as log:
        log.writelines(f"{line}\n" for line in expected)

    def unready() -> bool:
        status, body = agent.json("/ready")
        return status == 503 and body["components"]["target"]["circuit"] == "open"

    wait_for(unready, 60, "the circuit to open and /ready to answer 503")
    witness = tmp_path / "witness" / "witness.ndjson"
    wait_for(
        lambda: witness.is_file() and len(witness.read_text().splitlines()) == LINES,
        60,
        "every line at the witness, unaffected",
    )
    said = agent.log.read_text()
    assert breakage.text in said and str(directory) in said, "the log must say what to fix"
    assert agent.metric("logcap_dlq_records_total", component="target") == 0
    assert not dlq_records(tmp_path / "data" / "dlq")

    broken.fix()  # the operator's repair; nobody runs `logcap dlq`
    wait_for(
        lambda: sorted(set(_target_lines(directory))) == sorted(expected),
        120,
        "every line at the repaired output",
    )
    wait_for(lambda: agent.json("/ready")[0] == 200, 30, "/ready to answer 200 again")
    assert agent.stop() == 0
    assert sorted(_target_lines(directory)) == sorted(expected), "a line twice"
    assert not dlq_records(tmp_path / "data" / "dlq")
