"""Hot reload: apply a new config to a running agent, restarting only what changed.

Triggers (logcap/supervisor.py): SIGHUP, ``POST /config/reload`` (with ``api.token``) and,
with ``supervisor.watch_config``, the config file changing (logcap/config_watch.py). The
new file is validated first; an invalid one changes nothing (its problems are logged,
counted in ``logcap_config_reload_failures_total`` and shown in ``/stats``).

What a valid one restarts (:func:`diff`):

- a source added, removed or changed (its config, or a pipeline it runs): that collector
  only, and the dispatcher (its inputs changed); a changed ``dispatcher`` section: the
  dispatcher only;
- a sink added, removed or changed: that sink only, and the retry process when sinks are
  added or removed (it serves one failure ring per sink); a changed ``retry`` or ``dlq``
  section: the retry process only. The dispatcher takes a sink change **without a
  restart**: it publishes its open batch, then cuts batches for the new sinks;
- ``supervisor`` and ``api.token``: nothing restarts, they apply at once.
``data_dir``, ``buffer``, ``api.address``/``api.enabled``, and a ``batch_max_bytes`` past
the batch ring's slot need a restart: such a reload is refused and the old config runs on.

How nothing is lost (the order of :meth:`Reload.apply`):

1. Collectors of removed or changed sources stop as in a drain (SIGTERM: they publish
   what they read), and the dispatcher takes everything left in their rings.
2. The new run plan is written to its own segment and announced (``RunState``
   generation). The dispatcher publishes its open batch and either exits for a successor
   (retired: source or batching change) or switches to the new sinks; it then reports
   the generation it runs and **S**, the last batch published under the old plan. A sink
   the new plan adds gets a batch-ring cursor reserved at start (``INACTIVE`` until then,
   so it never gated), started by the dispatcher at S: it receives every batch after S.
3. Removed and changed sinks deliver every batch up to S, then exit: the dispatcher writes
   S into their ``Counter.RETIRE`` before it publishes S + 1 (``RunPlan.retiring``), and a
   sink reads the ring's cursor before that word, so none takes a later batch under its
   old config; one that stops short of S (a crash) is started again under the old plan;
   a changed sink's successor resumes on the same cursor, so batches up to S go out with
   the old config and later ones with the new. A removed sink's cursor is made INACTIVE.
4. The retry process, when it must restart, exits at a step boundary: its spool holds
   every batch it owned, and its successor takes them over (a removed sink's go to the
   DLQ as ``permanent``, to be replayed).
5. New and changed collectors start; segments of removed components are unlinked.

Every wait is bounded by ``supervisor.shutdown_timeout``; a process that does not finish
in time is killed, which each process survives by design (the rings, spool and
checkpoints are crash-safe), so a stuck component cannot wedge a reload.
Counter blocks, sink slots and step-area words are reserved at start (logcap/plan.py
``Capacity``) and never reused within a run; a reload that needs more is refused.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from logcap.config import Config, component_type
from logcap.dispatch.bounds import largest_batch_bytes
from logcap.metrics import Counter
from logcap.plan import DISPATCHER, RETRY, plan_segment, publish_plan
from logcap.ringbuf import unlink

if TYPE_CHECKING:
    from logcap.supervisor import Child, Supervisor

log = logging.getLogger(__name__)


@dataclass
class Changes:
    """What differs between two configs, by component."""

    sources_added: list[str] = field(default_factory=list)
    sources_removed: list[str] = field(default_factory=list)
    sources_changed: list[str] = field(default_factory=list)
    sinks_added: list[str] = field(default_factory=list)
    sinks_removed: list[str] = field(default_factory=list)
    sinks_changed: list[str] = field(default_factory=list)
    dispatcher: bool = False  # the dispatcher restarts
    retry: bool = False  # the retry process restarts
    settings: bool = False  # supervisor / api.token: applied without any restart

    @property
    def restarts(self) -> bool:
        """Whether any process restarts (or starts, or stops)."""
        return bool(
            self.sources_added
            or self.sources_removed
            or self.sources_changed
            or self.sinks_added
            or self.sinks_removed
            or self.sinks_changed
            or self.dispatcher
            or self.retry
        )

    def summary(self) -> str:
        """One line for the log and the API's answer."""
        parts = []
        for what, names in (
            ("sources added", self.sources_added),
            ("sources removed", self.sources_removed),
            ("sources changed", self.sources_changed),
            ("sinks added", self.sinks_added),
            ("sinks removed", self.sinks_removed),
            ("sinks changed", self.sinks_changed),
        ):
            if names:
                parts.append(f"{what}: {', '.join(names)}")
        if self.dispatcher:
            parts.append("dispatcher restarted")
        if self.retry:
            parts.append("retry process restarted")
        if self.settings and not parts:
            parts.append("settings applied, no process restarted")
        return "; ".join(parts) or "no change"


