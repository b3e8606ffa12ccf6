#!/usr/bin/env bash
# The whole test suite from a fresh clone: setup, tests, then the short benchmark variant
# (so the benchmarks cannot rot). The full benchmark: .venv/bin/python -m pytest bench
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# everything below runs in the environment setup.sh made (LOGCAP_VENV, default .venv)
export PATH="${LOGCAP_VENV:-$PWD/.venv}/bin:$PATH"
bash scripts/check.sh  # ruff and mypy --strict: the code gates
# the chaos test's sink outage is 3 minutes on demand (LOGCAP_CHAOS_OUTAGE_SECONDS=180);
# CI runs it with a shorter outage to stay within its time budget
LOGCAP_CHAOS_OUTAGE_SECONDS="${LOGCAP_CHAOS_OUTAGE_SECONDS:-90}" python3 -m pytest tests -p no:cacheprovider
LOGCAP_BENCH_LINES="${LOGCAP_BENCH_LINES:-100000}" LOGCAP_BENCH_REPORT=/tmp/logcap-bench.json \
  python3 -m pytest bench -p no:cacheprovider --benchmark-disable-gc -q
