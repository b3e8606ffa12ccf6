"""The soak's steady load and the truth it is checked against: numbered lines written to a
rotated file, numbered entries POSTed to the http source, and the file sink's output read
as it grows (every numbered message counted, and the delivery latency of those that carry
the time they were written).

A message reads ``soak <kind> seq=<n> t=<unix time written> <padding>``: its kind and
number identify it (``file``, ``http``; the container's ``docker`` lines have no time, as
busybox's shell cannot tell sub-second time), so a missing or duplicated one is named.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAD = "p" * 120  # a line of about 180 bytes, as in the other benchmarks


def message(kind: str, number: int) -> str:
    """The numbered message of ``kind``, stamped with the time it is written."""
    return f"soak {kind} seq={number:09d} t={time.time():.6f} {PAD}"


def parse(text: str) -> tuple[str, int, float | None] | None:
    """(kind, number, written at or None) of a soak message; None for anything else."""
    parts = text.split(" ", 4)
    if len(parts) < 3 or parts[0] != "soak" or not parts[2].startswith("seq="):
        return None
    written = float(parts[3][2:]) if len(parts) > 3 and parts[3].startswith("t=") else None
    return parts[1], int(parts[2][4:]), written


class RotatedFile:
    """``app.log`` appended to by one writer, rotated as logrotate's ``create`` does: the
    old ``app.log.<k>`` shifted to ``.<k+1>``, ``app.log`` renamed to ``app.log.1``, a new
    ``app.log`` created, and the writer reopening it (none are deleted: a rotated file
    the collector has not finished would lose lines that the soak would then count)."""

    def __init__(self, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.path = logs / "app.log"
        self.written = 0
        self.rotations = 0
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed in close)

    def write(self, lines: int) -> None:
        data = "".join(message("file", self.written + i) + "\n" for i in range(lines))
        self._file.write(data.encode())
        self._file.flush()
        self.written += lines

    def rotate(self) -> None:
        self._file.close()
        for k in range(self.rotations, 0, -1):
            self.path.with_name(f"app.log.{k}").rename(self.path.with_name(f"app.log.{k + 1}"))
        self.path.rename(self.path.with_name("app.log.1"))
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed in close)
        self.rotations += 1

    def close(self) -> None:
        self._file.close()


@dataclass
class HttpLoad:
    """POSTs ``per_request`` numbered entries every ``interval`` seconds from a thread,
    each request sent again until it is answered 200 (429: after its Retry-After; 503 or
    no answer: at once, so an entry may arrive twice, never not at all). ``acked`` is
    how many entries were answered 200: the numbers 0..acked-1."""

    url: str
    per_request: int = 10
    interval: float = 0.2
    acked: int = 0
    resent: int = 0  # requests sent again (429, 503, no answer)
    unanswered: list[str] = field(default_factory=list)  # when and why (the first 10)
    answers: collections.Counter[int] = field(default_factory=collections.Counter)
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the request under way (bounded), then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=180)

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            body = json.dumps(
                [{"message": message("http", self.acked + i)} for i in range(self.per_request)]
            ).encode()
            if not self._send(body):
                return
            self.acked += self.per_request
            due += self.interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _send(self, body: bytes) -> bool:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            request = urllib.request.Request(self.url, data=body, method="POST")
            request.add_header("Content-Type", "application/json")
            wait = 0.0
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    answer.read()
                    self.answers[answer.status] += 1
                    return True
            except urllib.error.HTTPError as exc:
                with exc:
                    exc.read()
                    self.answers[exc.code] += 1
                    if exc.code not in (429, 503):
                        self.error = f"POST answered {exc.code}"
                        return False
                    wait = float(exc.headers.get("Retry-After", "1")) if exc.code == 429 else 0
            except OSError as exc:
                self.answers[0] += 1
                if len(self.unanswered) < 10:
                    self.unanswered.append(f"{time.strftime('%H:%M:%S')} {exc!r}")
                wait = 0.5
            self.resent += 1
            time.sleep(wait)
        self.error = "a request was not answered 200 within 150 s"
        return False


DOCKER_SCRIPT = (  # 10 numbered lines, then 0.2 s, until /stop exists: about 50 a second
    "i=0; while [ ! -f /stop ]; do j=0; while [ $j -lt 10 ]; do "
    'echo "soak docker seq=$i"; i=$((i+1)); j=$((j+1)); done; sleep 0.2; done'
)


class OutputTail:
    """The file sink's output read as it grows, in a thread every ``interval`` seconds:
    per kind, how often each number arrived; and for the messages that carry their write
    time, (written at, seen at - written at): the delivery latency to within one poll."""

    def __init__(self, path: Path, interval: float = 0.25) -> None:
        self.path = path
        self.interval = interval
        self.offset = 0
        self.seen: dict[str, collections.Counter[int]] = collections.defaultdict(
            collections.Counter
        )
        self.others = 0  # lines that are no soak message
        self.latencies: list[tuple[float, float]] = []
        self.lock = threading.Lock()  # held by a poll: read the figures under it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OutputTail:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        with self.lock:
            self._poll()

    def _poll(self) -> None:
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                data = file.read()
        except OSError:
            return  # not written yet
        whole = data[: data.rfind(b"\n") + 1]  # a line being written waits for its end
        self.offset += len(whole)
        now = time.time()
        for line in whole.splitlines():
            found = parse(json.loads(line)["message"])
            if found is None:
                self.others += 1
                continue
            kind, number, written = found
            self.seen[kind][number] += 1
            if written is not None:
                self.latencies.append((written, now - written))

    def has_all(self, expected: dict[str, set[int]]) -> bool:
        """Whether every expected number of every kind has arrived."""
        with self.lock:
            return all(numbers <= self.seen[kind].keys() for kind, numbers in expected.items())

    def count(self) -> int:
        with self.lock:
            return sum(len(numbers) for numbers in self.seen.values())


def check(
    expected: dict[str, set[int]], seen: dict[str, collections.Counter[int]]
) -> dict[str, dict[str, Any]]:
    """Per kind: expected, arrived, missing (a few named), duplicates, unexpected."""
    out = {}
    for kind, numbers in expected.items():
        got = seen.get(kind, collections.Counter())
        missing = sorted(numbers - got.keys())
        out[kind] = {
            "expected": len(numbers),
            "arrived": len(numbers & got.keys()),
            "missing": len(missing),
            "first_missing": missing[:10],
            "duplicates": sum(c - 1 for c in got.values() if c > 1),
            "unexpected": len(got.keys() - numbers),
        }
    return out
