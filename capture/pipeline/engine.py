"""The pipelines of one source, run on its entries in its collector process.

Steps run in order, pipeline after pipeline, on each entry. A step that fails leaves the
entry as it was and the entry goes on; a ``drop`` or ``dedup`` step, or a
``timestamp_limits`` with ``action: drop``, removes it. Every failure, drop and
out-of-range event time is counted in the source's counter block (exported per source)
and per (pipeline, step, outcome) in the counter table's step area (:func:`step_series`
fixes its words; exported as ``logcap_pipeline_errors_total{pipeline, step, reason}`` and
``logcap_pipeline_dropped_total``), and each (pipeline, step, outcome) is logged at most
once a minute with how often it happened meanwhile, so a stream of junk lines tells the
operator without flooding the log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable

from logcap.capture.pipeline.config import PipelineConfig
from logcap.capture.pipeline.entry import Entry
from logcap.capture.pipeline.steps import Dedup, Step, compile_step, step_label, step_type
from logcap.metrics import Counter, CounterBlock

log = logging.getLogger(__name__)
LOG_EVERY = 60.0
DROPPED = "dropped"  # the outcome of an entry a drop or dedup step removed
Series = tuple[str, str, str]  # (pipeline, step, outcome)


def step_series(pipelines: list[tuple[str, PipelineConfig]]) -> list[Series]:
    """Every (pipeline, step, outcome) a :class:`Processor` of ``pipelines`` counts, in a
    fixed order: the words of the source's part of the counter table's step area. An
    outcome is a failure reason of the step, ``dropped`` for drop and dedup steps, and
    the action ('clamp', 'keep', 'drop') for a pipeline's ``timestamp_limits``."""
    series: list[Series] = []
    for name, config in pipelines:
        for index, step in enumerate(config.steps):
            kind = step_type(step)
            outcomes = (*kind.reasons, DROPPED) if kind.drops else kind.reasons
            series += [(name, step_label(index, kind.kind), outcome) for outcome in outcomes]
        if config.timestamp_limits is not None:
            series.append((name, "timestamp_limits", config.timestamp_limits.action))
    return series


class _Compiled:
    def __init__(self, name: str, config: PipelineConfig) -> None:
        self.name = name
        self.steps: list[Step] = [compile_step(i, s) for i, s in enumerate(config.steps)]
        self.dedups = [s for s in self.steps if isinstance(s, Dedup)]
        limits = config.timestamp_limits
        self.limits = limits
        self.max_past_ns = int(limits.max_past * 1e9) if limits else 0
        self.max_future_ns = int(limits.max_future * 1e9) if limits else 0


class Processor:
    """Runs a source's pipelines (in the order the source names them) on its entries."""

    def __init__(
        self,
        source: str,
        pipelines: list[tuple[str, PipelineConfig]],
        counters: CounterBlock,
        clock: Callable[[], float] = time.monotonic,
        steps: CounterBlock | None = None,
    ) -> None:
        self.source = source
        self.pipelines = [_Compiled(name, config) for name, config in pipelines]
        self.counters = counters
        # the source's words of the step area, one per series (None: not counted there)
        self.steps = steps
        self._word = {series: i for i, series in enumerate(step_series(pipelines))}
        self.clock = clock
        self._unlogged: Tally[tuple[str, str, str]] = Tally()
        self._next_log = 0.0
        self._staged: tuple[int, int, int] | None = None
        self._tally: Tally[tuple[str, str, str]] | None = None

    def run_tuples(
        self,
        entries: list[tuple[dict[str, str], int, str]],
        read_ns: int,
        static: dict[str, str],
        commit: bool = True,
    ) -> list[Entry]:
        """:meth:`run` on ``(labels, event time, message)`` entries (HTTP, Docker), their
        labels first joined with the source's ``static`` labels (once per mapping)."""
        joined: dict[int, dict[str, str]] = {}
        prepared = []
        for labels, stamp, message in entries:
            full = joined.get(id(labels))
            if full is None:
                full = joined[id(labels)] = {**labels, **static}
            prepared.append(Entry(self.source, full, stamp, message))
        return self.run(prepared, read_ns, commit)

    def run(self, entries: list[Entry], read_ns: int, commit: bool = True) -> list[Entry]:
        """The entries that remain, changed by the steps (the list may be ``entries``).
        With ``commit=False`` the run is staged: :meth:`commit` counts it, or
        :meth:`rollback` forgets what its dedup steps remembered."""
        self._staged = self._tally = None
        staged: Tally[tuple[str, str, str]] = Tally()
        errors = dropped = out_of_range = 0
        for pipeline in self.pipelines:
            for dedup in pipeline.dedups:
                dedup.now = read_ns
                dedup.undo.clear()
            for step in pipeline.steps:  # step by step over the block: see steps.Step
                failures: Tally[str] = Tally()
                before = len(entries)
                entries = step.apply_all(entries, failures)
                if len(entries) < before:
                    dropped += before - len(entries)
                    staged[(pipeline.name, step.label, DROPPED)] += before - len(entries)
                for reason, count in failures.items():
                    errors += count
                    staged[(pipeline.name, step.label, reason)] += count
            limits = pipeline.limits
            if limits is not None:
                low, high = read_ns - pipeline.max_past_ns, read_ns + pipeline.max_future_ns
                kept: list[Entry] = []
                for entry in entries:
                    if low <= entry.timestamp_ns <= high:
                        kept.append(entry)
                        continue
                    out_of_range += 1
                    staged[(pipeline.name, "timestamp_limits", limits.action)] += 1
                    if limits.action == "drop":
                        dropped += 1
                        continue
                    if limits.action == "clamp":
                        entry.timestamp_ns = read_ns
                    kept.append(entry)
                entries = kept
        self._staged = (errors, dropped, out_of_range)
        self._tally = staged
        if commit:
            self.commit()
        return entries

    def commit(self) -> None:
        """Count the last run (its entries were published)."""
        if self._staged is None or self._tally is None:
            return
        errors, dropped, out_of_range = self._staged
        if errors:
            self.counters.add(Counter.PIPELINE_ERRORS, errors)
        if dropped:
            self.counters.add(Counter.PIPELINE_DROPPED, dropped)
        if out_of_range:
            self.counters.add(Counter.TIMESTAMPS_OUT_OF_RANGE, out_of_range)
        if self.steps is not None:
            for series, count in self._tally.items():
                self.steps.add(self._word[series], count)
        self._unlogged.update(self._tally)
        self._staged = self._tally = None
        for pipeline in self.pipelines:
            for dedup in pipeline.dedups:
                dedup.undo.clear()
        if self._unlogged and self.clock() >= self._next_log:
            self._log()

    def rollback(self) -> None:
        """Forget the last run (its entries were not published: they come again)."""
        self._staged = self._tally = None
        for pipeline in self.pipelines:
            for dedup in pipeline.dedups:
                dedup.rollback()

    def _log(self) -> None:
        for (pipeline, step, reason), count in sorted(self._unlogged.items()):
            level = logging.INFO if reason in (DROPPED, "keep", "clamp") else logging.WARNING
            log.log(
                level,
                "source %s: pipeline %s step %s: %s, %d entr%s",
                self.source,
                pipeline,
                step,
                reason,
                count,
                "y" if count == 1 else "ies",
            )
        self._unlogged.clear()
        self._next_log = self.clock() + LOG_EVERY
