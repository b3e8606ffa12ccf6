"""Benchmark peers: rsyslog and syslog-ng shipping log files to files, measured like logcap.

Each peer runs as a foreground daemon with a private config in a scratch directory. It
reads every input file from the beginning and writes each line, unchanged and in order,
to one output file per input. The wall clock starts when the process is launched (so
start-up counts, as it does for logcap) and stops when every output holds all its
lines. CPU time and peak RSS are read from /proc at that moment, the daemon is stopped,
and then each output is checked against its input (checksum, and the first differing
line if they differ).

Nothing is configured to listen: no /dev/log, no network input; the syslog-ng control
socket is a unix socket in the scratch directory (or in a short temporary directory if
that path is too long for a socket). The daemon is always stopped before a run returns,
and gets SIGTERM from the kernel if the harness itself dies. Install the peers with
``scripts/install_peers.sh``.

Both peers drop empty lines, and syslog-ng also ends a message at a NUL byte and strips
trailing CRs; the expected output is normalised accordingly (see ``_normalise_*``), so
``expected_lines`` is the number of lines the peer is expected to write.

``python bench/peers.py [N_LINES] [--files F] [--repeat R]`` generates N lines of
~200 bytes, runs both peers on them and prints a table.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

RSYSLOGD = Path("/usr/sbin/rsyslogd")
# Wrapper written by scripts/install_peers.sh: syslog-ng-core conflicts with rsyslog, so
# it is unpacked into a private prefix. LOGCAP_SYSLOG_NG may point at another launcher.
SYSLOG_NG_WRAPPER = (
    Path(os.environ.get("LOGCAP_PEERS_PREFIX", "/opt/logcap-peers")) / "bin" / "syslog-ng"
)

# Far above any benchmark line, so neither peer truncates or splits one (rsyslog's
# default is 8 KiB). Longer lines would be cut and fail verification.
MAX_MESSAGE_BYTES = 256 * 1024

_POLL_S = 0.005  # between completion checks (a few stat() calls each)
_STALL_S = 30.0  # output stopped growing this long before the end: give up early
_STOP_GRACE_S = 10.0  # SIGTERM -> SIGKILL
_READ_CHUNK = 1 << 20
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the forked child must not dlopen
_PR_SET_PDEATHSIG = 1

Normaliser = Callable[[bytes], bytes]
InputPaths = Path | Sequence[Path]


class PeerError(RuntimeError):
    """A peer is missing, failed, timed out, or wrote output that differs from its input."""


@dataclass
class PeerResult:
    """One measured peer run.

    ``seconds``: launch until every output held all its lines. ``startup_seconds``:
    launch until the first output byte. ``cpu_seconds``: utime+stime of the daemon (all
    threads, plus any child processes) at the end. ``peak_rss_bytes``: its VmHWM.
    """

    name: str
    lines: int
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    input_bytes: int = 0
    startup_seconds: float = 0.0

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0

    @property
    def mib_per_second(self) -> float:
        """Input MiB shipped per wall-clock second."""
        return self.input_bytes / 2**20 / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------- discovery


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def rsyslogd_path() -> Path | None:
    """The rsyslogd binary, or None."""
    if _executable(RSYSLOGD):
        return RSYSLOGD
    found = shutil.which("rsyslogd")
    return Path(found) if found else None


def syslog_ng_path() -> Path | None:
    """The syslog-ng launcher (LOGCAP_SYSLOG_NG, else install_peers.sh's wrapper, else
    one on PATH), or None."""
    override = os.environ.get("LOGCAP_SYSLOG_NG")
    if override:
        return Path(override) if _executable(Path(override)) else None
    if _executable(SYSLOG_NG_WRAPPER):
        return SYSLOG_NG_WRAPPER
    found = shutil.which("syslog-ng")
    return Path(found) if found else None


def rsyslog_available() -> bool:
    """True if rsyslogd and its imfile module are installed."""
    if rsyslogd_path() is None:
        return False
    return (
        any(Path("/usr/lib").glob("*/rsyslog/imfile.so"))
        or Path("/usr/lib/rsyslog/imfile.so").exists()
    )


def syslog_ng_available() -> bool:
    """True if a syslog-ng launcher is present."""
    return syslog_ng_path() is not None


# ------------------------------------------------------------------------------- configs


def _q(path: Path) -> str:
    """A path as a double-quoted string for either config language."""
    s = str(path)
    if any(c in s for c in '"\\\n$`'):  # would need escaping (or templating) in one of them
        raise PeerError(f"unsupported character in path {s!r}")
    return f'"{s}"'


def rsyslog_config(pairs: Sequence[tuple[Path, Path]], state_dir: Path) -> str:
    """rsyslog config: one imfile input -> omfile action per (input, output) pair.

    Tuning, measured on 1M x 200-byte lines on 2 cores (``python bench/peers.py``):
    * only imfile is loaded: no imuxsock (/dev/log), no imklog, no network input;
    * imfile: readMode 0 = one message per line; the empty state dir makes it read from
      offset 0; addMetadata="off" - on by default, and building the per-message
      filename/offset JSON cut throughput 2.5x (320k vs 800k lines/s);
    * each input is bound to its own queue-less ruleset, so all messages go through the
      main queue: in-memory FixedArray, dequeue batches of 8192 and ONE worker (more
      workers would let batches of one file overtake each other). A queue beat
      queue.type="Direct", which serialises reading and writing in one thread;
    * rsyslogd's own start/stop messages go to the default ruleset, which has no action;
    * omfile writes its 1 MiB buffer once per dequeued batch (flushOnTXEnd on): with
      flushOnTXEnd off (+ asyncWriting) the last partial buffer waits for flushInterval
      (>= 1 s), which showed up as ~2x wall time on 1M lines;
    * %rawmsg% is the line exactly as read (imfile does not parse it).
    """
    parts = [
        f"""\
