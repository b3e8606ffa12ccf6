"""Running logcap as a real process tree for benchmarks, and measuring it from /proc.

Topology measured by the file benchmarks::

    N input files ──▶ collector ──ring──▶ dispatcher ──batch ring──▶ sink(s) ──▶ output
                                                     (encode once)    file / blackhole

Time runs from launching ``logcap run`` to the moment the last line is out (start-up
included, as for the peers), CPU is utime+stime summed over every logcap process, and
peak RSS is the highest *sum* of the processes' RSS seen by a 50 ms sampler.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
LINE_BYTES = 200  # newline included


def make_line(file_index: int, number: int) -> bytes:
    """A ~200-byte log line that names its file and its number (for verification)."""
    head = (
        f"2026-11-22T08:02:06.{number % 1000:03d}Z INFO [worker-{file_index}] "
        f"file={file_index} seq={number:09d} request handled path=/api/v1/items "
        f"status=200 dur_ms=12.5 user=alice trace=abcdef0123456789 "
    )
    return (head + "x" * (LINE_BYTES - 1 - len(head))).encode() + b"\n"


def write_inputs(directory: Path, files: int, lines: int) -> list[Path]:
    """``lines`` lines spread over ``files`` files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    per_file = lines // files
    for f in range(files):
        path = directory / f"app{f}.log"
        with open(path, "wb") as out:
            out.write(b"".join(make_line(f, n) for n in range(per_file)))
        paths.append(path)
    return paths


def level_the_field(inputs: list[Path]) -> None:
    """Give every measured run the same start: earlier runs' dirty pages written back,
    clean page cache dropped (when root) so no run pays to reclaim another's output,
    and the input read back into the cache, as it would be for a file just written."""
    os.sync()
    with contextlib.suppress(OSError):  # not root: runs share whatever cache state they find
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    # the interpreter and logcap's modules come back into the cache as on any running host
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import logcap.cli, logcap.supervisor, logcap.api, "
            "logcap.worker, logcap.capture.process, logcap.dispatch.process, "
            "logcap.sinks.process",
        ],
        check=True,
    )
    for path in inputs:
        with open(path, "rb") as f:
            while f.read(1 << 22):
                pass


