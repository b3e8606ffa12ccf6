#!/usr/bin/env bash
# Code gates: ruff (lint + format) and mypy --strict over the installed `logcap` layout.
# mypy cannot follow pyproject's package-dir mapping (capture/ -> logcap.capture, ...), so
# it checks a symlinked view of the package as it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LOGCAP_VENV:-$PWD/.venv}"
[ -x "$venv/bin/python" ] && export PATH="$venv/bin:$PATH"  # the tools setup.sh installed
ruff check logcap capture dispatch sinks ringbuf retry dlq metrics configs tests bench
ruff format --check logcap capture dispatch sinks ringbuf retry dlq metrics configs tests bench
view="$(mktemp -d)"
trap 'rm -rf "$view"' EXIT
mkdir "$view/logcap"
for f in logcap/*; do ln -s "$PWD/$f" "$view/logcap/"; done
for d in capture dispatch sinks ringbuf retry dlq metrics configs; do ln -s "$PWD/$d" "$view/logcap/$d"; done
(cd "$view" && python3 -m mypy --strict --no-incremental --cache-dir=/dev/null \
   --config-file "$OLDPWD/pyproject.toml" -p logcap)
# Every test and benchmark module must import: a benchmark runs only at the end of CI, so a
# broken import there would otherwise surface after twenty minutes of tests.
python3 -m pytest --collect-only -q -p no:cacheprovider tests bench >/dev/null