global(workDirectory={_q(state_dir)} maxMessageSize="{MAX_MESSAGE_BYTES}")
main_queue(queue.type="FixedArray" queue.size="262144"
           queue.dequeueBatchSize="8192" queue.workerThreads="1")
module(load="imfile" mode="inotify")
template(name="logcap_msgonly" type="string" string="%rawmsg%\\n")
"""
    ]
    for i, (inp, out) in enumerate(pairs):
        parts.append(f"""
ruleset(name="logcap_{i}") {{
  action(type="omfile" file={_q(out)} template="logcap_msgonly"
         ioBufferSize="1m" flushOnTXEnd="on" createDirs="off")
}}
input(type="imfile" file={_q(inp)} tag="logcap_{i}" ruleset="logcap_{i}"
      readMode="0" freshStartTail="off" addMetadata="off" persistStateInterval="0")
""")
    return "".join(parts)


def syslog_ng_config(pairs: Sequence[tuple[Path, Path]]) -> str:
    """syslog-ng config: one file() source -> file() destination log path per pair.

    Tuning, measured like rsyslog's:
    * flags(no-parse) puts the whole line into $MSG (no syslog header parsing) and the
      destination template writes just "${MSG}\\n";
    * flags(flow-control): when a destination queue is full its source pauses; without
      it syslog-ng drops messages on overflow;
    * log-fetch-limit(3000) + log-iw-size(10000) was the best of fetch 100..10000 x
      window 5000..100000 (bigger windows were slower); log-fifo-size must exceed
      log-iw-size so flow control, not the queue limit, throttles the source;
    * flush-lines(10000): write in big chunks; follow-freq only matters at EOF;
    * log-msg-size well above the line length so no line is cut;
    * no DNS, no stats or mark messages, no internal() source: nothing else is written.
    """
    parts = [
        f"""\
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
"""
    ]
    for i, (inp, out) in enumerate(pairs):
        parts.append(f"""
