"""Side-by-side benchmark peers: rsyslog and syslog-ng shipping one file to another.

Each peer is run as a foreground daemon with a private config in a scratch directory:
it reads ``input_path`` from the beginning and writes every line, unchanged and in
order, to an output file. The wall clock starts when the process is launched and stops
when the output holds ``expected_lines`` newlines, so start-up cost is included just as
it is for logcap. CPU time and peak RSS are sampled from /proc just before the daemon is
stopped, then the output is checked line-for-line (via checksums) against the input.

No network input is configured for either peer and nothing outside ``workdir`` is
written. Install the peers with ``scripts/install_peers.sh``.

Usage: ``python bench/peers.py [N_LINES]`` generates N lines of ~200 bytes, runs both
peers and prints a table.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

RSYSLOGD = Path("/usr/sbin/rsyslogd")
# Wrapper written by scripts/install_peers.sh (syslog-ng-core conflicts with rsyslog, so
# it lives unpacked in a private prefix). LOGCAP_SYSLOG_NG may point elsewhere.
SYSLOG_NG_WRAPPER = (
    Path(os.environ.get("LOGCAP_PEERS_PREFIX", "/opt/logcap-peers")) / "bin" / "syslog-ng"
)

# Far above any benchmark line, so neither peer truncates or splits a line
# (rsyslog's default is 8 KiB, syslog-ng's 64 KiB).
MAX_MESSAGE_BYTES = 256 * 1024

_POLL_SLEEP_S = 0.005  # idle wait between output-file reads while the peer is busy
_READ_CHUNK = 1 << 20
_STOP_GRACE_S = 10.0  # SIGTERM -> SIGKILL
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class PeerError(RuntimeError):
    """A peer failed to start, timed out, or produced output that differs from the input."""


@dataclass
class PeerResult:
    """Outcome of one peer run.

    ``seconds`` is wall time from process launch until the last expected line was in the
    output file; ``cpu_seconds`` is user+system time of the daemon (all threads, plus any
    child processes) at that moment; ``peak_rss_bytes`` is its high-water RSS (VmHWM).
    """

    name: str
    lines: int
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    input_bytes: int = 0

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0

    @property
    def mib_per_second(self) -> float:
        """Input MiB shipped per wall-clock second (0 if ``input_bytes`` is unknown)."""
        return self.input_bytes / (1 << 20) / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------- discovery


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def rsyslogd_path() -> Path | None:
    """Path of rsyslogd, or None if it is not installed."""
    if _executable(RSYSLOGD):
        return RSYSLOGD
    found = shutil.which("rsyslogd")
    return Path(found) if found else None


def syslog_ng_path() -> Path | None:
    """Path of the syslog-ng launcher (install_peers.sh wrapper first), or None."""
    override = os.environ.get("LOGCAP_SYSLOG_NG")
    candidates = [Path(override)] if override else [SYSLOG_NG_WRAPPER]
    found = shutil.which("syslog-ng")
    if found and not override:
        candidates.append(Path(found))
    return next((c for c in candidates if _executable(c)), None)


def rsyslog_available() -> bool:
    """True if rsyslogd with the imfile module is installed."""
    if rsyslogd_path() is None:
        return False
    # imfile ships in the rsyslog package itself; look in the multiarch module dirs.
    return (
        any(Path("/usr/lib").glob("*/rsyslog/imfile.so"))
        or Path("/usr/lib/rsyslog/imfile.so").exists()
    )


def syslog_ng_available() -> bool:
    """True if a syslog-ng launcher is present."""
    return syslog_ng_path() is not None


# ------------------------------------------------------------------------------- configs


def _q(path: Path) -> str:
    """Quote a path for both config languages (both take C-style double-quoted strings)."""
    s = str(path)
    if any(c in s for c in '"\\\n'):
        raise PeerError(f"unsupported character in path {s!r}")
    return f'"{s}"'


def rsyslog_config(input_path: Path, output_path: Path, state_dir: Path) -> str:
    """rsyslog config: imfile -> omfile, message text only, tuned for throughput.

    Why each knob:
    * only imfile is loaded: no imuxsock (/dev/log), no imklog, no network inputs;
    * a dedicated ruleset keeps rsyslogd's own start/stop messages out of the output
      (they go to the default ruleset, which has no action);
    * readMode 0 = one line per message; a fresh state dir makes imfile start at offset
      0; maxSubmitAtOnce lets it hand big batches to the queue;
    * the ruleset queue is a large in-memory FixedArray with big dequeue batches and a
      single worker (more workers would let batches overtake each other -> reorder);
    * omfile: asyncWriting with a 1 MiB buffer, flushed when full instead of after every
      batch (flushOnTXEnd off); flushInterval 1 s bounds the tail latency;
    * %rawmsg% is the line exactly as read (imfile does not parse it).
    """
    return f"""\
