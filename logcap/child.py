"""What every child process shares: its plan, its doorbell, its rings and counters."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading

from logcap.metrics import CounterBlock, CounterTable
from logcap.plan import DISPATCHER, RETRY, RunPlan
from logcap.ringbuf import Consumer, Doorbell, Producer, Ring
from logcap.runstate import RunState

PR_SET_PDEATHSIG = 1
# libraries whose DEBUG (and INFO) lines are about their own workings, not the pipeline:
# watchdog logs every inotify event, urllib3 every connection, docker every API call
THIRD_PARTY_LOGGERS = ("watchdog", "urllib3", "docker")


class ChildContext:
    """Attachments of one child process to the shared state of its run."""

    def __init__(self, plan: RunPlan, component: str) -> None:
        self.plan = plan
        self.component = component
        self.state = RunState.attach(plan.runstate)
        self.table = CounterTable.attach(plan.counters)
        self.counters: CounterBlock = self.table.block(plan.counter_index(component))
        self.bells = {name: Doorbell(fd) for name, fd in plan.doorbells.items()}
        self.bell = self.bells[component]
        self.stop = threading.Event()

    def bell_of(self, component: str, plan: RunPlan) -> Doorbell:
        """``component``'s doorbell under ``plan``: one a reload added was made at start
        as a spare, and every child has its fd."""
        if component not in self.bells:
            self.bells[component] = Doorbell(plan.doorbells[component])
        return self.bells[component]

    def collector_producer(self, source: str) -> Producer:
        """This collector's side of its ring."""
        ring = Ring.attach(self.plan.collector_rings[source])
        return Producer(ring, wake=[self.bells[DISPATCHER]], wait=self.bell)

    def collector_consumer(self, source: str) -> Consumer:
        """The dispatcher's side of a collector ring."""
        ring = Ring.attach(self.plan.collector_rings[source])
        return Consumer(ring, 0, wake_producer=self.bells[source], wait=self.bell)

    def batch_producer(self) -> Producer:
        """The dispatcher's side of the batch ring."""
        ring = Ring.attach(self.plan.batch_ring)
        return Producer(ring, wake=[self.bells[s] for s in self.plan.sinks], wait=self.bell)

    def batch_consumer(self, sink: str) -> Consumer:
        """One sink's cursor on the batch ring."""
        ring = Ring.attach(self.plan.batch_ring)
        index = self.plan.slots[sink]
        return Consumer(ring, index, wake_producer=self.bells[DISPATCHER], wait=self.bell)

    def failure_producer(self, sink: str) -> Producer:
        """A sink's side of its failure ring (sink → retry)."""
        ring = Ring.attach(self.plan.failure_rings[sink])
        return Producer(ring, wake=[self.bells[RETRY]], wait=self.bell)

    def failure_consumer(self, sink: str) -> Consumer:
        """The retry process's side of a sink's failure ring."""
        ring = Ring.attach(self.plan.failure_rings[sink])
        return Consumer(ring, 0, wake_producer=self.bells[sink], wait=self.bell)

    def redelivery_producer(self, sink: str) -> Producer:
        """The retry process's side of a sink's redelivery ring."""
        ring = Ring.attach(self.plan.redelivery_rings[sink])
        return Producer(ring, wake=[self.bells[sink]], wait=self.bell)

    def redelivery_consumer(self, sink: str) -> Consumer:
        """A sink's side of its redelivery ring (retry → sink)."""
        ring = Ring.attach(self.plan.redelivery_rings[sink])
        return Consumer(ring, 0, wake_producer=self.bells[RETRY], wait=self.bell)


def become_child(supervisor_pid: int, graceful_sigterm: bool) -> threading.Event:
    """Die with the supervisor; make SIGINT harmless; map SIGTERM to the returned event.

    Only collectors stop on SIGTERM: the dispatcher and sinks must keep draining when a
    whole process group is signalled, and finish through the ring protocol instead.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor_pid:  # the supervisor died before prctl took effect
        os._exit(1)
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if graceful_sigterm:

        def stop_once(*_: object) -> None:
            # a second SIGTERM (the supervisor's, after systemd or timeout(1) signalled the
            # whole group) must not kill a process finishing its stop: at interpreter exit
            # Python hands a caught signal back to its default action, but keeps SIG_IGN
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stop.set()

        signal.signal(signal.SIGTERM, stop_once)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return stop


def configure_logging(component: str) -> None:
    """Plain lines on stderr, tagged with the component (journald adds the time)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("LOGCAP_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)s [{component}] %(name)s: %(message)s",
    )
    quiet_third_party_loggers()


def quiet_third_party_loggers() -> None:
    """Keep libraries' chatter out of ``LOGCAP_LOG_LEVEL=debug``: only their warnings
    and errors are shown (a library's problem that reaches us is logged by our code)."""
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