source s_{i} {{
  file({_q(inp)} flags(no-parse) follow-freq(0.1)
       log-fetch-limit(3000) log-iw-size(10000) log-msg-size({MAX_MESSAGE_BYTES}));
}};
destination d_{i} {{
  file({_q(out)} template("${{MSG}}\\n") template-escape(no)
       flush-lines(10000) log-fifo-size(200000));
}};
log {{ source(s_{i}); destination(d_{i}); flags(flow-control); }};
""")
    return "".join(parts)


# -------------------------------------------------------------------- expected output


# A normaliser maps one input line (newline included) to what the peer writes for it
# (zero or more lines). Both leave a line alone unless it is empty or holds CR or NUL,
# which lets _expected() skip the per-line pass for ordinary input.


def _normalise_rsyslog(line: bytes) -> bytes:
    """What rsyslog writes for one input line: imfile skips empty lines; everything else
    (spaces, tabs, CR, NUL, control bytes, invalid UTF-8) comes out byte for byte."""
    return b"" if line == b"\n" else line


def _normalise_syslog_ng(line: bytes) -> bytes:
    """What syslog-ng 3.38 writes for one input line: a NUL byte also ends a message,
    trailing CRs are stripped, and empty messages are dropped (observed, not configurable
    for file() sources)."""
    if b"\0" not in line and b"\r" not in line:
        return b"" if line == b"\n" else line
    pieces = (p.rstrip(b"\r") for p in line[:-1].split(b"\0"))
    return b"".join(p + b"\n" for p in pieces if p)


@dataclass
class _Expected:
    """Digest, line count and size of the output a peer should write for one input."""

    input_path: Path
    sha256: str
    lines: int
    size: int


def _expected(path: Path, normalise: Normaliser) -> _Expected:
    """Expected output of one input file, computed before the clock starts."""
    h, lines, size, plain, last = hashlib.sha256(), 0, 0, True, b"\n"
    with open(path, "rb") as fh:
        # Fast path: whole chunks, while no line is one a normaliser would change.
        while chunk := fh.read(_READ_CHUNK):
            h.update(chunk)
            lines += chunk.count(b"\n")
            size += len(chunk)
            plain = plain and not (b"\0" in chunk or b"\r" in chunk or b"\n\n" in last + chunk)
            last = chunk[-1:]
    if last != b"\n":
        # imfile never ships an unterminated last line: the run could never finish
        raise PeerError(f"{path}: last line has no newline")
    if not plain:
        h, lines, size = hashlib.sha256(), 0, 0
        for line in _iter_lines(path, normalise):
            h.update(line)
            lines += 1
            size += len(line)
    return _Expected(path, h.hexdigest(), lines, size)


def _iter_lines(path: Path, normalise: Normaliser | None = None) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        for line in fh:
            if normalise is None:
                yield line
            else:
                # split on b"\n" only: bytes.splitlines() would also split at a CR
                yield from (part + b"\n" for part in normalise(line).split(b"\n")[:-1])


def _digest(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            h.update(chunk)
            n += chunk.count(b"\n")
    return h.hexdigest(), n


def _difference(output: Path, want: _Expected, normalise: Normaliser) -> tuple[str, bool] | None:
    """None if output is exactly the normalised input, in order; else (what differs,
    whether the output is merely incomplete: missing, or a correct but short prefix)."""
    if not output.exists():
        return f"{output}: missing", True
    sha, lines = _digest(output)
    if sha == want.sha256:
        return None
    pairs = zip(_iter_lines(want.input_path, normalise), _iter_lines(output), strict=False)
    for i, (exp, got) in enumerate(pairs, 1):
        if exp != got:
            return (
                f"{output}: line {i} differs from {want.input_path}:\n"
                f"  expected: {exp[:300]!r}\n  got:      {got[:300]!r}"
            ), False
    return f"{output}: {lines} lines, expected {want.lines}", lines < want.lines


# ------------------------------------------------------------------------------ /proc


def _process_tree(pid: int) -> list[int]:
    """pid and its live descendants (threads are accounted to their process)."""
    tree, i = [pid], 0
    while i < len(tree):
        p = tree[i]
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                tree.extend(int(k) for k in kids)
        except OSError:
            pass  # exited meanwhile
        i += 1
    return tree


def _sample(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) summed over the process tree of pid."""
    cpu, rss = 0.0, 0
    for p in _process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        # stat fields 14-17 (utime, stime, cutime, cstime); [0] here is field 3.
        cpu += sum(int(f) for f in stat[11:15]) / _CLK_TCK
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                rss += int(line.split()[1]) * 1024
    return cpu, rss


# ---------------------------------------------------------------------------- running


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _count_lines(path: Path) -> int:
    try:
        return _digest(path)[1]
    except FileNotFoundError:
        return 0


