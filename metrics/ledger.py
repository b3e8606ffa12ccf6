"""The events ledger: for each sink, every entry published for it is delivered, dead-
lettered or still in flight, and ``logcap_events_unaccounted`` says how many are none of
these (it must stay 0: "nothing lost" as a number an operator can alert on).

    published  = entries the dispatcher put in batches for the sink (its inputs, its
                 ``when``; counted only after the batch is published)
    in flight  = entries for the sink in batch-ring slots it has not released
               + entries the retry process holds for it (spooled: due, waiting for the
                 DLQ, or handed back and not yet reported)
    delivered  = entries the sink delivered (each fresh batch counted once, a restarted
                 sink process too)
    dead       = entries written to the DLQ for the sink (this run)
    (published also counts entries that came back into flight without the dispatcher:
     those dlq.reprocess re-offered, and a previous run's retry spool taken over)
    unaccounted = published - in flight - delivered - dead   (never below 0)

The parts are read by other processes while entries move, so they are read in the order
entries move — published, then the ring, then the retry process, then the terminal
counts — and every hand-over adds an entry to its next place before it leaves the last
(the dispatcher counts after publishing; a sink counts a delivery before releasing the
slot; the retry process publishes what it holds before the sink may release a failed
batch's slot). A moving entry can then be seen twice (the sum is too high, and the
difference is clamped at 0), never not at all: ``unaccounted`` above 0 is an entry lost,
not a race. Entries dropped on purpose before the dispatcher (pipeline drops, dedup,
``long_lines: skip``, a rate limit's drops) are counted per source, not here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from logcap.dispatch.batch import Batch
from logcap.metrics._counters import Counter
from logcap.sinks.routing import entries_for, sink_routes

if TYPE_CHECKING:
    from logcap.ringbuf import Ring
    from logcap.supervisor import Supervisor


@dataclass(frozen=True)
class SinkLedger:
    """One sink's ledger, read once."""

    sink: str
    published: int
    in_ring: int
    held_by_retry: int
    delivered: int
    dead_lettered: int

    @property
    def unaccounted(self) -> int:
        """Entries published for the sink that are in no place (0 unless one was lost)."""
        in_flight = self.in_ring + self.held_by_retry
        return max(0, self.published - in_flight - self.delivered - self.dead_lettered)


def _in_ring(ring: Ring, index: int, inputs: frozenset[str] | None, skip_bit: int) -> int:
    """Entries for the sink of batch-ring cursor ``index`` in the slots it has not
    released. A slot the sink releases while it is read may be rewritten at once (the
    producer waits only for the slowest cursor): then it is not counted here, and it
    need not be, its entries are delivered or held by the retry process, read after
    this."""
    published = ring.published
    total = 0
    for seq in range(ring.consumer_cursor(index) + 1, published + 1):
        try:
            meta = Batch.from_slot(ring.payload(seq)[: ring.slot_length(seq)]).meta
            count = entries_for(meta.groups, inputs, skip_bit)
        except (msgspec.DecodeError, ValueError):
            count = 0  # torn by a rewrite: released meanwhile (checked below)
        if ring.consumer_cursor(index) >= seq:
            continue  # released while read: counted later, as delivered or held
        total += count
    return total


def read_ledgers(sup: Supervisor) -> list[SinkLedger]:
    """Every sink's ledger, each read in the order entries move (module docstring)."""
    ring = sup.rings["batches"]
    plan = sup.plan
    routes = sink_routes(plan.config, plan.sinks, plan.slots)
    ledgers = []
    for index, sink in enumerate(plan.sinks):
        block = sup.table.block(plan.counter_index(sink))
        # published for it this run, plus what came back into flight without the
        # dispatcher: dlq.reprocess re-offers, a previous run's spool taken over
        published = (
            block.get(Counter.LEDGER_PUBLISHED)
            + block.get(Counter.DLQ_REPROCESSED_ENTRIES)
            + block.get(Counter.RETRY_CARRIED_IN)
        )
        inputs, skip_bit = routes[index]
        in_ring = _in_ring(ring, plan.slots[sink], inputs, skip_bit)
        held = block.get(Counter.RETRY_HELD_ENTRIES)
        delivered = block.get(Counter.EVENTS_OUT)
        dead = block.get(Counter.DLQ_ENTRIES)
        ledgers.append(SinkLedger(sink, published, in_ring, held, delivered, dead))
    return ledgers


def ledger_families(sup: Supervisor) -> Iterator[Metric]:
    """The ledger as metrics, per sink."""
    published = CounterMetricFamily(
        "logcap_ledger_published_events",
        "Entries the dispatcher published for the sink (its inputs and when).",
        labels=["component"],
    )
    in_flight = GaugeMetricFamily(
        "logcap_ledger_in_flight_events",
        "Entries for the sink not yet delivered or dead-lettered, by where they are "
        "(ring: batch slots it has not released; retry: held by the retry process).",
        labels=["component", "place"],
    )
    dead = GaugeMetricFamily(
        "logcap_ledger_dead_lettered_events",
        "Entries dead-lettered for the sink this run (re-offers count as published again).",
        labels=["component"],
    )
    unaccounted = GaugeMetricFamily(
        "logcap_events_unaccounted",
        "Entries published for the sink that are neither delivered, dead-lettered nor "
        "in flight: lost. Must stay 0.",
        labels=["component"],
    )
    never_fail = {c.name for c in sup.children if c.role == "sink" and c.kind == "blackhole"}
    for ledger in read_ledgers(sup):
        published.add_metric([ledger.sink], ledger.published)
        in_flight.add_metric([ledger.sink, "ring"], ledger.in_ring)
        if ledger.sink not in never_fail:  # a blackhole hands nothing to retry or the DLQ
            in_flight.add_metric([ledger.sink, "retry"], ledger.held_by_retry)
            dead.add_metric([ledger.sink], ledger.dead_lettered)
        unaccounted.add_metric([ledger.sink], ledger.unaccounted)
    yield from (published, in_flight, dead, unaccounted)
