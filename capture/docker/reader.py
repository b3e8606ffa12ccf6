"""One read of a container's logs: ``/containers/{id}/logs``, decoded, new lines kept.

The read asks Docker for the logs ``since`` the container's position (the earlier
stream's time, capture/docker/position.py), drops per stream what the position covers,
and gathers the rest in the container's ``pending`` for the publisher, moving
``latest`` (and ``safe``, outside partial lines) as it goes. Joined, cut and skipped
lines are counted here, for new lines only: a resume that reads a line again does not
count it again.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

import docker
from docker.types import CancellableStream

from logcap.capture.docker.config import DockerSourceConfig
from logcap.capture.docker.container import ContainerState
from logcap.capture.docker.position import Reading
from logcap.capture.docker.stream import JOINED, SKIPPED, TRUNCATED, LogDecoder
from logcap.capture.ratelimit import TokenBucket
from logcap.metrics import Counter, CounterBlock

log = logging.getLogger(__name__)
FLUSH_ENTRIES = 2000  # a reader publishes itself once it holds this many lines
_FLAG_COUNTERS = (
    (Counter.LINES_TRUNCATED, TRUNCATED),
    (Counter.LINES_SKIPPED, SKIPPED),
    (Counter.LINES_JOINED, JOINED),
)


def since_param(timestamp_ns: int) -> str:
    """Docker's ``since``: seconds and nanoseconds since the epoch."""
    seconds, nanos = divmod(timestamp_ns, 1_000_000_000)
    return f"{seconds}.{nanos:09d}"


def read_logs(
    container: ContainerState,
    client: docker.APIClient,
    follow: bool,
    config: DockerSourceConfig,
    counters: CounterBlock,
    source: str,
    flush: Callable[[ContainerState], None],
    limiter: TokenBucket | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Read until the response ends (``follow``: until the container stops or the
    stream is closed); ``flush`` publishes when ``FLUSH_ENTRIES`` lines wait."""
    info = client.inspect_container(container.id)
    tty = bool(info["Config"].get("Tty"))
    start = container.latest.clamped()
    reading = Reading(start)
    params: dict[str, int | str] = {
        "stdout": 1,
        "stderr": 1,
        "timestamps": 1,
        "follow": int(follow),
    }
    if start.since() > 0:
        params["since"] = since_param(start.since())
    log.debug("source %s: reading %s since %s", source, container.name, params.get("since"))
    url = client._url("/containers/{0}/logs", container.id)
    response = client._get(url, params=params, stream=True, timeout=None)
    client._raise_for_status(response)
    container.stream = CancellableStream(iter(()), response)
    decoder = LogDecoder(tty, config.max_line_bytes, config.long_lines == "skip")
    try:
        while True:
            data = response.raw.read1(65536)
            lines = decoder.feed(data) if data else decoder.finish()
            _count_decoder(decoder, counters, source)
            keep = len(lines)
            if limiter is not None and lines:  # wait: the daemon keeps what we do not read
                if limiter.drop:
                    keep = limiter.take_up_to(len(lines))
                    counters.add(Counter.RATE_LIMIT_DROPPED, len(lines) - keep)
                else:
                    limiter.wait(len(lines), should_stop)
                counters.set(Counter.RATE_LIMITED_MS, limiter.held_ms())
            flagged = collections.Counter[int]()
            with container.lock:
                for number, (stream, stamp, text, flags) in enumerate(lines):
                    if stamp < 0:  # Docker sent no time: use the time it arrived
                        stamp = time.time_ns()
                        reading.take(stream, stamp)
                    elif not reading.take(stream, stamp):
                        continue  # covered by the position read from: sent already
                    if flags:  # counted here, once, not when a resume reads it again
                        flagged[flags] += 1
                        if flags & SKIPPED:
                            continue
                    if number >= keep:
                        continue  # over the rate_limit (when_exceeded: drop): counted above
                    container.pending.append((container.labels[stream], stamp, text))
                container.latest = reading.position()
                if not decoder.holding:
                    container.safe = container.latest
                full = len(container.pending) >= FLUSH_ENTRIES
            for counter, flag in _FLAG_COUNTERS:
                value = sum(n for flags, n in flagged.items() if flags & flag)
                if value:
                    counters.add(counter, value)
            if full:
                flush(container)
            if not data:
                log.debug(
                    "source %s: %s: end of logs at %s", source, container.name, container.latest
                )
                return
    finally:
        container.stream = None
        response.close()


def _count_decoder(decoder: LogDecoder, counters: CounterBlock, source: str) -> None:
    if decoder.malformed:
        counters.add(Counter.ERRORS, decoder.malformed)
        decoder.malformed = 0
    for message in decoder.daemon_errors:
        counters.add(Counter.ERRORS)
        log.warning("source %s: docker daemon: %s", source, message)
    decoder.daemon_errors.clear()