def _source_view(config: Config, name: str) -> bytes:
    """A source as it runs: its config and the pipelines it names, in order."""
    source = config.sources[name]
    pipelines = [config.pipelines.get(p) for p in source.pipelines]
    return msgspec.msgpack.encode([source, pipelines], enc_hook=str)


def _same(a: object, b: object) -> bool:
    return msgspec.msgpack.encode(a, enc_hook=str) == msgspec.msgpack.encode(b, enc_hook=str)


def diff(old: Config, new: Config) -> Changes:
    """Which components ``new`` adds, removes or changes, and what must restart."""
    changes = Changes()
    for name in new.sources:
        if name not in old.sources:
            changes.sources_added.append(name)
        elif _source_view(old, name) != _source_view(new, name):
            changes.sources_changed.append(name)
    changes.sources_removed = [n for n in old.sources if n not in new.sources]
    for name in new.sinks:
        if name not in old.sinks:
            changes.sinks_added.append(name)
        elif not _same(old.sinks[name], new.sinks[name]):
            changes.sinks_changed.append(name)
    changes.sinks_removed = [n for n in old.sinks if n not in new.sinks]
    changes.dispatcher = bool(
        changes.sources_added
        or changes.sources_removed
        or changes.sources_changed
        or not _same(old.dispatcher, new.dispatcher)
    )
    changes.retry = bool(
        changes.sinks_added
        or changes.sinks_removed
        or not _same(old.retry, new.retry)
        or not _same(old.dlq, new.dlq)
    )
    changes.settings = not _same(old.supervisor, new.supervisor) or old.api.token != new.api.token
    return changes


def refusals(sup: Supervisor, new: Config, changes: Changes) -> list[str]:
    """Why ``new`` cannot be applied to this run without a restart (empty: it can)."""
    old, plan = sup.config, sup.plan
    problems = []
    if new.data_dir != old.data_dir:
        problems.append("data_dir: changing it needs a restart")
    if not _same(new.buffer, old.buffer):
        problems.append("buffer: ring sizes are fixed for a run; changing them needs a restart")
    if new.api.address != old.api.address or new.api.enabled != old.api.enabled:
        problems.append("api.address / api.enabled: changing them needs a restart")
    slot = sup.rings["batches"].slot_capacity
    if largest_batch_bytes(new) > slot:
        problems.append(
            f"dispatcher.batch_max_bytes: batches of {largest_batch_bytes(new)} bytes do not "
            f"fit this run's batch ring ({slot} bytes a slot); a restart applies it"
        )
    capacity = plan.capacity
    blocks = len(changes.sources_added) + len(changes.sinks_added)
    if sup.next_block + blocks > capacity.blocks:
        problems.append("too many components added in this run; a restart applies them")
    if sup.next_slot + len(changes.sinks_added) > capacity.sink_slots:
        problems.append(
            f"this run has room for {capacity.sink_slots} sinks in all (added ones included); "
            "a restart applies the config"
        )
    steps = sum(
        len(plan_for_steps(new, name)) for name in changes.sources_added + changes.sources_changed
    )
    if sup.next_step_word + steps > capacity.step_words:
        problems.append("pipelines: too many steps added in this run; a restart applies them")
    if len(sup.spare_bells) < blocks:
        problems.append("too many components added in this run; a restart applies them")
    return problems + _unbindable(old, new)


