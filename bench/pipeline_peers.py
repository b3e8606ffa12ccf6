"""The JSON-parsing benchmark's input, its two contenders and what each must write.

    1 file of JSON lines ─▶ logcap: collector (cut, json_parse, timestamp_parse,
                            level_extract, pack) ─ring─▶ dispatcher (encode once) ─▶ file
    the same file        ─▶ rsyslog: imfile ─▶ mmjsonparse + parse_time + lookup ─▶ omfile

Every input line is ``LINE_BYTES`` long and names its number (``seq``), its event time
(one millisecond after the previous line's) and a level spelt one of several ways, e.g.
``{"ts":"2026-12-01T10:00:00.123Z","level":"WARN","msg":"...","user":{"id":7},...}``.

rsyslog does the same three things as logcap's pipeline: mmjsonparse parses the line into
``$!``, ``parse_time($!ts)`` turns the RFC 3339 time into the event time (whole seconds:
rsyslog's function drops the fraction, logcap keeps nanoseconds), and a lookup table
built from logcap's own level table (capture/pipeline/levels.py) normalises
``tolower($!level)``. Its template writes one JSON object per line with the event time,
the level, every parsed field (``$!all-json``) and the line itself, so both outputs carry
the same information. Its tuning is the file → file peer's (bench/peers.py).

Both outputs are checked by identity: rsyslog's byte for byte against the output computed
from the input (json-c's spaced layout is reproduced by :func:`jsonc`); logcap's entry by
entry, every ``seq`` exactly once with its fields, level, event time and line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from bench import peers
from logcap.capture.labels import file_labels
from logcap.capture.pipeline.levels import LEVELS, normalise
from logcap.dispatch.encode import entry_rest, entry_stamp, rfc3339

LINE_BYTES = 200  # newline included
BASE_S = 1_796_119_200  # 2026-12-01T10:00:00Z
WRITTEN_LEVELS = ("INFO", "WARN", "ERROR", "debug", "info", "Warning", "err", "CRIT")
PIPELINE = """
pipelines:
  parse:
    steps:
      - {type: json_parse}
      - {type: timestamp_parse, field: fields.ts, formats: [rfc3339]}
      - {type: level_extract, field: fields.level}
"""
_enc = msgspec.json.encode
_dec = msgspec.json.decode


def event_ns(seq: int) -> int:
    """The event time written in line ``seq``."""
    return BASE_S * 10**9 + seq * 10**6


def json_line(seq: int) -> str:
    """Line ``seq`` (without its newline), exactly ``LINE_BYTES - 1`` characters."""
    seconds, milli = divmod(seq, 1000)
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(BASE_S + seconds)) + f".{milli:03d}Z"
    level = WRITTEN_LEVELS[seq % len(WRITTEN_LEVELS)]
    head = f'{{"ts":"{ts}","level":"{level}","msg":"request handled '
    tail = f'","user":{{"id":{seq % 997}}},"seq":{seq},"status":{200 + seq % 5},"route":"items"}}'
    return head + "x" * (LINE_BYTES - 1 - len(head) - len(tail)) + tail


def write_json_input(path: Path, lines: int) -> None:
    """``lines`` JSON lines into ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        for start in range(0, lines, 10_000):
            out.write(
                "".join(json_line(s) + "\n" for s in range(start, min(lines, start + 10_000)))
            )


def logcap_config(workdir: Path, logs: Path, api: str, with_pipeline: bool) -> Path:
    """``workdir/logcap.yaml``: the file source on ``logs/*.log`` (running the pipeline or
    not) → one file sink ``archive`` writing ``workdir/out/app.ndjson``."""
    config = workdir / "logcap.yaml"
    pipelines = ", pipelines: [parse]" if with_pipeline else ""
    config.write_text(f"""
data_dir: {workdir / "data"}
api: {{address: "{api}"}}
{PIPELINE if with_pipeline else ""}
sources:
  app: {{type: file, include: ["{logs}/*.log"]{pipelines}}}
sinks:
  archive: {{type: file, path: "{workdir}/out/{{source}}.ndjson"}}
""")
    return config


def logcap_output_bytes(path: Path, lines: int, with_pipeline: bool) -> int:
    """Exact size of logcap's output for ``path`` (the same encoding as dispatch/encode.py)."""
    labels = file_labels(socket.gethostname(), {}, None, str(path))
    rest = entry_rest("app", labels, 0)
    fixed = len(entry_stamp(0)) + len(rest) + 2  # + "}\n"
    total = 0
    for seq in range(lines):
        line = json_line(seq)
        total += fixed + len(_enc(line))
        if with_pipeline:
            level = normalise(WRITTEN_LEVELS[seq % len(WRITTEN_LEVELS)])
            total += len(b'"level":,') + len(_enc(level)) + len(b'"fields":,') + len(line)
    return total


def verify_logcap_output(output: Path, lines: int, with_pipeline: bool) -> None:
    """Every line's ``seq`` exactly once, with its parsed fields, normalised level and event
    time (with the pipeline), and the line itself as the message."""
    seen = bytearray(lines)
    with open(output, "rb") as f:
        for raw in f:
            entry = _dec(raw)
            message = entry["message"]
            fields = _dec(message)
            seq = fields["seq"]
            assert 0 <= seq < lines and not seen[seq], f"seq {seq} twice or unknown"
            seen[seq] = 1
            assert message == json_line(seq), f"seq {seq}: message differs"
            if with_pipeline:
                assert entry.get("fields") == fields, f"seq {seq}: fields {entry.get('fields')}"
                assert entry.get("level") == normalise(fields["level"]), f"seq {seq}: level"
                assert entry["timestamp"] == rfc3339(event_ns(seq)), f"seq {seq}: timestamp"
            else:
                assert "fields" not in entry and "level" not in entry
    missing = lines - sum(seen)
    assert missing == 0, f"{missing} of {lines} lines missing from {output}"