def _die_with_parent() -> None:
    """In the forked child: SIGTERM it if the harness dies (even by SIGKILL), so a
    crashed benchmark never leaves a daemon tailing files."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, SIGKILL after a grace period; always reaps."""
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
    outputs: Sequence[tuple[Path, _Expected]],
    log_path: Path,
    timeout: float,
) -> tuple[float, float, float, int]:
    """Launch argv and wait until every output holds its expected bytes.

    Completion is tested with stat(): the exact size of each expected output is known
    in advance, and re-reading ~200 MB of output inside the timed region would cost the
    peer ~0.1 s of a CPU on a 2-core box. Lines are counted (and checksummed) after the
    clock stops. Returns (seconds, startup seconds, cpu seconds, peak RSS bytes).
    """
    want = sum(e.size for _, e in outputs)
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # only calls prctl(): safe in the forked child
        )
        try:
            first = 0.0
            last_size, last_change = 0, t0
            while True:
                sizes = [_size(out) for out, _ in outputs]
                now = time.perf_counter()
                size = sum(sizes)
                if size and not first:
                    first = now
                if all(s >= e.size for s, (_, e) in zip(sizes, outputs, strict=True)):
                    break
                if size != last_size:
                    last_size, last_change = size, now
                problem = ""
                if proc.poll() is not None:
                    problem = f"exited with status {proc.returncode}"
                elif now - t0 > timeout:
                    problem = f"timed out after {timeout:.0f}s"
                elif size and now - last_change > min(_STALL_S, timeout):
                    problem = f"output stopped growing for {now - last_change:.0f}s"
                if problem:
                    lines = sum(_count_lines(out) for out, _ in outputs)
                    want_lines = sum(e.lines for _, e in outputs)
                    raise PeerError(
                        f"{name} {problem}: {lines}/{want_lines} lines, {size}/{want} bytes "
                        f"written to {outputs[0][0].parent}; log:\n{_tail(log_path)}"
                    )
                time.sleep(_POLL_S)
            seconds = now - t0
            cpu, rss = _sample(proc.pid)
        finally:
            _stop(proc)
    return seconds, (first or now) - t0, cpu, rss


def _run_peer(
    name: str,
    input_path: InputPaths,
    workdir: Path,
    expected_lines: int,
    timeout: float,
    normalise: Normaliser,
    launch: Callable[[Path, list[tuple[Path, Path]]], list[str]],
) -> PeerResult:
    """Shared flow: fresh dir, expected output, config + argv from ``launch``, run,
    verify."""
    inputs = [input_path] if isinstance(input_path, Path) else list(input_path)
    if not inputs:
        raise PeerError(f"{name}: no input files")
    inputs = [p.resolve() for p in inputs]
    # Stale state from an earlier run would make the peer skip input: always start clean.
    d = workdir.resolve() / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    pairs = [(inp, d / f"out{i}.log") for i, inp in enumerate(inputs)]
    expected = [_expected(inp, normalise) for inp in inputs]
    total = sum(e.lines for e in expected)
    if total != expected_lines:
        raise PeerError(
            f"{name}: expected_lines={expected_lines}, but {name} would write {total} "
            f"lines for this input (empty lines are dropped; see its _normalise_* function)"
        )
    argv = launch(d, pairs)
    # Write back dirty pages (freshly generated input, earlier runs' output) now, so the
    # kernel's writeback does not compete with the peer inside the timed region.
    os.sync()
    outputs = [(out, e) for (_, out), e in zip(pairs, expected, strict=True)]
    try:
        secs, startup, cpu, rss = _run_daemon(name, argv, outputs, d / "daemon.log", timeout)
    except PeerError as err:
        # A run that never completes often wrote a wrong line: name it if so.
        for out, e in outputs:
            diff = _difference(out, e, normalise)
            if diff and not diff[1]:
                raise PeerError(f"{err}\n{diff[0]}") from None
        raise
    for out, e in outputs:
        diff = _difference(out, e, normalise)
        if diff:
            raise PeerError(f"{name}: output differs from input: {diff[0]}")
    size = sum(p.stat().st_size for p in inputs)
    return PeerResult(name, expected_lines, secs, cpu, rss, size, startup)


def _check_config(name: str, argv: list[str]) -> None:
    """Run a config syntax check so a bad config fails fast and says why."""
    check = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        raise PeerError(f"{name} config check failed:\n{check.stdout}{check.stderr}")


def run_rsyslog(
    input_path: InputPaths, workdir: Path, expected_lines: int, timeout: float = 300
) -> PeerResult:
    """Ship input_path (one file or several) with rsyslogd, imfile -> omfile.

    ``workdir/rsyslog`` is recreated and holds the config, state, outputs and log.
    """
    exe = rsyslogd_path()
    if exe is None:
        raise PeerError("rsyslogd not installed (run scripts/install_peers.sh)")

    def launch(d: Path, pairs: list[tuple[Path, Path]]) -> list[str]:
        (d / "state").mkdir()
        conf = d / "rsyslog.conf"
        conf.write_text(rsyslog_config(pairs, d / "state"))
        _check_config("rsyslog", [str(exe), "-N1", "-f", str(conf)])
        return [str(exe), "-n", "-f", str(conf), "-i", str(d / "rsyslogd.pid")]

    return _run_peer(
        "rsyslog", input_path, workdir, expected_lines, timeout, _normalise_rsyslog, launch
    )