def _unbindable(old: Config, new: Config) -> list[str]:
    """Addresses the new config listens on that no running component holds and that
    cannot be bound now (a collector would crash on each start)."""
    import socket

    from logcap.config._rules import listeners

    held = {address for _, _, address in listeners(old)}
    problems = []
    for path, who, address in listeners(new):
        if address in held:
            continue  # the running agent holds it: a moved listener frees it first
        host, port = address.rsplit(":", 1)
        try:
            probe = socket.create_server((host, int(port)), family=socket.AF_INET)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).split(" (while attempting", 1)[0]
            problems.append(f"cannot listen on {address} for {who} ({'.'.join(path)}): {reason}")
            continue
        probe.close()
    return problems


def plan_for_steps(config: Config, source: str) -> list[object]:
    """The step-area series of ``source`` under ``config``."""
    from logcap.capture.pipeline.engine import step_series

    pipelines = config.sources[source].pipelines
    return list(step_series([(p, config.pipelines[p]) for p in pipelines]))


@dataclass
class Outcome:
    """What a reload did: applied (with its changes) or refused / invalid (problems)."""

    applied: bool
    summary: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Reload:
    """One reload of ``sup`` to ``new`` (see the module docstring for the order)."""

    def __init__(self, sup: Supervisor, new: Config, changes: Changes) -> None:
        self.sup = sup
        self.new = new
        self.changes = changes
        self.deadline_seconds = float(new.supervisor.shutdown_timeout)

    # -- waiting, while the supervisor keeps supervising ---------------------------------
    def wait(self, done: Callable[[], bool], what: str) -> bool:
        """Supervise until ``done()`` or the deadline; False (logged) if it passed."""
        deadline = time.monotonic() + self.deadline_seconds
        while not done():
            if time.monotonic() >= deadline:
                log.error("reload: %s did not happen within %.1fs", what, self.deadline_seconds)
                return False
            self.sup.supervise_once()
            time.sleep(0.02)
        return True

    def retire(self, children: list[Child], what: str, start: Callable[[Child], None]) -> None:
        """Wait for ``children`` (already told to stop) to exit; kill the late ones."""
        if not self.wait(lambda: all(c.finished for c in children), what):
            for child in children:
                if not child.finished and child.process is not None:
                    log.warning("reload: killing %s %s, which did not stop", child.role, child.name)
                    child.process.kill()
                    child.process.wait()
                    child.process = None
                    child.finished = True
        for child in children:
            start(child)

    # -- the steps ----------------------------------------------------------------------
    def apply(self) -> None:
        sup, changes, new = self.sup, self.changes, self.new
        old_plan = sup.plan
        plan = sup.extend_plan(new, changes)
        stopped_sources = changes.sources_removed + changes.sources_changed
        collectors = [sup.child("collector", name) for name in stopped_sources]
        for child in collectors:
            child.retiring = True
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
            elif not child.running:
                child.finished = True
        self.retire(collectors, "stopping the changed collectors", lambda c: None)
        rings = [sup.rings[name] for name in stopped_sources]
        if not self.wait(
            lambda: all(r.consumer_cursor(0) >= r.published for r in rings),
            "the dispatcher taking what the stopped collectors read",
        ):
            log.warning(
                "reload: lines the stopped collectors read but the dispatcher did not "
                "take are read again from their checkpoint when the source returns"
            )

        dispatcher = sup.child("dispatcher", DISPATCHER)
        if changes.dispatcher:
            sup.table.block(plan.counter_index(DISPATCHER)).set(Counter.RETIRE, 1)
            dispatcher.retiring = True
        sup.segments = [*sup.segments, publish_plan(plan)]
        sup.plan, sup.config = plan, new  # together: scrapes read components from both
        sup.state.announce(plan.generation)
        sup.bells[DISPATCHER].signal()
        if changes.dispatcher:

            def restart_dispatcher(child: Child) -> None:
                sup.table.block(plan.counter_index(DISPATCHER)).set(Counter.RETIRE, 0)
                sup.restart_fresh(child)

            self.retire([dispatcher], "the dispatcher retiring", restart_dispatcher)
        if not self.wait(
            lambda: sup.state.applied[0] == plan.generation,
            "the dispatcher taking the new plan",
        ):
            # stuck, or waiting out a crash backoff: (killed and) started now with the new
            # plan, which it applies as it starts
            if dispatcher.process is not None:
                dispatcher.process.kill()
                dispatcher.process.wait()
                dispatcher.process = None
            sup.table.block(plan.counter_index(DISPATCHER)).set(Counter.RETIRE, 0)
            sup.restart_fresh(dispatcher)
            if not self.wait(lambda: sup.state.applied[0] == plan.generation, "the new dispatcher"):
                # nothing after this may run: no sink may start on a cursor not started
                raise RuntimeError("the dispatcher did not take the new plan")
        switch = sup.state.applied[1]

        stopped_sinks = changes.sinks_removed + changes.sinks_changed
        sinks = [sup.child("sink", name) for name in stopped_sinks]
        for child in sinks:  # the dispatcher set their RETIRE to switch + 2
            child.retiring = True
            sup.bells[child.name].signal()
            if not child.running and child.process is None:
                child.finished = True

        ring = sup.rings["batches"]

        def unsettled(child: Child) -> bool:
            return ring.consumer_cursor(old_plan.slots[child.name]) < switch

        def finished_up_to_the_switch() -> bool:
            for child in sinks:
                if child.finished and unsettled(child) and time.monotonic() - child.started > 0.5:
                    # it crashed (or was down) before its last batch: again, under the old
                    # config, which is what those batches were cut for
                    child.finished = False
                    sup.spawn(child, old_plan)
            return all(c.finished for c in sinks)

        self.wait(finished_up_to_the_switch, "the changed sinks delivering up to the switch")

        def after_sink(child: Child) -> None:
            sup.table.block(old_plan.counter_index(child.name)).set(Counter.RETIRE, 0)
            if child.name in self.new.sinks:
                child.kind = component_type(self.new.sinks[child.name])
                sup.restart_fresh(child)
            else:
                if unsettled(child):
                    behind = switch - ring.consumer_cursor(old_plan.slots[child.name])
                    log.error(
                        "reload: removed sink %s did not deliver its last %d batch(es) in "
                        "time; they are not delivered to it",
                        child.name,
                        behind,
                    )
                ring.deactivate(old_plan.slots[child.name])
                sup.forget(child)

        self.retire(sinks, "the changed sinks delivering up to the switch", after_sink)
        for name in changes.sinks_added:
            sup.add_child("sink", name, component_type(new.sinks[name]))

        if changes.retry:
            retry = sup.child("retry", RETRY)
            sup.table.block(plan.counter_index(RETRY)).set(Counter.RETIRE, 1)
            retry.retiring = True
            sup.bells[RETRY].signal()

            def restart_retry(child: Child) -> None:
                sup.table.block(plan.counter_index(RETRY)).set(Counter.RETIRE, 0)
                sup.restart_fresh(child)

            self.retire([retry], "the retry process retiring", restart_retry)

        for name in changes.sources_changed:
            collector = sup.child("collector", name)
            collector.kind = component_type(new.sources[name])
            sup.restart_fresh(collector)
        for name in changes.sources_removed:
            sup.forget(sup.child("collector", name))
        for name in changes.sources_added:
            sup.add_child("collector", name, component_type(new.sources[name]))
        sup.drop_segments(changes.sources_removed, changes.sinks_removed)
        old_segment = plan_segment(old_plan.run_prefix, old_plan.generation)
        if old_segment in sup.segments:
            unlink(old_segment)
            sup.segments = [s for s in sup.segments if s != old_segment]
