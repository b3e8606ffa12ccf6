#!/usr/bin/env bash
# Set up a fresh Debian machine for logcap, non-interactively. Run as root for system
# packages; without root only the Python part is done.
#   bash scripts/setup.sh          the agent and its Python dependencies
#   bash scripts/setup.sh --test   also test/benchmark tools and the peers (rsyslog, syslog-ng)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

system_packages=()
if [ "$with_tests" = 1 ]; then
  # docker.io: the docker source's tests start their own dockerd; busybox-static: the
  # static busybox their test image is made of (no registry is needed)
  system_packages+=(procps util-linux docker.io busybox-static)
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

python3 -m pip install -q -e ".[test]"
command -v pyenv >/dev/null && pyenv rehash || true

if [ "$with_tests" = 1 ] && [ "$(id -u)" = 0 ]; then
  bash scripts/install_peers.sh
fi
if [ "$with_tests" = 1 ]; then
  bash scripts/install_tansu.sh  # a real Kafka-compatible broker for the kafka sink
fi
