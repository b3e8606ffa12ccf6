"""``logcap run``: build the shared segments, run the children, restart them, drain.

Processes: one collector per source, one dispatcher, one process per sink, one retry
process. A child that exits unexpectedly — the retry process included, whose batches wait
in its disk spool — is restarted alone, after a delay that doubles per consecutive crash
(``supervisor.restart_backoff`` … ``restart_backoff_max``); a child in that backoff makes
``/ready`` 503 and shows in ``logcap_child_crash_loop``. Children die with the supervisor
(PR_SET_PDEATHSIG), and the next run sweeps the segments a killed one left. One agent
runs per ``data_dir``: the supervisor holds an exclusive ``flock`` on ``data_dir/lock``.

Graceful stop (SIGTERM / SIGINT), bounded by ``supervisor.shutdown_timeout``:
1. ``draining`` is set and collectors are sent SIGTERM: they publish what they read, exit.
2. ``inputs_closed`` is set: the dispatcher batches what remains, closes the batch ring,
   waits until every sink has released every batch, saves the checkpoint, exits.
3. Sinks exit once the ring is closed and they have delivered (or handed over) all of it.
4. ``sinks_finished`` is set: the retry process takes in the last failures, closes its
   spool and the DLQ, exits; what waits in the spool is retried after the next start.
Exit status 0 when every child finished that way; 1 when one had to be killed.

Under systemd (``Type=notify``) it reports READY=1 once every child runs, STOPPING=1 as the
drain begins and WATCHDOG=1 from its loops (logcap/sdnotify.py). SIGHUP (``systemctl
reload``) is logged and ignored until reloading the config is built.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from logcap import __version__
from logcap.child import quiet_third_party_loggers
from logcap.config import Config, component_type
from logcap.metrics import NOTHING, Counter, CounterTable
from logcap.operator_log import config_origin, drain_line, start_lines
from logcap.plan import DISPATCHER, RETRY, RunPlan, area_words, batch_slot_bytes
from logcap.ringbuf import Doorbell, Ring, run_prefix, sweep_stale, unlink
from logcap.runstate import RunState
from logcap.sdnotify import Notifier

log = logging.getLogger(__name__)
STABLE_AFTER = 60.0  # a child that ran this long is no longer "crash looping"
EXCHANGE_SLOTS = 4  # failure/redelivery ring slots per sink: the retry process drains them fast


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    role: str
    name: str
    kind: str
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    crashes_in_a_row: int = 0
    restart_at: float | None = None
    finished: bool = False  # exited cleanly during a drain
    pid_history: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def crash_loop(self, now: float) -> int:
        """Consecutive crashes not yet followed by a stable run (0: healthy)."""
        if self.running and now - self.started >= STABLE_AFTER:
            return 0
        return self.crashes_in_a_row


class Supervisor:
    """Owns the run: segments, children, API; see the module docstring for the drain."""

    def __init__(self, config: Config, origin: str | None = None) -> None:
        self.config = config
        self.origin = origin if origin is not None else config_origin()
        self.token = secrets.token_hex(4)
        self.prefix = run_prefix(os.getpid(), self.token)
        self.children: list[Child] = (
            [Child("collector", n, component_type(s)) for n, s in config.sources.items()]
            + [Child("dispatcher", DISPATCHER, DISPATCHER)]
            + [Child("sink", n, component_type(s)) for n, s in config.sinks.items()]
            + [Child("retry", RETRY, RETRY)]
        )
        self.stop_requested = False
        self.started = time.monotonic()
        self.segments: list[str] = []
        self.rings: dict[str, Ring] = {}
        self.bells: dict[str, Doorbell] = {}
        self.notifier = Notifier.from_environ()

    # -- setup -----------------------------------------------------------------------
    def create_segments(self) -> RunPlan:
        """Sweep dead runs' segments, create this run's, and describe them in a plan."""
        for name in sweep_stale():
            log.info("removed stale shared memory segment %s of a dead run", name)
        cfg = self.config
        sources, sinks = list(cfg.sources), list(cfg.sinks)
        collector_rings = {}
        for source in sources:
            name = f"{self.prefix}src-{sources.index(source)}"
            self.rings[source] = Ring.create(
                name, cfg.buffer.collector_slots, cfg.buffer.collector_slot_bytes, 1
            )
            collector_rings[source] = name
            self.segments.append(name)
        batch_slot = batch_slot_bytes(cfg)
        batch_name = f"{self.prefix}batches"
        self.rings["batches"] = Ring.create(
            batch_name, cfg.buffer.batch_slots, batch_slot, len(sinks)
        )
        self.segments.append(batch_name)
        # a failure record carries a whole batch plus its reason
        exchange_slot = batch_slot + 4096 + 64
        failure_rings: dict[str, str] = {}
        redelivery_rings: dict[str, str] = {}
        for i, sink in enumerate(sinks):
            for kind, names in (("fail", failure_rings), ("redo", redelivery_rings)):
                name = f"{self.prefix}{kind}-{i}"
                self.rings[f"{sink}:{kind}"] = Ring.create(name, EXCHANGE_SLOTS, exchange_slot, 1)
                names[sink] = name
                self.segments.append(name)
        counters_name, state_name = f"{self.prefix}counters", f"{self.prefix}state"
        self.table = CounterTable.create(
            counters_name, len(sources) + len(sinks) + 2, area_words(cfg, sources, sinks)
        )
        self.state = RunState.create(state_name)
        self.segments += [counters_name, state_name]
        for component in [*sources, DISPATCHER, *sinks, RETRY]:
            self.bells[component] = Doorbell()
        self.plan = RunPlan(
            run_prefix=self.prefix,
            supervisor_pid=os.getpid(),
            config=cfg,
            sources=sources,
            sinks=sinks,
            collector_rings=collector_rings,
            batch_ring=batch_name,
            failure_rings=failure_rings,
            redelivery_rings=redelivery_rings,
            counters=counters_name,
            runstate=state_name,
            doorbells={name: bell.fd for name, bell in self.bells.items()},
        )
        for sink in sinks:  # the retry process holds nothing yet
            self.table.block(self.plan.counter_index(sink)).set(Counter.OWNED_LOW, NOTHING)
        return self.plan

    # -- children ----------------------------------------------------------------------
    def spawn(self, child: Child) -> None:
        """Start (or restart) one child with the plan on its stdin."""
        process = subprocess.Popen(
            [sys.executable, "-m", "logcap.worker", child.role, child.name],
            stdin=subprocess.PIPE,
            pass_fds=[bell.fd for bell in self.bells.values()],
        )
        assert process.stdin is not None
        process.stdin.write(self.plan.encode())
        process.stdin.close()
        child.process, child.started, child.restart_at = process, time.monotonic(), None
        child.pid_history.append(process.pid)

    def _check(self, child: Child, draining: bool) -> None:
        now = time.monotonic()
        if child.finished:
            return
        if child.process is not None:
            code = child.process.poll()
            if code is None:
                return
            child.process = None
            if draining and (code == 0 or (child.role == "collector" and code == -signal.SIGTERM)):
                # -SIGTERM: the drain's own signal reached a collector before it had set
                # its handler, so before it read anything: nothing is lost, nothing to redo
                child.finished = True
                return
            if now - child.started >= STABLE_AFTER:
                child.crashes_in_a_row = 0
            child.crashes_in_a_row += 1
            delay = min(
                self.config.supervisor.restart_backoff * 2 ** (child.crashes_in_a_row - 1),
                self.config.supervisor.restart_backoff_max,
            )
            child.restart_at = now + delay
            log.error(
                "%s %s exited with %s; restarting in %.1fs", child.role, child.name, code, delay
            )
        if child.restart_at is not None and now >= child.restart_at:
            if draining and child.role == "collector":
                child.finished = True  # nothing more to read during a drain
                return
            child.restarts += 1
            self.spawn(child)

    def request_stop(self, *_: object) -> None:
        """Signal handler: begin the graceful drain."""
        self.stop_requested = True

    def ignore_reload(self, *_: object) -> None:
        """Signal handler: SIGHUP's default would kill the agent without a drain."""
        log.warning("reload is not supported yet; SIGHUP ignored")

    def run(self) -> int:
        """Run until SIGTERM/SIGINT, then drain; return the process exit status."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.ignore_reload)
        quiet_third_party_loggers()
        self.create_segments()
        api = None
        try:
            if self.config.api.enabled:
                from logcap.api import start_api

                api = start_api(self)
            for child in self.children:
                self.spawn(child)
            for line in start_lines(self.config, self.origin, __version__, self.prefix):
                log.info("%s", line)
            announced = False
            while not self.stop_requested:
                for child in self.children:
                    self._check(child, draining=False)
                if not announced and self.ready():
                    self.notifier.ready(f"running {len(self.children)} processes")
                    announced = True
                self.notifier.watchdog()
                time.sleep(0.1)
            return self.drain()
        finally:
            if api is not None:
                api.shutdown()
            self.kill_all()
            self.release_segments()
            self.notifier.close()

    def drain(self) -> int:
        """Stop in order (see module docstring); True exit status 0 if all went cleanly."""
        began = time.monotonic()
        deadline = began + self.config.supervisor.shutdown_timeout
        log.info("draining: collectors stop; what they read is delivered or kept for a retry")
        self.notifier.stopping("draining")
        self.state.start_draining()
        collectors = [c for c in self.children if c.role == "collector"]
        for child in collectors:
            if child.running:
                child.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        self._await_finished(collectors, collectors, deadline)
        self.state.close_inputs()
        self.bells[DISPATCHER].signal()
        self.bells[RETRY].signal()
        pipeline = [c for c in self.children if c.role != "retry"]
        self._await_finished(pipeline, self.children, deadline)
        self.state.finish_sinks()
        self.bells[RETRY].signal()
        self._await_finished(self.children, self.children, deadline)
        killed = [
            c.role if c.role in (DISPATCHER, RETRY) else f"{c.role} {c.name}"
            for c in self.children
            if not c.finished
        ]
        summary = drain_line(self.plan, self.table, time.monotonic() - began, killed)
        log.log(logging.ERROR if killed else logging.INFO, "%s", summary)
        return 1 if killed else 0

    def _await_finished(self, waited: list[Child], checked: list[Child], deadline: float) -> None:
        """Check ``checked`` children until every one of ``waited`` finished or the
        drain's deadline passed."""
        while time.monotonic() < deadline and not all(c.finished for c in waited):
            for child in checked:
                self._check(child, draining=True)
            self.notifier.watchdog()
            time.sleep(0.02)

    def kill_all(self) -> None:
        """SIGKILL whatever still runs and reap it."""
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.kill()
                child.process.wait()

    def release_segments(self) -> None:
        """Unlink this run's segments, unmap them and close the doorbells."""
        for name in self.segments:
            unlink(name)
        for ring in self.rings.values():
            ring.close()
        if hasattr(self, "table"):
            self.table.close()
            self.state.close()
        for bell in self.bells.values():
            bell.close()

    # -- for /ready and /metrics ---------------------------------------------------------
    def ready(self) -> bool:
        """Every child is running."""
        return not self.stop_requested and all(c.running for c in self.children)

    def circuits(self) -> dict[str, str]:
        """Each sink's circuit breaker state (sinks/breaker.py)."""
        names = ("closed", "open", "half-open")
        return {
            sink: names[self.table.read(self.plan.counter_index(sink))[Counter.CIRCUIT_STATE]]
            for sink in self.plan.sinks
        }

    def data_dir(self) -> Path:
        """Where checkpoints live."""
        return Path(self.config.data_dir)
