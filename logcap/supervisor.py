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
reload``), ``POST /config/reload`` and ``supervisor.watch_config`` reload the config,
restarting only the components it changed (logcap/reload.py); a reload waits for one in
progress to end.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from logcap import __version__
from logcap.child import quiet_third_party_loggers
from logcap.config import Config, component_type
from logcap.errors import ConfigError
from logcap.metrics import NOTHING, Counter, CounterTable
from logcap.operator_log import config_origin, drain_line, start_lines
from logcap.plan import (
    DISPATCHER,
    RETRY,
    RunPlan,
    area_words,
    batch_slot_bytes,
    initial_layout,
    step_words,
)
from logcap.reload import Changes, Outcome, Reload, diff, plan_for_steps, refusals
from logcap.ringbuf import Doorbell, Ring, run_prefix, sweep_stale, unlink
from logcap.runstate import RunState
from logcap.sdnotify import Notifier

if TYPE_CHECKING:
    from logcap.config_watch import ConfigWatcher

log = logging.getLogger(__name__)
STABLE_AFTER = 60.0  # a child that ran this long is no longer "crash looping"
EXCHANGE_SLOTS = 4  # failure/redelivery ring slots per sink: the retry process drains them fast
SPARE_BELLS = 32  # doorbells made at start for components reloads add (every child has them)
ROLE_ORDER = ("collector", "dispatcher", "sink", "retry")


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
    finished: bool = False  # exited cleanly during a drain, or retired by a reload
    retiring: bool = False  # a reload stops it: its exit is not a crash
    then_restart: bool = False  # a failed reload: start it again once it has retired
    block: int = -1  # its counter block (logcap/plan.py), for the whole run
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

    def __init__(
        self,
        config: Config,
        origin: str | None = None,
        loader: Callable[[], Config] | None = None,
    ) -> None:
        self.config = config
        self.config_loaded = time.time()
        self.origin = origin if origin is not None else config_origin()
        # how a reload reads the config again (None: this run has no file to re-read)
        self.loader = loader if loader is not None else default_loader(self.origin)
        self.reloads = ReloadStats()
        self.reload_requests: queue.SimpleQueue[ReloadRequest] = queue.SimpleQueue()
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
        self.spare_bells: list[Doorbell] = []
        self.retired_rings: list[Ring] = []  # unlinked by a reload, unmapped at exit
        self.watcher: ConfigWatcher | None = None
        self.notifier = Notifier.from_environ()

    # -- setup -----------------------------------------------------------------------
    def create_segments(self) -> RunPlan:
        """Sweep dead runs' segments, create this run's, and describe them in a plan."""
        for name in sweep_stale():
            log.info("removed stale shared memory segment %s of a dead run", name)
        cfg = self.config
        sources, sinks = list(cfg.sources), list(cfg.sinks)
        collector_rings = {}
        capacity, blocks, slots, step_offsets = initial_layout(cfg)
        for source in sources:
            name = f"{self.prefix}src-{sources.index(source)}"
            self.rings[source] = Ring.create(
                name, cfg.buffer.collector_slots, cfg.buffer.collector_slot_bytes, 1
            )
            collector_rings[source] = name
            self.segments.append(name)
        batch_slot = batch_slot_bytes(cfg)
        batch_name = f"{self.prefix}batches"
        # a cursor per sink slot: those reserved for sinks a reload adds start INACTIVE
        self.rings["batches"] = Ring.create(
            batch_name, cfg.buffer.batch_slots, batch_slot, capacity.sink_slots, len(sinks)
        )
        self.segments.append(batch_name)
        # a failure record carries a whole batch plus its reason
        self.exchange_slot = exchange_slot = batch_slot + 4096 + 64
        failure_rings: dict[str, str] = {}
        redelivery_rings: dict[str, str] = {}
        for i, sink in enumerate(sinks):
            for kind, names in (("fail", failure_rings), ("redo", redelivery_rings)):
                name = f"{self.prefix}{kind}-{i}"
                self.rings[f"{sink}:{kind}"] = Ring.create(name, EXCHANGE_SLOTS, exchange_slot, 1)
                names[sink] = name
                self.segments.append(name)
        counters_name, state_name = f"{self.prefix}counters", f"{self.prefix}state"
        self.table = CounterTable.create(counters_name, capacity.blocks, area_words(capacity))
        self.next_block = len(blocks)
        self.next_slot = len(slots)
        self.next_step_word = step_words(cfg, sources)
        self.state = RunState.create(state_name)
        self.segments += [counters_name, state_name]
        for component in [*sources, DISPATCHER, *sinks, RETRY]:
            self.bells[component] = Doorbell()
        self.spare_bells = [Doorbell() for _ in range(SPARE_BELLS)]
        self.every_bell = [*self.bells.values(), *self.spare_bells]  # closed at the end
        self.all_bell_fds = [b.fd for b in self.every_bell]
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
            capacity=capacity,
            blocks=blocks,
            slots=slots,
            step_offsets=step_offsets,
        )
        for child in self.children:
            child.block = blocks[child.name]
        for sink in sinks:  # the retry process holds nothing yet
            self.table.block(self.plan.counter_index(sink)).set(Counter.OWNED_LOW, NOTHING)
        return self.plan

    # -- children ----------------------------------------------------------------------
    def spawn(self, child: Child, plan: RunPlan | None = None) -> None:
        """Start (or restart) one child with the plan (default: the one in force) on its
        stdin."""
        if child.role == "collector" and child.kind == "http":
            # not serving until the new process says so (no process writes it meanwhile)
            self.table.block(child.block).set(Counter.FILES_WATCHED, 0)
        process = subprocess.Popen(
            [sys.executable, "-m", "logcap.worker", child.role, child.name],
            stdin=subprocess.PIPE,
            pass_fds=self.all_bell_fds,
        )
        assert process.stdin is not None
        process.stdin.write((plan or self.plan).encode())
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
            if child.retiring and child.then_restart:  # after a failed reload
                self.table.block(child.block).set(Counter.RETIRE, 0)
                child.retiring = child.then_restart = False
                child.restart_at = now
                return
            if child.retiring:  # a reload stopped it; it decides what follows
                child.finished = True
                if code != 0:
                    log.warning(
                        "%s %s exited with %s while a reload stopped it",
                        child.role,
                        child.name,
                        code,
                    )
                return
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

    def request_reload_signal(self, *_: object) -> None:
        """Signal handler (SIGHUP): reload the config from the main loop."""
        self.reload_requests.put(ReloadRequest("SIGHUP"))

    def request_reload(self, trigger: str, timeout: float | None = None) -> Outcome | None:
        """Ask the main loop for a reload and wait for its outcome (None: not done in
        ``timeout``, or the agent is stopping). For the API and the config watcher."""
        request = ReloadRequest(trigger)
        self.reload_requests.put(request)
        if not request.done.wait(timeout):
            return None
        return request.outcome

    def run(self) -> int:
        """Run until SIGTERM/SIGINT, then drain; return the process exit status."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload_signal)
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
            self.watcher = self.start_watching()
            while not self.stop_requested:
                self.supervise_once()
                if not announced and self.ready():
                    self.notifier.ready(f"running {len(self.children)} processes")
                    announced = True
                self.serve_reloads()
                time.sleep(0.1)
            return self.drain()
        finally:
            self.refuse_reloads()
            if self.watcher is not None:
                self.watcher.stop()
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
        for ring in [*self.rings.values(), *self.retired_rings]:
            ring.close()
        if hasattr(self, "table"):
            self.table.close()
            self.state.close()
        for bell in getattr(self, "every_bell", []):
            bell.close()

    # -- reloads (logcap/reload.py) ------------------------------------------------------
    def supervise_once(self) -> None:
        """One pass of the main loop's care: restart crashed children, feed the watchdog."""
        for child in self.children:
            self._check(child, draining=False)
        self.notifier.watchdog()

    def serve_reloads(self) -> None:
        """Run the reloads asked for since the last pass, as one."""
        requests = []
        while True:
            try:
                requests.append(self.reload_requests.get_nowait())
            except queue.Empty:
                break
        if not requests:
            return
        self.notifier.reloading("reloading the config")
        outcome = self.reload_now(", ".join(sorted({r.trigger for r in requests})))
        self.notifier.ready(
            "running; " + ("reloaded: " + outcome.summary if outcome.applied else "reload refused")
        )
        for request in requests:
            request.outcome = outcome
            request.done.set()

    def refuse_reloads(self) -> None:
        """The agent stops: answer the reloads still waiting."""
        while True:
            try:
                request = self.reload_requests.get_nowait()
            except queue.Empty:
                return
            request.outcome = Outcome(False, "the agent is stopping", ["the agent is stopping"])
            request.done.set()

    def reload_now(self, trigger: str) -> Outcome:
        """Validate the config again and apply what changed; the outcome is logged and
        kept for /stats and /metrics."""
        began = time.monotonic()
        log.info("reload (%s): reading %s", trigger, self.origin)
        if self.loader is None:
            return self._reload_failed(["this run has no config file to read again"], began)
        try:
            new = self.loader()
        except ConfigError as exc:
            return self._reload_failed(list(exc.problems), began)
        changes = diff(self.config, new)
        watching = new.supervisor.watch_config != self.config.supervisor.watch_config
        problems = refusals(self, new, changes)
        if problems:
            return self._reload_failed(problems, began)
        if changes.restarts:
            try:
                Reload(self, new, changes).apply()
            except Exception as exc:  # shared memory full, no fds left for a child, ...
                log.exception("reload failed while it was applied")
                self._recover_from_failed_reload()
                return self._reload_failed([f"applying the reload failed: {exc}"], began)
        self.config = new
        self.config_loaded = time.time()
        if watching:  # watch_config turned on or off by this reload
            if self.watcher is not None:
                threading.Thread(target=self.watcher.stop, daemon=True).start()
            self.watcher = self.start_watching()
        seconds = time.monotonic() - began
        summary = changes.summary()
        self.reloads.succeeded(self.plan.generation, summary, seconds)
        log.info(
            "reload applied in %.2fs (generation %d): %s", seconds, self.plan.generation, summary
        )
        return Outcome(True, summary, [], seconds)

    def _recover_from_failed_reload(self) -> None:
        """A reload broke off half-way: every child it had stopped, or was stopping,
        restarts as after a crash, with the plan in force (whatever it had switched to),
        and no component is left told to retire."""
        now = time.monotonic()
        running = set(self.plan.components)
        for child in self.children:
            if child.name not in running:  # removed by the plan in force: let it finish
                continue
            if child.retiring and child.running:
                child.then_restart = True  # it finishes what it was told, then starts anew
                continue
            if child.retiring or child.finished:
                child.retiring = child.finished = False
                self.table.block(child.block).set(Counter.RETIRE, 0)
            if child.process is None and child.restart_at is None:
                child.restart_at = now  # stopped, or its start failed: started again
            elif child.process is not None and child.process.poll() is not None:
                child.process, child.restart_at = None, now

    def _reload_failed(self, problems: list[str], began: float) -> Outcome:
        for problem in problems:
            log.error("reload refused: %s", problem)
        log.error("reload refused (%d problem(s)): the running config stays", len(problems))
        self.reloads.failed(problems)
        return Outcome(False, "refused", problems, time.monotonic() - began)

    def start_watching(self) -> ConfigWatcher | None:
        """With ``supervisor.watch_config``, reload when the config file changes."""
        if not self.config.supervisor.watch_config or self.origin.startswith("<"):
            return None
        from logcap.config_watch import ConfigWatcher

        def reload() -> bool:
            outcome = self.request_reload("file changed")
            return outcome is not None and outcome.applied

        watcher = ConfigWatcher(Path(self.origin), reload)
        watcher.start()
        return watcher

    def extend_plan(self, new: Config, changes: Changes) -> RunPlan:
        """The next run plan: the running one with ``new``'s components, each added one
        given a block, a sink slot or step words, a doorbell and its rings."""
        old = self.plan
        blocks = {
            n: i
            for n, i in old.blocks.items()
            if n in (*new.sources, *new.sinks, DISPATCHER, RETRY)
        }
        slots = {n: i for n, i in old.slots.items() if n in new.sinks}
        steps = {n: i for n, i in old.step_offsets.items() if n in new.sources}
        collector_rings = {n: r for n, r in old.collector_rings.items() if n in new.sources}
        failure_rings = {n: r for n, r in old.failure_rings.items() if n in new.sinks}
        redelivery_rings = {n: r for n, r in old.redelivery_rings.items() if n in new.sinks}
        doorbells = {n: fd for n, fd in old.doorbells.items() if n in blocks}
        rings = dict(self.rings)
        for name in changes.sources_added + changes.sinks_added:
            blocks[name] = self.next_block
            self.next_block += 1
            bell = self.spare_bells.pop()
            self.bells[name], doorbells[name] = bell, bell.fd
        for name in changes.sources_added + changes.sources_changed:
            series = plan_for_steps(new, name)
            if name in steps and series == plan_for_steps(self.config, name):
                continue  # same steps: its counters go on
            steps[name] = self.next_step_word
            self.next_step_word += len(series)
        for name in changes.sources_added:
            ring_name = f"{self.prefix}src-b{blocks[name]}"
            buffer = self.config.buffer
            rings[name] = Ring.create(
                ring_name, buffer.collector_slots, buffer.collector_slot_bytes, 1
            )
            collector_rings[name] = ring_name
            self.segments = [*self.segments, ring_name]
        for name in changes.sinks_added:
            slots[name] = self.next_slot
            self.next_slot += 1
            for kind, names in (("fail", failure_rings), ("redo", redelivery_rings)):
                ring_name = f"{self.prefix}{kind}-s{slots[name]}"
                rings[f"{name}:{kind}"] = Ring.create(
                    ring_name, EXCHANGE_SLOTS, self.exchange_slot, 1
                )
                names[name] = ring_name
                self.segments = [*self.segments, ring_name]
            block = self.table.block(blocks[name])
            block.set(Counter.OWNED_LOW, NOTHING)  # the retry process holds nothing yet
        self.rings = rings
        return msgspec.structs.replace(
            old,
            config=new,
            sources=list(new.sources),
            sinks=list(new.sinks),
            collector_rings=collector_rings,
            failure_rings=failure_rings,
            redelivery_rings=redelivery_rings,
            doorbells=doorbells,
            blocks=blocks,
            slots=slots,
            step_offsets=steps,
            generation=old.generation + 1,
            retiring={n: old.blocks[n] for n in changes.sinks_removed + changes.sinks_changed},
        )

    def child(self, role: str, name: str) -> Child:
        """The supervised child of ``role`` named ``name``."""
        return next(c for c in self.children if c.role == role and c.name == name)

    def add_child(self, role: str, name: str, kind: str) -> None:
        """Start a component a reload added."""
        child = Child(role, name, kind, block=self.plan.blocks[name])
        self._set_children([*self.children, child])
        self.spawn(child)

    def forget(self, child: Child) -> None:
        """A component a reload removed, after it exited."""
        self._set_children([c for c in self.children if c is not child])

    def restart_fresh(self, child: Child) -> None:
        """Start ``child`` again with the current plan (a reload changed it)."""
        child.retiring = child.finished = False
        child.crashes_in_a_row, child.restart_at = 0, None
        self.spawn(child)

    def _set_children(self, children: list[Child]) -> None:
        # a new list, never changed in place: the API thread iterates the old one
        self.children = sorted(children, key=lambda c: ROLE_ORDER.index(c.role))

    def drop_segments(self, sources: list[str], sinks: list[str]) -> None:
        """Unlink the rings of removed components (their mappings stay until exit: a
        scrape may be reading them)."""
        keys = [*sources, *(f"{s}:{k}" for s in sinks for k in ("fail", "redo"))]
        gone = [self.rings[k] for k in keys if k in self.rings]
        for ring in gone:
            unlink(ring.shm.name)
        names = {ring.shm.name for ring in gone}
        self.segments = [s for s in self.segments if s not in names]
        self.retired_rings = [*self.retired_rings, *gone]
        self.rings = {k: r for k, r in self.rings.items() if k not in keys}

    # -- for /ready and /metrics ---------------------------------------------------------
    def ready(self) -> bool:
        """Every child is running, and every http source serves requests."""
        return not self.stop_requested and all(
            c.running
            and (
                c.kind != "http"
                or c.role != "collector"
                or self.table.read(c.block)[Counter.FILES_WATCHED] == 1
            )
            for c in self.children
        )

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


@dataclass
class ReloadRequest:
    """One ask for a reload; the main loop answers it."""

    trigger: str
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None


@dataclass
class ReloadStats:
    """What /stats and /metrics tell about reloads."""

    applied: int = 0
    failures: int = 0
    generation: int = 0
    last_error: list[str] = field(default_factory=list)
    last_summary: str = ""
    last_seconds: float = 0.0
    last_at: float = 0.0
    last_failure_at: float = 0.0
    last_failed: bool = False  # the last reload was refused

    def succeeded(self, generation: int, summary: str, seconds: float) -> None:
        self.applied += 1
        self.last_failed = False
        self.generation = generation
        self.last_summary, self.last_seconds, self.last_at = summary, seconds, time.time()

    def failed(self, problems: list[str]) -> None:
        self.failures += 1
        self.last_failed = True
        self.last_error = problems
        self.last_failure_at = time.time()


def default_loader(origin: str) -> Callable[[], Config] | None:
    """How ``logcap run`` reads its config again: the ``--config`` file, or the embedded
    default config."""
    from logcap.cli_common import load

    if origin.startswith("<embedded"):
        return lambda: load(None)
    if origin.startswith("<"):
        return None
    return lambda: load(Path(origin))