global(
  workDirectory={_q(state_dir)}
  maxMessageSize="{MAX_MESSAGE_BYTES}"
)
module(load="imfile" mode="inotify")

template(name="logcap_msgonly" type="string" string="%rawmsg%\\n")

ruleset(name="logcap_bench"
        queue.type="FixedArray" queue.size="262144"
        queue.dequeueBatchSize="8192" queue.workerThreads="1") {{
  action(type="omfile" file={_q(output_path)} template="logcap_msgonly"
         asyncWriting="on" ioBufferSize="1m" flushOnTXEnd="off" flushInterval="1"
         createDirs="off")
}}

input(type="imfile" file={_q(input_path)} tag="bench" ruleset="logcap_bench"
      readMode="0" freshStartTail="off" maxSubmitAtOnce="8192"
      persistStateInterval="0")
"""


def syslog_ng_config(input_path: Path, output_path: Path) -> str:
    """syslog-ng config: file() -> file(), message text only, tuned for throughput.

    Why each knob:
    * flags(no-parse) puts the whole line into $MSG without syslog header parsing, and
      the destination template writes just "${MSG}\\n";
    * flow-control: when the destination queue is full the source pauses instead of
      dropping lines (without it syslog-ng drops on overflow, which would be cheating);
    * log-fetch-limit / log-iw-size / log-fifo-size: read and queue in large batches;
      log-fifo-size must exceed log-iw-size so the window never blocks on itself;
    * flush-lines: write in big chunks; follow-freq only matters at EOF;
    * log-msg-size well above the line length so no line is truncated;
    * no DNS, no stats/mark messages, no internal() source: nothing else reaches output.
    """
    return f"""\
@version: 3.38
options {{
  threaded(yes);
  use-dns(no); use-fqdn(no); chain-hostnames(no); keep-hostname(yes);
  stats-freq(0); mark-freq(0);
  log-msg-size({MAX_MESSAGE_BYTES});
  flush-lines(10000);
  log-fifo-size(200000);
  create-dirs(no);
}};

source s_bench {{
  file({_q(input_path)}
       flags(no-parse)
       follow-freq(0.1)
       log-fetch-limit(10000)
       log-iw-size(100000)
       log-msg-size({MAX_MESSAGE_BYTES}));
}};

destination d_bench {{
  file({_q(output_path)}
       template("${{MSG}}\\n")
       template-escape(no)
       flush-lines(10000)
       log-fifo-size(200000));
}};

log {{ source(s_bench); destination(d_bench); flags(flow-control); }};
"""


# ------------------------------------------------------------------------------ /proc


def _descendants(pid: int) -> list[int]:
    """pid plus all its live descendants (threads are already counted per process)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cpu_seconds(pid: int) -> float:
    """utime+stime (and reaped children's cutime+cstime) of pid, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is the state (stat field 3): utime..cstime are stat fields 14..17.
    return sum(int(f) for f in fields[11:15]) / _CLK_TCK


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def _sample(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) summed over the daemon's process tree."""
    cpu, rss = 0.0, 0
    for p in _descendants(pid):
        try:
            cpu += _cpu_seconds(p)
            rss += _peak_rss_bytes(p)
        except (OSError, ValueError, IndexError):
            continue  # exited between listing and reading
    return cpu, rss


# ---------------------------------------------------------------------------- running


