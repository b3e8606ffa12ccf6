"""Benchmarks (pytest-benchmark): throughput, CPU and memory against peers in one run."""
