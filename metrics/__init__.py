"""Metrics: counters shared by every process and their Prometheus export."""

from logcap.metrics._counters import Counter, CounterBlock, CounterTable, NullBlock

__all__ = ["Counter", "CounterBlock", "CounterTable", "NullBlock"]