class _LineCounter:
    """Counts newlines in a growing file by reading only what was appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._fh: BinaryIO | None = None

    def poll(self) -> bool:
        """Read whatever is new; True if anything was read."""
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open across polls
            except FileNotFoundError:
                return False
        got = False
        while chunk := self._fh.read(_READ_CHUNK):
            self.lines += chunk.count(b"\n")
            got = True
        return got

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a grace period; always reaps."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=_STOP_GRACE_S)


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""


def _run_daemon(
    name: str,
    argv: list[str],
    output_path: Path,
    log_path: Path,
    expected_lines: int,
    timeout: float,
) -> tuple[float, float, int]:
    """Launch argv, wait for expected_lines in output_path; return (secs, cpu, rss)."""
    counter = _LineCounter(output_path)
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # keep terminal signals (Ctrl-C) for us to handle
        )
        try:
            deadline = t0 + timeout
            while counter.lines < expected_lines:
                if not counter.poll():
                    if proc.poll() is not None:
                        counter.poll()  # it may have written the rest before exiting
                        if counter.lines >= expected_lines:
                            break
                        raise PeerError(
                            f"{name} exited with status {proc.returncode} after "
                            f"{counter.lines}/{expected_lines} lines; log:\n{_tail(log_path)}"
                        )
                    if time.perf_counter() > deadline:
                        raise PeerError(
                            f"{name}: only {counter.lines}/{expected_lines} lines in "
                            f"{output_path} after {timeout:.0f}s; log:\n{_tail(log_path)}"
                        )
                    time.sleep(_POLL_SLEEP_S)
            seconds = time.perf_counter() - t0
            cpu, rss = _sample(proc.pid) if proc.poll() is None else (0.0, 0)
        finally:
            counter.close()
            _stop(proc)
    return seconds, cpu, rss


# ----------------------------------------------------------------------------- verify


def _lines(path: Path, normalise: Callable[[bytes], bytes]) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        for line in fh:
            yield normalise(line)


def _digest(path: Path, normalise: Callable[[bytes], bytes] | None) -> tuple[str, int]:
    """(sha256, newline count) of the file, normalising each line if asked."""
    h, n = hashlib.sha256(), 0
    if normalise is None:  # fast path: whole chunks
        with open(path, "rb") as fh:
            while chunk := fh.read(_READ_CHUNK):
                h.update(chunk)
                n += chunk.count(b"\n")
    else:
        for line in _lines(path, normalise):
            h.update(line)
            n += line.endswith(b"\n")
    return h.hexdigest(), n


def verify_output(
    name: str,
    input_path: Path,
    output_path: Path,
    expected_lines: int,
    normalise: Callable[[bytes], bytes] | None = None,
) -> None:
    """Raise PeerError unless output has expected_lines lines equal to the input's, in order.

    ``normalise`` maps each input line (with its newline) to what the peer is documented
    to write for it; neither peer needs one for printable single-line input.
    """
    out_sum, out_lines = _digest(output_path, None)
    if out_lines != expected_lines:
        raise PeerError(f"{name}: output has {out_lines} lines, expected {expected_lines}")
    in_sum, _ = _digest(input_path, normalise)
    if in_sum == out_sum:
        return
    ident: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    pairs = zip(_lines(input_path, normalise or ident), _lines(output_path, ident))
    for i, (want, got) in enumerate(pairs, 1):
        if want != got:
            raise PeerError(f"{name}: output line {i} differs:\n  in:  {want!r}\n  out: {got!r}")
    raise PeerError(f"{name}: output checksum differs from input (trailing bytes?)")


# ------------------------------------------------------------------------------- peers


def _prepare(workdir: Path, name: str) -> tuple[Path, Path]:
    """Fresh per-peer directory (stale state would make the peer skip input); returns
    (peer dir, output path)."""
    d = workdir / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d, d / "out.log"


def run_rsyslog(
    input_path: Path, workdir: Path, expected_lines: int, timeout: float = 300
) -> PeerResult:
    """Ship input_path with rsyslogd (imfile -> omfile) and measure it."""
    exe = rsyslogd_path()
    if exe is None:
        raise PeerError("rsyslogd not installed (run scripts/install_peers.sh)")
    input_path = input_path.resolve()
    d, out = _prepare(workdir.resolve(), "rsyslog")
    state = d / "state"
    state.mkdir()
    conf = d / "rsyslog.conf"
    conf.write_text(rsyslog_config(input_path, out, state))
    # -N1 validates the config first so a config error is reported as such, not as
    # a timeout.
    check = subprocess.run(
        [str(exe), "-N1", "-f", str(conf)], capture_output=True, text=True, timeout=60
    )
    if check.returncode != 0:
        raise PeerError(f"rsyslog config check failed:\n{check.stdout}{check.stderr}")
    argv = [str(exe), "-n", "-f", str(conf), "-i", str(d / "rsyslogd.pid")]
    secs, cpu, rss = _run_daemon("rsyslog", argv, out, d / "daemon.log", expected_lines, timeout)
    verify_output("rsyslog", input_path, out, expected_lines)
    return PeerResult("rsyslog", expected_lines, secs, cpu, rss, input_path.stat().st_size)


def run_syslog_ng(
    input_path: Path, workdir: Path, expected_lines: int, timeout: float = 300
) -> PeerResult:
    """Ship input_path with syslog-ng (file() -> file()) and measure it."""
    exe = syslog_ng_path()
    if exe is None:
        raise PeerError("syslog-ng not available (run scripts/install_peers.sh)")
    input_path = input_path.resolve()
    d, out = _prepare(workdir.resolve(), "syslog-ng")
    conf = d / "syslog-ng.conf"
    conf.write_text(syslog_ng_config(input_path, out))
    # All state files go to the scratch dir; the control socket is a unix socket (no
    # network). --no-caps: capability juggling is pointless here and fails in containers.
    common = [
        "-f",
        str(conf),
        f"--persist-file={d / 'syslog-ng.persist'}",
        f"--pidfile={d / 'syslog-ng.pid'}",
        f"--control={d / 'syslog-ng.ctl'}",
        "--no-caps",
    ]
    check = subprocess.run(
        [str(exe), "--syntax-only", *common], capture_output=True, text=True, timeout=60
    )
    if check.returncode != 0:
        raise PeerError(f"syslog-ng config check failed:\n{check.stdout}{check.stderr}")
    argv = [str(exe), "-F", "--stderr", *common]
    secs, cpu, rss = _run_daemon("syslog-ng", argv, out, d / "daemon.log", expected_lines, timeout)
    verify_output("syslog-ng", input_path, out, expected_lines)
    return PeerResult("syslog-ng", expected_lines, secs, cpu, rss, input_path.stat().st_size)


# --------------------------------------------------------------------------------- main


def generate_input(path: Path, n_lines: int, line_bytes: int = 200) -> int:
    """Write n_lines distinct printable lines of line_bytes (incl. newline); return bytes."""
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-=:;,./"
    filler = alphabet * (line_bytes // len(alphabet) + 2)
    buf: list[bytes] = []
    with open(path, "wb") as fh:
        for i in range(n_lines):
            head = b"2024-05-01T12:00:00.000Z host app[4242]: seq=%010d msg=" % i
            k = i % len(alphabet)  # vary the body so lines are not identical
            body = filler[k : k + max(0, line_bytes - 1 - len(head))]
            buf.append(head + body + b"\n")
            if len(buf) == 10000:
                fh.write(b"".join(buf))
                buf.clear()
        fh.write(b"".join(buf))
    return path.stat().st_size


def main(argv: list[str]) -> int:
    n = int(argv[1].replace("_", "")) if len(argv) > 1 else 1_000_000
    runners: list[tuple[str, Callable[[], bool], Callable[..., PeerResult]]] = [
        ("rsyslog", rsyslog_available, run_rsyslog),
        ("syslog-ng", syslog_ng_available, run_syslog_ng),
    ]
    with tempfile.TemporaryDirectory(prefix="logcap-peers-") as tmp:
        work = Path(tmp)
        inp = work / "input.log"
        size = generate_input(inp, n)
        print(f"input: {n} lines, {size / (1 << 20):.1f} MiB")
        print(
            f"{'peer':<10} {'lines':>9} {'secs':>7} {'lines/s':>10} {'MiB/s':>7} "
            f"{'cpu s':>7} {'peak RSS MiB':>13}"
        )
        status = 0
        for name, available, run in runners:
            if not available():
                print(f"{name:<10} not installed (scripts/install_peers.sh)")
                status = 1
                continue
            try:
                r = run(inp, work, n)
            except PeerError as e:
                print(f"{name:<10} FAILED: {e}")
                status = 1
                continue
            print(
                f"{r.name:<10} {r.lines:>9} {r.seconds:>7.3f} {r.lines_per_second:>10,.0f} "
                f"{r.mib_per_second:>7.1f} {r.cpu_seconds:>7.2f} "
                f"{r.peak_rss_bytes / (1 << 20):>13.1f}"
            )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