# ------------------------------------------------------------------------------ rsyslog


def jsonc(value: Any) -> str:
    """``value`` laid out as rsyslog's json-c writes ``$!all-json`` (spaced; enough for the
    benchmark's lines: objects, strings without escapes, integers)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}": {jsonc(v)}' for k, v in value.items()) + " }"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def rsyslog_line(seq: int) -> bytes:
    """What rsyslog's template writes for line ``seq``."""
    line = json_line(seq)
    fields = _dec(line)
    level = normalise(fields["level"])
    return (
        f'{{"timestamp":{event_ns(seq) // 10**9},"level":"{level}",'
        f'"fields":{jsonc(fields)},"message":{json.dumps(line)}}}\n'
    ).encode()


def rsyslog_parse_available() -> bool:
    """rsyslogd with imfile and mmjsonparse."""
    return peers.rsyslog_available() and (
        any(Path("/usr/lib").glob("*/rsyslog/mmjsonparse.so"))
        or Path("/usr/lib/rsyslog/mmjsonparse.so").exists()
    )


def rsyslog_parse_config(inp: Path, out: Path, state_dir: Path, levels: Path) -> str:
    """imfile → mmjsonparse → parse_time + level lookup → omfile, tuned as
    :func:`bench.peers.rsyslog_config` (one queue worker, batches of 8192, 1 MiB writes
    flushed per batch, no metadata)."""
    q = peers._q
    return f"""\
global(workDirectory={q(state_dir)} maxMessageSize="{peers.MAX_MESSAGE_BYTES}")
main_queue(queue.type="FixedArray" queue.size="262144"
           queue.dequeueBatchSize="8192" queue.workerThreads="1")
module(load="imfile" mode="inotify")
module(load="mmjsonparse")
lookup_table(name="levels" file={q(levels)})
template(name="logcap_parsed" type="list") {{
  constant(value="{{\\"timestamp\\":") property(name="$.ts")
  constant(value=",\\"level\\":\\"") property(name="$.level")
  constant(value="\\",\\"fields\\":") property(name="$!all-json")
  constant(value=",\\"message\\":\\"") property(name="rawmsg" format="json")
  constant(value="\\"}}\\n")
}}
ruleset(name="logcap_parse") {{
  action(type="mmjsonparse" cookie="" useRawMsg="on")
  set $.ts = parse_time($!ts);
  set $.level = lookup("levels", tolower($!level));
  action(type="omfile" file={q(out)} template="logcap_parsed"
         ioBufferSize="1m" flushOnTXEnd="on" createDirs="off")
}}
input(type="imfile" file={q(inp)} tag="logcap_parse" ruleset="logcap_parse"
      readMode="0" freshStartTail="off" addMetadata="off" persistStateInterval="0")
"""


@functools.lru_cache(maxsize=2)  # the same for every round: computed once
def _expected_rsyslog(lines: int) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for seq in range(lines):
        line = rsyslog_line(seq)
        digest.update(line)
        size += len(line)
    return digest.hexdigest(), size


def _output_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from f


def run_rsyslog_parse(
    inp: Path, workdir: Path, lines: int, timeout: float = 300
) -> peers.PeerResult:
    """Run rsyslog on ``inp`` until its output holds every line, then check it byte for byte."""
    exe = peers.rsyslogd_path()
    if exe is None or not rsyslog_parse_available():
        raise peers.PeerError("rsyslogd with mmjsonparse not installed (scripts/install_peers.sh)")
    d = workdir.resolve() / "rsyslog-parse"
    d.mkdir(parents=True)
    (d / "state").mkdir()
    out = d / "out.log"
    levels = d / "levels.json"
    table = [{"index": k, "value": v} for k, v in sorted(LEVELS.items())]
    levels.write_text(json.dumps({"version": 1, "nomatch": "", "type": "string", "table": table}))
    conf = d / "rsyslog.conf"
    conf.write_text(rsyslog_parse_config(inp.resolve(), out, d / "state", levels))
    peers._check_config("rsyslog", [str(exe), "-N1", "-f", str(conf)])
    sha, size = _expected_rsyslog(lines)
    want = peers._Expected(inp, sha, lines, size)
    argv = [str(exe), "-n", "-f", str(conf), "-i", str(d / "rsyslogd.pid")]
    seconds, startup, cpu, rss = peers._run_daemon(
        "rsyslog", argv, [(out, want)], d / "daemon.log", timeout
    )
    got, count = peers._digest(out)
    if got != sha:
        for seq, line in enumerate(_output_lines(out)):
            if seq >= lines or line != rsyslog_line(seq):
                expected = rsyslog_line(seq) if seq < lines else b"(nothing)"
                raise peers.PeerError(
                    f"rsyslog line {seq + 1} differs:\n  expected {expected[:300]!r}\n"
                    f"  got      {line[:300]!r}"
                )
        raise peers.PeerError(f"rsyslog wrote {count} lines, expected {lines}")
    return peers.PeerResult("rsyslog", lines, seconds, cpu, rss, inp.stat().st_size, startup)
