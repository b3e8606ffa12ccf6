"""Metrics: counters shared by every process and their Prometheus export."""

from logcap.metrics._counters import NOTHING, Counter, CounterBlock, CounterTable, NullBlock

__all__ = ["NOTHING", "Counter", "CounterBlock", "CounterTable", "NullBlock"]