def run_syslog_ng(
    input_path: InputPaths, workdir: Path, expected_lines: int, timeout: float = 300
) -> PeerResult:
    """Ship input_path (one file or several) with syslog-ng, file() -> file().

    ``workdir/syslog-ng`` is recreated and holds the config, persist file, pid file,
    control socket, outputs and log.
    """
    exe = syslog_ng_path()
    if exe is None:
        raise PeerError("syslog-ng not available (run scripts/install_peers.sh)")
    short_dir: Path | None = None

    def launch(d: Path, pairs: list[tuple[Path, Path]]) -> list[str]:
        nonlocal short_dir
        conf = d / "syslog-ng.conf"
        conf.write_text(syslog_ng_config(pairs))
        # A unix socket path holds at most 107 bytes and syslog-ng silently truncates a
        # longer one, creating the socket outside the work dir: use a short dir instead.
        ctl = d / "syslog-ng.ctl"
        if len(os.fsencode(ctl)) > 100:
            short_dir = Path(tempfile.mkdtemp(prefix="logcap-sng-"))
            ctl = short_dir / "ctl"
        # --no-caps: dropping capabilities is pointless here and fails in some containers.
        args = [
            f"--cfgfile={conf}",
            f"--persist-file={d / 'syslog-ng.persist'}",
            f"--pidfile={d / 'syslog-ng.pid'}",
            f"--control={ctl}",
            "--no-caps",
        ]
        _check_config("syslog-ng", [str(exe), "--syntax-only", *args])
        return [str(exe), "--foreground", "--stderr", *args]

    try:
        return _run_peer(
            "syslog-ng", input_path, workdir, expected_lines, timeout, _normalise_syslog_ng, launch
        )
    finally:
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)


# --------------------------------------------------------------------------------- main


def generate_input(path: Path, n_lines: int, line_bytes: int = 200) -> None:
    """Write n_lines distinct printable lines of line_bytes bytes (newline included)."""
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-=:;,./"
    filler = alphabet * (line_bytes // len(alphabet) + 2)
    with open(path, "wb") as fh:
        for start in range(0, n_lines, 10_000):
            batch = []
            for i in range(start, min(n_lines, start + 10_000)):
                head = b"2026-11-22T08:00:00.000Z host app[4242]: seq=%010d msg=" % i
                k = i % len(alphabet)  # vary the body so lines differ beyond seq
                batch.append(head + filler[k : k + line_bytes - 1 - len(head)] + b"\n")
            fh.write(b"".join(batch))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run rsyslog and syslog-ng on N lines.")
    parser.add_argument("lines", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=1, help="spread lines over F files")
    parser.add_argument("--repeat", type=int, default=1, help="runs per peer")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)

    runners: list[tuple[str, Callable[[], bool], Callable[..., PeerResult]]] = [
        ("rsyslog", rsyslog_available, run_rsyslog),
        ("syslog-ng", syslog_ng_available, run_syslog_ng),
    ]
    status = 0
    with tempfile.TemporaryDirectory(prefix="logcap-peers-") as tmp:
        work = Path(tmp)
        per_file = args.lines // args.files
        inputs = [work / f"input{f}.log" for f in range(args.files)]
        for path in inputs:
            generate_input(path, per_file)
        total = per_file * args.files
        size = sum(p.stat().st_size for p in inputs)
        print(f"input: {total:,} lines in {args.files} file(s), {size / 2**20:.1f} MiB")
        print(
            f"{'peer':<10} {'secs':>7} {'lines/s':>10} {'MiB/s':>7} {'start s':>8} "
            f"{'cpu s':>7} {'peak RSS MiB':>13} {'load1':>6}"
        )
        for name, available, run in runners:
            if not available():
                print(f"{name:<10} not installed (scripts/install_peers.sh)")
                status = 1
                continue
            for _ in range(args.repeat):
                load = os.getloadavg()[0]  # other work on the box skews the figures
                try:
                    r = run(inputs, work / "run", total, args.timeout)
                except PeerError as e:
                    print(f"{name:<10} FAILED: {e}")
                    status = 1
                    break
                print(
                    f"{r.name:<10} {r.seconds:>7.3f} {r.lines_per_second:>10,.0f} "
                    f"{r.mib_per_second:>7.1f} {r.startup_seconds:>8.3f} "
                    f"{r.cpu_seconds:>7.2f} {r.peak_rss_bytes / 2**20:>13.1f} {load:>6.2f}"
                )
    return status


if __name__ == "__main__":
    sys.exit(main())