def _descendants(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += _descendants(int(child))
    return out


def _cpu_rss(pid: int) -> tuple[float, int]:
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        rss = int(Path(f"/proc/{pid}/statm").read_bytes().split()[1]) * PAGE
    except (OSError, IndexError):
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, rss


@dataclass
class TreeSample:
    """CPU seconds and RSS of a process tree at one instant, per process."""

    cpu: dict[int, float]
    rss: dict[int, int]


class TreeMonitor:
    """Samples a process tree every ``interval`` seconds from a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = 0
        self.cpu: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        total = 0
        for pid in _descendants(self.pid):
            cpu, rss = _cpu_rss(pid)
            if rss:
                self.cpu[pid] = max(cpu, self.cpu.get(pid, 0.0))
                total += rss
                if pid not in self.names:
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                        self.names[pid] = " ".join(a.decode() for a in cmd[-3:] if a)
                    except OSError:
                        self.names[pid] = str(pid)
        self.peak_rss = max(self.peak_rss, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def cpu_by_process(self) -> dict[str, float]:
        return {self.names.get(pid, str(pid)): round(c, 2) for pid, c in self.cpu.items()}


@dataclass
class RunResult:
    """One measured run."""

    name: str
    lines: int
    input_bytes: int
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    cpu_by_process: dict[str, float]
    startup_seconds: float = 0.0  # launch → first entry delivered
    # what a benchmark compares this run with (a ratio, its rounds and spread): in the JSON
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def steady_lines_per_second(self) -> float:
        """Throughput once data flows (first entry out → last entry out); NaN when that
        phase is too short to time (a small run delivered within one poll)."""
        phase = self.seconds - self.startup_seconds
        return self.lines / phase if phase >= 0.05 else float("nan")

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds

    @property
    def mib_per_second(self) -> float:
        return self.input_bytes / self.seconds / 2**20

    def row(self) -> str:
        return (
            f"{self.name:<26} {self.lines_per_second / 1e6:5.2f} M lines/s "
            f"{self.mib_per_second:6.1f} MiB/s  steady {self.steady_lines_per_second / 1e6:5.2f}"
            f" M/s  start {self.startup_seconds:4.2f}s  cpu {self.cpu_seconds:5.2f}s  "
            f"rss {self.peak_rss_bytes / 2**20:6.1f} MiB"
        )


# for the network sinks' runs: bigger batches, and a short batch timeout so the last,
# partial batch of the input need not wait the default 200 ms (a bare client does not)
NETWORK_DISPATCHER = "dispatcher: {batch_max_events: 5000, batch_timeout: 50ms}"


def agent_config(workdir: Path, logs: Path, api: str, sinks: str, extra: str = "") -> Path:
    """``workdir/logcap.yaml``: one file source on ``logs/*.log``, the given sinks (YAML
    lines indented under ``sinks:``) and any ``extra`` top-level sections."""
    config = workdir / "logcap.yaml"
    config.write_text(f"""
data_dir: {workdir / "data"}
api: {{address: "{api}"}}
sources:
  app: {{type: file, include: ["{logs}/*.log"]}}
sinks:
{sinks}
{extra}
""")
    return config


# How to reach the terminal during a test: pytest captures file descriptor 2 itself (not
# only sys.stderr) unless -s, so bench/conftest.py installs its capture manager's
# global_and_fixture_disabled here, as pytest's live logging does.
_terminal: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext


def reach_terminal_with(
    uncaptured: Callable[[], contextlib.AbstractContextManager[object]],
) -> None:
    """Have :class:`ProgressLine` write inside ``uncaptured()`` (capture suspended)."""
    global _terminal
    _terminal = uncaptured


class ProgressLine:
    """What a benchmark is waiting for, on one line of the terminal redrawn in place (\\r)
    at most every ``every`` seconds: elapsed time, and with a ``total`` the count reached,
    its percent and rate. Only when the real stderr (``sys.__stderr__``, capture
    suspended) is a terminal; in a pipe or a CI log it writes nothing at all. The line
    starts below whatever pytest had written and stays, final figures and all, when
    closed."""

    def __init__(self, what: str, total: float | None = None, every: float = 0.2) -> None:
        self.what, self.total, self.every = what, total, every
        self.started = time.monotonic()
        self._on_terminal: bool | None = None  # found out at the first write
        self._shown_at = float("-inf")
        self._width = 0
        self._count: float | None = None

    def show(self, count: Callable[[], float] | None = None, force: bool = False) -> None:
        """Redraw if due; ``count`` (called only then) gives the progress towards ``total``."""
        now = time.monotonic()
        if self._on_terminal is False or (not force and now - self._shown_at < self.every):
            return
        if count is not None:
            self._count = count()
        elapsed = now - self.started
        text = f"  {self.what}: {elapsed:5.1f} s"
        if self._count is not None and self.total:
            text += (
                f"  {self._count:,.0f}/{self.total:,.0f} ({self._count / self.total:4.0%})"
                f"  {self._count / max(elapsed, 1e-3):,.0f}/s"
            )
        self._write(("\n" if self._shown_at == float("-inf") else "\r") + text.ljust(self._width))
        self._shown_at, self._width = now, len(text)

    def close(self, count: Callable[[], float] | None = None) -> None:
        """The final figures, and a newline so pytest goes on below them."""
        if self._shown_at != float("-inf"):
            self.show(count, force=True)
            self._write("\n")
        self._on_terminal = False

    def _write(self, text: str) -> None:
        with _terminal():
            stream = sys.__stderr__
            if self._on_terminal is None:
                self._on_terminal = stream is not None and stream.isatty()
            if self._on_terminal and stream is not None:
                stream.write(text)
                stream.flush()


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.01,
    count: Callable[[], float] | None = None,
    total: float | None = None,
) -> None:
    """Poll ``condition`` every ``interval``; raise with ``what`` after ``timeout`` seconds.
    On a terminal the wait shows as a :class:`ProgressLine` (``count`` of ``total``)."""
    deadline = time.monotonic() + timeout
    line = ProgressLine(what, total)
    try:
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            line.show(count)
            time.sleep(interval)
    finally:
        line.close(count)


def metric(address: str, name: str, component: str) -> float:
    """One sample of a logcap metric from a running agent's /metrics."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'component="{component}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_logcap(
    name: str,
    config: Path,
    api_address: str,
    sink: str,
    lines: int,
    input_bytes: int,
    timeout: float = 300,
    output: Path | None = None,
    output_bytes: int = 0,
) -> RunResult:
    """Launch ``logcap run``, wait until ``sink`` has delivered ``lines`` entries, stop it
    gracefully, and return the figures; the caller verifies the output afterwards.

    Completion is seen without disturbing the run: for a file sink by the output's exact
    expected size (a ``stat``), otherwise by the agent's own /metrics every 50 ms.
    Call :func:`level_the_field` before it.
    """
    log_path = config.parent / "logcap.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 (closed in finally)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "logcap", "run", "--config", str(config)],
        stderr=log_file,
    )
    first_output: float | None = None

    def delivered() -> float:
        if output is not None:
            try:
                size = os.path.getsize(output)
            except FileNotFoundError:
                return 0.0
            return lines if size >= output_bytes else size / max(1, output_bytes) * lines
        try:
            return metric(api_address, "logcap_component_sent_events_total", sink)
        except OSError:
            return 0.0

    last_count = 0.0
    finished: float | None = None  # taken here: the progress line's last redraw is not timed

    def done() -> bool:
        nonlocal first_output, last_count, finished
        last_count = count = delivered()
        now = time.perf_counter()
        if count and first_output is None:
            first_output = now
        if count >= lines:
            finished = now
        return count >= lines or process.poll() is not None

    try:
        with TreeMonitor(process.pid) as monitor:
            wait_until(
                done,
                timeout,
                f"{name}: {lines} entries out of {sink}",
                interval=0.005 if output is not None else 0.05,
                count=lambda: last_count,  # what done() saw: the progress costs no request
                total=lines,
            )
            seconds = (finished or time.perf_counter()) - started
            if finished is None:
                raise RuntimeError(f"logcap exited early: {log_path.read_text()[-2000:]}")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        if code != 0:
            raise RuntimeError(f"logcap exited {code}: {log_path.read_text()[-2000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log_file.close()
    startup = (first_output - started) if first_output is not None else 0.0
    return RunResult(
        name,
        lines,
        input_bytes,
        seconds,
        monitor.cpu_seconds,
        monitor.peak_rss,
        monitor.cpu_by_process(),
        startup,
    )


def count_lines(path: Path) -> int:
    """Newlines in ``path`` (0 if missing)."""
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b""))
    except FileNotFoundError:
        return 0


def file_has_lines(path: Path, expected: int, bytes_per_line: int) -> Callable[[], bool]:
    """A cheap ``done`` predicate: check the size first, count only when it could be done."""

    def done() -> bool:
        try:
            if os.path.getsize(path) < expected * bytes_per_line:
                return False
        except FileNotFoundError:
            return False
        return count_lines(path) >= expected

    return done


def expected_file_output_bytes(paths: list[Path], source: str) -> int:
    """Exact size of the file sink's output for ``paths`` (messages need no escaping)."""
    import socket

    from logcap.capture.labels import file_labels
    from logcap.dispatch.encode import entry_prefix

    total = 0
    for path in paths:
        data = path.read_bytes()
        lines = data.count(b"\n")
        labels = file_labels(socket.gethostname(), {}, None, str(path))
        prefix = entry_prefix(source, labels, 0)
        total += len(data) - lines + lines * (len(prefix) + 2 + 2)  # quotes, "}" and \n
    return total
