"""The docker collector: every selected container's stdout and stderr into the ring.

Threads: one follows the daemon's event stream (start, die, destroy, rename); one per
running container reads ``/containers/{id}/logs?follow=1&timestamps=1``; the main thread
publishes what the readers gathered every ``FLUSH_INTERVAL`` and reconnects, with backoff,
when the daemon goes away. Reading one response is capture/docker/reader.py, publishing
(under one lock: the ring has one producer) capture/docker/publish.py.

Positions. A container is read from where it was left: per stream, the event time of the
newest line sent and how many lines of that stream had exactly that time (see
capture/docker/position.py: Docker stamps the two streams in two threads, so one time
for both could pass a line of the other stream stamped just before it). Records carry it
to the dispatcher, which checkpoints it like a file offset once every sink has delivered
the lines (the key is the container id). On resume the logs are asked ``since`` the
earlier stream's time and each stream skips the lines its position covers: no duplicate
at the boundary, nothing skipped. While a 16 KiB partial line is being joined the
published position stays before it, so a crash re-reads it whole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import requests
import urllib3
from docker.errors import DockerException, NotFound
from docker.types import CancellableStream

from logcap.capture.docker.config import DockerSourceConfig
from logcap.capture.docker.container import ContainerState, container_key
from logcap.capture.docker.position import NOTHING_READ, ContainerPosition
from logcap.capture.docker.publish import Publisher
from logcap.capture.docker.reader import read_logs
from logcap.capture.docker.select import entry_labels, selected
from logcap.capture.docker.started import process_started_ns
from logcap.capture.docker.stream import parse_rfc3339
from logcap.capture.file.started import mark_started
from logcap.capture.pipeline.engine import Processor
from logcap.capture.ratelimit import TokenBucket
from logcap.dispatch.checkpoint import FilePosition
from logcap.metrics import Counter, CounterBlock
from logcap.ringbuf import Producer

log = logging.getLogger(__name__)
FLUSH_INTERVAL = 0.05
FIRST_RECONNECT_DELAY = 0.5
_CONNECTION_ERRORS = (
    DockerException,
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    OSError,
)
READ_RETRY_DELAY = 1.0
ALIVE_EVERY = 5.0  # seconds between touches of the started marker while connected


class DockerCollector:
    """Reads containers until told to stop; survives the daemon going away."""

    def __init__(
        self,
        name: str,
        config: DockerSourceConfig,
        producer: Producer,
        counters: CounterBlock,
        checkpoints: dict[tuple[int, int], FilePosition],
        should_stop: Callable[[], bool],
        started_marker: Path,
        started_ns: int | None = None,
        processor: Processor | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.publisher = Publisher(producer, counters, processor, dict(config.labels))
        # one bucket for every container of the source (each reader thread takes from it)
        self.limiter = None if config.rate_limit is None else TokenBucket(config.rate_limit)
        self.counters = counters
        self.checkpoints = {ino: p for (_, ino), p in checkpoints.items()}
        self.should_stop = should_stop
        self.started_marker = started_marker
        # this process's start: where a first run's "now" is (capture/docker/started.py)
        self.started_ns = process_started_ns() if started_ns is None else started_ns
        self.containers: dict[str, ContainerState] = {}
        self.readers_lock = threading.Lock()  # starting and ending readers
        self.lost = threading.Event()  # the event stream ended: reconnect
        self.client: docker.APIClient | None = None
        self.events: CancellableStream | None = None

    # -- the main loop -------------------------------------------------------------------
    def run(self) -> None:
        """Connect, read, reconnect with backoff; on stop, publish everything and close."""
        delay = FIRST_RECONNECT_DELAY
        try:
            while not self.should_stop():
                connected_at = time.monotonic()
                try:
                    self._connect()
                    self._serve()
                except _CONNECTION_ERRORS as exc:
                    log.warning("source %s: docker daemon unavailable: %s", self.name, exc)
                finally:
                    self._disconnect()
                if self.should_stop():
                    break
                if time.monotonic() - connected_at > 10 * delay:
                    delay = FIRST_RECONNECT_DELAY  # it ran for a while: start over
                self.counters.add(Counter.DOCKER_RECONNECTS)
                self._sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max_delay)
        finally:
            for container in list(self.containers.values()):
                self._flush(container)
            self.publisher.close()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))

    def _connect(self) -> None:
        self.lost.clear()
        self.client = client = docker.APIClient(
            base_url=self.config.docker_host, version="auto", timeout=30
        )
        first_run = not self.started_marker.exists()
        if first_run:  # durably before any reader: a kill from here on is no first run
            mark_started(self.started_marker)
        # subscribe before listing (replaying the last second) so no start falls between
        self.events = client.events(
            since=int(time.time()) - 1, filters={"type": "container"}, decode=True
        )
        listed = client.containers(all=True)
        present = {container_key(summary["Id"]) for summary in listed}
        for key, saved in list(self.checkpoints.items()):
            if key not in present:  # destroyed while the agent was down
                self._forget(saved.path.removeprefix("docker://"))
        for summary in listed:
            names = summary.get("Names") or ["/" + summary["Id"][:12]]
            container = self._known(
                summary["Id"], names[0].lstrip("/"), summary["Image"], summary["Labels"] or {}
            )
            if container is None:
                continue
            if first_run and self.config.read_from == "end" and container.latest == NOTHING_READ:
                container.latest = container.safe = ContainerPosition.at(self.started_ns)
            if summary.get("State") == "running" or self._missed(container, client, first_run):
                self._start_reader(container)
        self.started_marker.touch()  # its time: when this source last saw the daemon
        threading.Thread(target=self._watch, args=(self.events,), daemon=True).start()
        log.info("source %s: connected to %s", self.name, self.config.docker_host)

    def _missed(self, container: ContainerState, client: docker.APIClient, first_run: bool) -> bool:
        """Whether a stopped container printed lines this source has not read: it exited
        after the newest line read from it, or (never read) after this source last saw
        the daemon, i.e. it ran while the agent was down or disconnected, or (first run)
        after this process started."""
        finished = parse_rfc3339(client.inspect_container(container.id)["State"]["FinishedAt"])
        if container.latest != NOTHING_READ:
            return finished >= container.latest.newest()
        if first_run:
            return finished >= self.started_ns
        last_seen = self.started_marker.stat().st_mtime_ns - ALIVE_EVERY * 2_000_000_000
        return finished >= min(last_seen, self.started_ns)

    def _serve(self) -> None:
        alive_at = time.monotonic()
        while not self.should_stop() and not self.lost.is_set():
            time.sleep(FLUSH_INTERVAL)
            if time.monotonic() - alive_at >= ALIVE_EVERY:
                self.started_marker.touch()
                alive_at = time.monotonic()
            watched = 0
            for container in list(self.containers.values()):
                self._flush(container)
                watched += container.reader is not None
                if container.gone and container.reader is None:
                    self._forget(container.id)
            self.counters.set(Counter.FILES_WATCHED, watched)

    def _disconnect(self) -> None:
        if self.events is not None:
            self.events.close()
        for container in list(self.containers.values()):
            stream, reader = container.stream, container.reader
            if stream is not None:
                stream.close()
            if reader is not None:
                reader.join(timeout=5)
        if self.client is not None:
            self.client.close()
        self.client = self.events = None

    # -- containers ----------------------------------------------------------------------
    def _known(
        self, container_id: str, name: str, image: str, labels: dict[str, str]
    ) -> ContainerState | None:
        """The container's state, created on first sight; None if it is not selected."""
        container = self.containers.get(container_id)
        if container is not None:
            return container
        if not selected(self.config, name, image, labels):
            return None
        container = ContainerState(
            container_id, name, image, entry_labels(self.config, container_id, name, image, labels)
        )
        saved = self.checkpoints.get(container_key(container_id))
        if saved is not None:
            container.latest = container.safe = container.published = ContainerPosition.decode(
                saved.offset, saved.fingerprint
            )
        self.containers[container_id] = container
        return container

    def _watch(self, events: CancellableStream) -> None:
        """Follow the event stream until it ends (daemon gone, or closed by us)."""
        try:
            for event in events:
                self._on_event(event)
        except _CONNECTION_ERRORS as exc:
            log.debug("source %s: event stream ended: %s", self.name, exc)
        finally:
            self.lost.set()

    def _on_event(self, event: dict[str, Any]) -> None:
        action = event.get("Action") or event.get("status") or ""
        actor = event.get("Actor") or {}
        container_id = actor.get("ID") or event.get("id") or ""
        attributes = dict(actor.get("Attributes") or {})
        name = attributes.pop("name", container_id[:12])
        image = attributes.pop("image", "")
        if action == "start":
            container = self._known(container_id, name, image, attributes)
            if container is not None:
                self._start_reader(container)
        elif action == "rename" and container_id in self.containers:
            container = self.containers[container_id]
            with container.lock:
                container.name = name
                container.labels = entry_labels(
                    self.config, container_id, name, container.image, attributes
                )
        elif action == "destroy" and container_id in self.containers:
            self.containers[container_id].gone = True

    def _start_reader(self, container: ContainerState) -> None:
        with self.readers_lock:
            if container.reader is not None:
                return  # the running reader looks again when its stream ends
            container.reader = threading.Thread(
                target=self._read,
                args=(container, self.client),
                name=f"logs-{container.id[:12]}",
                daemon=True,
            )
            container.reader.start()

    # -- reading ---------------------------------------------------------------------------
    def _ending(self) -> bool:
        return self.should_stop() or self.lost.is_set()

    def _read(self, container: ContainerState, client: docker.APIClient) -> None:
        """Read the container's logs while it runs, again after a restart of it, and
        once more to the end after it stopped: a follow stream can end at the
        container's exit before its last lines (seen with Docker 20.10)."""
        follow = True
        while not self._ending():
            try:
                self._read_once(container, client, follow)
            except NotFound:  # destroyed: nothing more to read
                container.gone = True
                break
            except _CONNECTION_ERRORS as exc:
                if self._ending():
                    break  # the daemon went away or we stop: the collector reconnects
                self.counters.add(Counter.ERRORS)
                log.warning("source %s: reading %s: %s", self.name, container.name, exc)
                time.sleep(READ_RETRY_DELAY)
            except Exception:  # a bug must not end a container's logs without a word
                self.counters.add(Counter.ERRORS)
                log.exception("source %s: reading %s", self.name, container.name)
                time.sleep(READ_RETRY_DELAY)
            with self.readers_lock:  # a start event sees either this reader or none
                try:
                    running = not self._ending() and self._running(container, client)
                except _CONNECTION_ERRORS:
                    running = False
                if not running and not follow:
                    break
            follow = running
        with self.readers_lock:
            container.reader = None

    def _running(self, container: ContainerState, client: docker.APIClient) -> bool:
        try:
            state = client.inspect_container(container.id)["State"]
        except NotFound:
            container.gone = True
            return False
        return bool(state.get("Running"))

    def _read_once(
        self, container: ContainerState, client: docker.APIClient, follow: bool = True
    ) -> None:
        read_logs(
            container,
            client,
            follow,
            self.config,
            self.counters,
            self.name,
            self._flush,
            self.limiter,
            self.should_stop,
        )

    def _flush(self, container: ContainerState) -> None:
        self.publisher.flush(container)

    def _forget(self, container_id: str) -> None:
        """A destroyed container's checkpoint entry goes, after everything read from it."""
        self.containers.pop(container_id, None)
        self.checkpoints.pop(container_key(container_id), None)
        self.publisher.forget(container_id)
