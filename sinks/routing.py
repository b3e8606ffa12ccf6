"""Routing: a sink's ``inputs`` (the sources whose entries it receives).

The dispatcher encodes every batch once for every sink. A sink with ``inputs`` reads the
same batch in place through :func:`narrow`: a view that keeps only the groups of its
sources (groups are contiguous byte ranges of the payload, see dispatch/batch.py), so
nothing is decoded, re-encoded or copied to skip the others. The sink runner narrows
every batch it reads — first deliveries, batches shed while the circuit is open and
redeliveries from the retry process — and ``logcap dlq replay`` narrows every record, so
all delivery paths honour ``inputs`` alike. A batch with nothing for the sink is
acknowledged at once: nothing is sent, counted or retried, and its cursor moves on.

A failed narrowed batch is handed to the retry process as its own entries only
(:func:`slot_bytes`, the batch-slot layout with the narrowed meta), so the spool and the
DLQ hold, show and count what the sink was to deliver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import msgspec

from logcap.dispatch.batch import PREFIX, Batch, BatchMeta, Group, write_batch

if TYPE_CHECKING:
    from logcap.config._schema import Config

Report = Callable[[tuple[str | int, ...], str], None]
MAX_ROUTED_SINKS = 63  # a group's skip mask is one int64 (dispatch/batch.py Group.skip)


class RoutedBatch(Batch):
    """A batch narrowed to some of its groups: ``meta`` lists only those (``count`` is
    theirs), ``payload`` is still the whole batch's payload, and each kept group knows its
    start in it. Read it with ``groups()``, ``spans()`` or ``chunks()``."""

    __slots__ = ("starts",)

    def __init__(self, meta: BatchMeta, payload: memoryview, starts: list[int]) -> None:
        super().__init__(meta, payload)
        self.starts = starts

    def spans(self) -> Iterator[tuple[Group, int, int]]:
        for group, start in zip(self.meta.groups, self.starts, strict=True):
            yield group, start, start + group.nbytes

    def chunks(self) -> list[memoryview]:
        runs: list[list[int]] = []
        for _, start, end in self.spans():
            if runs and runs[-1][1] == start:
                runs[-1][1] = end  # adjacent kept groups are one chunk
            else:
                runs.append([start, end])
        return [self.payload[start:end] for start, end in runs]

    @property
    def nbytes(self) -> int:
        return sum(group.nbytes for group in self.meta.groups)


def narrow(batch: Batch, inputs: frozenset[str] | None, skip_bit: int = 0) -> Batch:
    """``batch`` as the sink with ``inputs`` sees it (None: every source), without the
    groups whose ``skip`` mask has ``skip_bit`` (its ``when``, decided by the dispatcher:
    dispatch/route.py; 0: no ``when``): the batch itself when it keeps every group, else
    a :class:`RoutedBatch` (no copy)."""
    if inputs is None and not skip_bit:
        return batch
    groups = batch.meta.groups

    def keep(group: Group) -> bool:
        return receives(group, inputs, skip_bit)

    if all(keep(group) for group in groups):
        return batch
    kept: list[Group] = []
    starts: list[int] = []
    for group, start, _ in batch.spans():
        if keep(group):
            kept.append(group)
            starts.append(start)
    meta = msgspec.structs.replace(
        batch.meta, groups=kept, count=sum(group.count for group in kept)
    )
    return RoutedBatch(meta, batch.payload, starts)


def receives(group: Group, inputs: frozenset[str] | None, skip_bit: int) -> bool:
    """Whether the sink with ``inputs`` and ``skip_bit`` (see :func:`narrow`) receives
    ``group``'s entries."""
    return (inputs is None or group.source in inputs) and not group.skip & skip_bit


def entries_for(groups: list[Group], inputs: frozenset[str] | None, skip_bit: int) -> int:
    """How many entries of a fresh batch with ``groups`` the sink receives."""
    if inputs is None and not skip_bit:
        return sum(group.count for group in groups)
    return sum(group.count for group in groups if receives(group, inputs, skip_bit))


def sink_routes(
    config: Config, sinks: list[str], slots: Mapping[str, int] | None = None
) -> list[tuple[frozenset[str] | None, int]]:
    """Each sink's (inputs, skip bit) in run-plan order, as its runner narrows by. A
    sink's bit is its slot in the batch ring (``slots``, logcap/plan.py; default its
    place in ``sinks``), which stays the sink's for the whole run, reloads included."""
    routes: list[tuple[frozenset[str] | None, int]] = []
    for index, name in enumerate(sinks):
        sink = config.sinks[name]
        slot = index if slots is None else slots[name]
        routes.append((inputs_of(sink.inputs), 0 if sink.when is None else 1 << slot))
    return routes


def nothing_for_sink(batch: Batch) -> bool:
    """Whether ``narrow`` left none of the batch's groups: acknowledged without a write.
    (A whole batch without entries is still written, as without ``inputs``.)"""
    return isinstance(batch, RoutedBatch) and not batch.meta.groups


def slot_bytes(batch: Batch) -> memoryview:
    """``batch`` in the batch-slot layout (dispatch/batch.py) holding only its own
    entries: how a failed narrowed batch is handed to the retry process (a copy; a whole
    batch is handed over as its slot instead)."""
    # sized from the meta's own encoding: labels can be far past meta_size_bound's guess
    size = PREFIX.size + len(msgspec.msgpack.encode(batch.meta)) + batch.nbytes
    out = memoryview(bytearray(size))
    used = write_batch(out, batch.meta, [list(batch.chunks())])
    return out[:used]


def inputs_of(names: Iterable[str] | None) -> frozenset[str] | None:
    """A sink config's ``inputs`` as the set the runner narrows with (None: every source)."""
    return None if names is None else frozenset(names)


def check_inputs(report: Report, config: Config) -> None:
    """Every name in a sink's ``inputs`` is a configured source, and its ``when`` is a
    valid condition (validation, pure)."""
    from logcap.capture.pipeline.config import check_when

    known = sorted(config.sources)
    for index, (name, sink) in enumerate(config.sinks.items()):
        if sink.when is not None and index >= MAX_ROUTED_SINKS:  # bits of an int64 mask
            report(("sinks", name, "when"), f"only the first {MAX_ROUTED_SINKS} sinks can have one")
        if sink.when is not None:
            for path, problem in check_when(sink.when, ("sinks", name, "when")):
                report(path, problem)
        if sink.inputs is None:
            continue
        if not sink.inputs:
            report(
                ("sinks", name, "inputs"),
                "an empty list routes nothing: list sources or leave inputs out (every source)",
            )
        for index, source in enumerate(sink.inputs):
            if source not in config.sources:
                report(
                    ("sinks", name, "inputs", index),
                    f"{source!r} is not a configured source (sources: {', '.join(known)})",
                )
