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

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import msgspec

from logcap.dispatch.batch import PREFIX, Batch, BatchMeta, Group, write_batch

if TYPE_CHECKING:
    from logcap.config._schema import Config

Report = Callable[[tuple[str | int, ...], str], None]


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


def narrow(batch: Batch, inputs: frozenset[str] | None) -> Batch:
    """``batch`` as the sink with ``inputs`` sees it (None: every source): the batch
    itself when it keeps every group, else a :class:`RoutedBatch` (no copy)."""
    if inputs is None:
        return batch
    groups = batch.meta.groups
    if all(group.source in inputs for group in groups):
        return batch
    kept: list[Group] = []
    starts: list[int] = []
    for group, start, _ in batch.spans():
        if group.source in inputs:
            kept.append(group)
            starts.append(start)
    meta = msgspec.structs.replace(
        batch.meta, groups=kept, count=sum(group.count for group in kept)
    )
    return RoutedBatch(meta, batch.payload, starts)


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
    """Every name in a sink's ``inputs`` is a configured source (validation, pure)."""
    known = sorted(config.sources)
    for name, sink in config.sinks.items():
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
