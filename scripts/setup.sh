#!/usr/bin/env bash
# Set up a fresh Debian machine for logcap, non-interactively. Run as root for system
# packages; without root only the Python part is done.
#   bash scripts/setup.sh          the agent and its Python dependencies, in .venv
#   bash scripts/setup.sh --test   also test/benchmark tools and the peers (rsyslog, syslog-ng)
# Python packages go into a virtual environment, never into the system's Python: Debian's
# /usr/bin/python3 refuses system-wide pip installs (PEP 668, "externally managed").
#   PYTHON       the interpreter to build the environment with (default python3; >= 3.11)
#   LOGCAP_VENV  where the environment goes (default .venv in the checkout)
# For a service install (/opt/logcap, a systemd unit, /var/lib/logcap): scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1
python="${PYTHON:-python3}"
venv="${LOGCAP_VENV:-$PWD/.venv}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: logcap needs Python >= 3.11; '$python' is $("$python" --version 2>&1 || echo missing)" >&2
  echo "setup: set PYTHON to another interpreter" >&2
  exit 1
fi

system_packages=()
# Debian's python3 makes virtual environments only with python3-venv (it brings ensurepip)
"$python" -c 'import ensurepip, venv' 2>/dev/null || system_packages+=(python3-venv)
if [ "$with_tests" = 1 ]; then
  # docker.io: the docker source's tests start their own dockerd; busybox-static: the
  # static busybox their test image is made of (no registry is needed); systemd: the
  # unit is checked with systemd-analyze (no systemd runs); prometheus (with promtool):
  # the dashboards' and alerts' proof against a running agent; tmux: `logcap top` is
  # tested in a real terminal
  system_packages+=(procps util-linux docker.io busybox-static systemd prometheus tmux)
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in "${system_packages[@]+"${system_packages[@]}"}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
extras=""
[ "$with_tests" = 1 ] && extras="[test]"
"$venv/bin/python" -m pip install -q -c scripts/constraints.txt -e ".$extras"
echo "setup: logcap is $venv/bin/logcap"

if [ "$with_tests" = 1 ] && [ "$(id -u)" = 0 ]; then
  bash scripts/install_peers.sh
fi
if [ "$with_tests" = 1 ]; then
  # a real Kafka-compatible broker for the kafka sink
  PYTHON="$venv/bin/python" bash scripts/install_tansu.sh
fi
