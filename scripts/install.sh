#!/usr/bin/env bash
# Install logcap as a service on a Debian host, as root, non-interactively:
#   /opt/logcap                 a virtual environment with logcap (Debian's python3 refuses
#                               system-wide pip installs: PEP 668)
#   /usr/local/bin/logcap       a link to /opt/logcap/bin/logcap
#   /etc/logcap/logcap.yaml     the config (configs/service.yaml; an existing one is kept)
#   /etc/logcap/logcap.env      secrets for ${VAR} in the config (EnvironmentFile=), 0640
#   /etc/systemd/system/logcap.service, a `logcap` system user, /var/lib/logcap (state)
# Then: systemctl enable --now logcap
#   --root DIR   stage everything under DIR (a package build, a test) instead of /: no user
#                is created and systemd is not told
#   PYTHON       the interpreter for the environment (default /usr/bin/python3; >= 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

root=""
if [ "${1:-}" = "--root" ]; then
  root="$(realpath -m "${2:?--root needs a directory}")"
fi
python="${PYTHON:-/usr/bin/python3}"
prefix="$root/opt/logcap"
etc="$root/etc/logcap"

if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
  echo "install: run as root (or stage with --root DIR)" >&2
  exit 1
fi
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
PYTHON="$python" LOGCAP_VENV="$prefix" bash scripts/setup.sh  # checks the version too
# a service runs a copy of this checkout, not the checkout itself (setup.sh's is editable),
# built from a copy so no build/ is left here (nor a stale one packaged from here)
copy="$(mktemp -d)"
trap 'rm -rf "$copy"' EXIT
tar --exclude=./.git --exclude=./.venv --exclude=./build -cf - . | tar -xf - -C "$copy"
"$prefix/bin/python" -m pip install -q -c scripts/constraints.txt --no-deps --force-reinstall "$copy"

install -d -m 0755 "$root/usr/local/bin" "$etc" "$root/etc/systemd/system"
ln -sfn /opt/logcap/bin/logcap "$root/usr/local/bin/logcap"
[ -e "$etc/logcap.yaml" ] || install -m 0644 configs/service.yaml "$etc/logcap.yaml"
if [ ! -e "$etc/logcap.env" ]; then
  install -m 0640 /dev/null "$etc/logcap.env"
  cat >"$etc/logcap.env" <<'ENV'
# Environment for logcap.service (EnvironmentFile=): secrets the config names as ${VAR},
# kept out of the config itself. One NAME=value a line; readable by root and group logcap.
#INGEST_TOKEN=change-me
ENV
fi
install -m 0644 configs/logcap.service "$root/etc/systemd/system/logcap.service"

if [ -z "$root" ]; then
  getent group logcap >/dev/null || groupadd --system logcap
  if ! getent passwd logcap >/dev/null; then
    useradd --system --gid logcap --home-dir /var/lib/logcap --no-create-home \
      --shell /usr/sbin/nologin --comment "logcap log capture agent" logcap
  fi
  chgrp logcap "$etc/logcap.env"
  install -d -m 0700 -o logcap -g logcap /var/lib/logcap
  install -d -m 0750 -o logcap -g logcap /var/log/logcap
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
fi
"$prefix/bin/logcap" validate --config "$etc/logcap.yaml"
echo "install: logcap installed in $prefix; start it with: systemctl enable --now logcap"
